#!/usr/bin/env bash
# Two more Slurm hosts on this machine, each a slurmd in its own network namespace (n1 = 10.77.0.11,
# n2 = 10.77.0.12; entered with nsenter --net so the mounts, cgroups included, stay the host's) on a bridge to the controller (10.77.0.1), in partition "multi". Run after
# start_local_slurm.sh (root). Idempotent. Jobs there see an interface named dg0 (for GLOO_SOCKET_IFNAME).
set -euo pipefail
conf=/etc/slurm/slurm.conf
ip link show br-dg >/dev/null 2>&1 || { ip link add br-dg type bridge; ip addr add 10.77.0.1/24 dev br-dg; ip link set br-dg up; }
for i in 1 2; do
  ns=n$i
  if ! ip netns list | grep -qw "$ns"; then
    ip netns add "$ns"
    ip link add "v-$ns" type veth peer name dg0 netns "$ns"
    ip link set "v-$ns" master br-dg up
    ip netns exec "$ns" ip addr add "10.77.0.1$i/24" dev dg0
    ip netns exec "$ns" ip link set dg0 up
    ip netns exec "$ns" ip link set lo up
  fi
  grep -q "10.77.0.1$i $ns" /etc/hosts || echo "10.77.0.1$i $ns" >> /etc/hosts
done
grep -q "10.77.0.1 dgctl" /etc/hosts || echo "10.77.0.1 dgctl" >> /etc/hosts
host=$(hostname -s)
cpus=$(nproc)
if ! grep -q "^NodeName=n1" "$conf"; then
  sed -i "s/^SlurmctldHost=.*/SlurmctldHost=$host(10.77.0.1)/" "$conf"
  sed -i "s#^SlurmdSpoolDir=.*#SlurmdSpoolDir=/var/spool/slurmd/%n#" "$conf"
  echo "SlurmdPidFile=/run/slurmd-%n.pid" >> "$conf"
  echo "NodeName=n1 NodeAddr=10.77.0.11 CPUs=$cpus RealMemory=2000 State=UNKNOWN" >> "$conf"
  echo "NodeName=n2 NodeAddr=10.77.0.12 CPUs=$cpus RealMemory=2000 State=UNKNOWN" >> "$conf"
  echo "PartitionName=multi Nodes=n1,n2 Default=NO MaxTime=INFINITE State=UP OverSubscribe=YES" >> "$conf"
fi
mkdir -p /var/spool/slurmd/$host /var/spool/slurmd/n1 /var/spool/slurmd/n2
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
sleep 1
slurmctld -i
slurmd
nsenter --net=/var/run/netns/n1 slurmd -N n1
nsenter --net=/var/run/netns/n2 slurmd -N n2
for _ in $(seq 60); do
  if [ "$(sinfo -h -p multi -o '%t' | grep -cE 'idle|mix|alloc')" -ge 1 ] && sinfo -h -p multi -N -o '%t' | grep -vqE 'down|unk|drain' ; then sinfo -N; exit 0; fi
  scontrol update nodename=n1,n2 state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "netns nodes did not come up" >&2; sinfo -N >&2; tail -5 /var/log/slurm/slurmctld.log >&2; exit 1
