#!/bin/bash
# The batch-shell side of a distgan Slurm job (exec'd by the .sbatch files, so it keeps the batch shell's PID
# and receives `--signal=B:USR1@T`). It starts one srun task per node in the background and waits, so a trap
# can run while training goes on (bash runs traps only between foreground commands). On USR1/TERM it sends
# USR1 to every process of the training step (`scancel --signal=USR1 JOB.STEP`): the ranks set their stop flag,
# agree on a step, checkpoint and exit with status 75, while `accelerate launch` and the DataLoader workers
# ignore USR1.
#   USR1 (the warning the .sbatch files ask for with --signal=B:USR1@T, before the time limit): this script then
#     requeues the job, and the requeued job resumes from that checkpoint (ckpt.resume=auto, same run directory).
#   TERM (`scancel JOB`, or preemption): checkpoint and end, never requeue here. A cancelled job stays cancelled;
#     a preempted one is requeued by Slurm itself (PreemptMode=REQUEUE) and resumes the same way.
#
# Knobs (environment variables):
#   DISTGAN_CONFIG        config preset (default configs/mnist_mlp.yaml)
#   DISTGAN_ACCEL_CONFIG  accelerate config file (set by the .sbatch file)
#   DISTGAN_NPROC         processes per node (default: GPUs Slurm gave the node, else 1)
#   DISTGAN_PYTHON        python with distgan installed (default .venv/bin/python)
#   DISTGAN_RUN_NAME      run directory name (default JOBNAME-JOBID: stable across requeues)
#   DISTGAN_PORT          rendezvous port (default 20000 + JOBID % 20000)
#   WANDB_MODE            default offline: compute nodes often have no internet; `wandb sync` later
# Arguments are config overrides passed to train.py.
set -uo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
mkdir -p logs
export DISTGAN_CONFIG=${DISTGAN_CONFIG:-configs/mnist_mlp.yaml}
export DISTGAN_PYTHON=${DISTGAN_PYTHON:-.venv/bin/python}
export DISTGAN_RUN_NAME=${DISTGAN_RUN_NAME:-${SLURM_JOB_NAME:-distgan}-${SLURM_JOB_ID:-0}}
export DISTGAN_PORT=${DISTGAN_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
export DISTGAN_MAIN_ADDR=${DISTGAN_MAIN_ADDR:-$(scontrol show hostnames "${SLURM_JOB_NODELIST:-localhost}" 2>/dev/null | head -n1)}
export WANDB_MODE=${WANDB_MODE:-offline}
export PYTHONUNBUFFERED=1
echo "[job] $(date -Is) job ${SLURM_JOB_ID:-?} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST:-?}; run ${DISTGAN_RUN_NAME}"

requeue=0
forward() {
  echo "[job] $(date -Is) got $1: asking every rank to checkpoint and stop"
  # Not `kill srun` (srun takes SIGTERM as "cancel the step" and kills the tasks before they can save), and
  # not SIGTERM to the step (it would also reach the DataLoader workers, which must die on SIGTERM).
  local steps
  steps=$(squeue -h -s -j "${SLURM_JOB_ID}" -o %i 2>/dev/null | grep -vE '\.(batch|extern)$' || true)
  for s in $steps; do scancel --signal=USR1 "$s"; done
}
trap 'requeue=1; forward USR1' USR1
trap 'forward TERM' TERM

srun --kill-on-bad-exit=0 --ntasks-per-node=1 bash launch/slurm/node_launch.sh "$@" &
step_pid=$!
status=0
while true; do
  wait "$step_pid"
  status=$?
  kill -0 "$step_pid" 2>/dev/null || break  # wait returned because a trap ran: the step is still saving
done
echo "[job] $(date -Is) training step exited with status $status"
if [ "$requeue" = 1 ]; then
  echo "[job] requeueing ${SLURM_JOB_ID}; the next start resumes from the newest checkpoint"
  scontrol requeue "${SLURM_JOB_ID}"
  exit 0
fi
if [ "$status" = 75 ]; then
  echo "[job] stopped after a checkpoint (not requeued: cancelled or preempted); resubmit, or scontrol requeue ${SLURM_JOB_ID}, to continue"
fi
exit "$status"
