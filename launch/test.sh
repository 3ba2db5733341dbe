#!/usr/bin/env bash
# Sets up the environment and runs the tests.
#   bash launch/test.sh          the fast tier: tests/unit, in-process (no launches), every module, a few minutes
#   bash launch/test.sh --all    everything: unit, real multi-process launches, wandb files, Slurm (CI runs both)
# Other arguments go to pytest (`-k NAME`, `-m numeric`, a test path instead of the tier's folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
paths=(tests/unit)
if [ "${1:-}" = "--all" ]; then
  shift
  paths=(tests)
fi
for arg in "$@"; do
  case "$arg" in tests/*) paths=() ;; esac  # a path given: run that
done
"${DISTGAN_VENV:-.venv}/bin/python" -m pytest -q "${paths[@]}" "$@"
