#!/bin/bash
# One per node (an srun task): `accelerate launch` for this node. Everything node-specific is read here, on
# the node, so nothing is expanded by the batch shell (where $SLURM_NODEID would be 0 everywhere).
# DISTGAN_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
nnodes=${SLURM_NNODES:-1}
node_rank=${SLURM_NODEID:-0}
if [ -n "${DISTGAN_NPROC:-}" ]; then
  nproc=$DISTGAN_NPROC
elif [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
  nproc=$SLURM_GPUS_ON_NODE
else
  nproc=1
fi
cmd=("$DISTGAN_PYTHON" -m accelerate.commands.launch
  --config_file "$DISTGAN_ACCEL_CONFIG"
  --num_machines "$nnodes" --machine_rank "$node_rank" --num_processes $((nnodes * nproc))
  --main_process_ip "$DISTGAN_MAIN_ADDR" --main_process_port "$DISTGAN_PORT"
  distgan/train.py "$DISTGAN_CONFIG" "train.run_name=$DISTGAN_RUN_NAME" ckpt.resume=auto "$@")
if [ "${DISTGAN_DRY_RUN:-0}" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
echo "[node $node_rank] $(hostname): ${cmd[*]}"
# The stop request arrives as USR1 to every process of the step. accelerate launch must survive it (its
# default action is to die, orphaning the ranks): an ignored signal stays ignored across exec, and the ranks
# install their own USR1 handler.
trap '' USR1
exec "${cmd[@]}"
