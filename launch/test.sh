#!/usr/bin/env bash
# Sets up the environment and runs the tests.
#   bash launch/test.sh          the fast tier: tests/unit, in-process (no launches), every module, a few minutes
#   bash launch/test.sh --all    everything: the fast tier, then real multi-process launches, wandb files and
#                                Slurm (tests/integration, tests/slurm): two pytest runs, each timed (CI runs this)
# Other arguments go to pytest (`-k NAME`, `-m numeric`, a test path instead of the tiers' folders).
# Tests run on DISTGAN_TEST_WORKERS pytest-xdist workers (default: one per core, at most 4; 0: in this process);
# each worker's in-process tests take one thread, so N workers keep N cores busy while others wait on launches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
py="${DISTGAN_VENV:-.venv}/bin/python"
cores=$(nproc 2>/dev/null || echo 1)
workers=${DISTGAN_TEST_WORKERS:-$((cores < 4 ? cores : 4))}
xdist=()
if [ "$workers" -gt 1 ]; then
  xdist=(-n "$workers" --dist loadgroup)  # a group (the Slurm tests, sharing one node) stays on one worker
fi
tiers=(tests/unit)
if [ "${1:-}" = "--all" ]; then
  shift
  tiers=(tests/unit "tests/integration tests/slurm")
fi
for arg in "$@"; do
  case "$arg" in tests/*) tiers=("") ;; esac  # a path given: run just that
done
for tier in "${tiers[@]}"; do
  start=$(date +%s)
  # shellcheck disable=SC2086 # a tier is a list of folders
  rc=0
  "$py" -m pytest -q "${xdist[@]}" $tier "$@" || rc=$?
  echo "[test] ${tier:-$*}: $(($(date +%s) - start)) s"
  # 5: nothing selected in this tier (`--all -m numeric` has no numeric test in some tier)
  if [ "$rc" -ne 0 ] && { [ "$rc" -ne 5 ] || [ "${#tiers[@]}" -eq 1 ]; }; then exit "$rc"; fi
done
