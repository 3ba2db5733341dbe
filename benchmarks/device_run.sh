#!/usr/bin/env bash
# On a lent GPU machine, as the device tool's command (carry .whl and data/mnist-idx: benchmarks/device_prepare.sh):
#   bash benchmarks/device_run.sh "tests mlp presets scaling"; then "graphs"; then "quality" (the GPU preset)
# Installs the carried wheels beside the image's own torch, checks that distgan imports there, runs
# benchmarks/gpu_bench.sh with those PARTS, and leaves in $OUT what the tool brings back (8 files at most):
# the table, the log and every JSON as one archive. docs/benchmarks.md, "GPU", says what each part measures.
set -uo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:-tests mlp presets scaling}
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t distgan-device.XXXXXX)}
SITE=${SITE:-$(mktemp -d -t distgan-site.XXXXXX)}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "[device] installing the carried wheels failed: run benchmarks/device_prepare.sh, carry .whl"; exit 3; }
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import wandb" 2>"$OUT/wandb-import.txt"; then  # distgan then logs to metrics.jsonl alone
  echo "[device] wandb does not import here ($(tail -1 "$OUT/wandb-import.txt")); runs log without it"
  rm -rf "$SITE"/wandb "$SITE"/wandb-*
else
  rm -f "$OUT/wandb-import.txt"
fi
"$PY" -c "import distgan.train, torch; print('[device] torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" || exit 3
BENCH=$(mktemp -d -t distgan-bench.XXXXXX)
MNIST_IDX=${MNIST_IDX:-$PWD/data/mnist-idx} PYTHON="$PY" OUT="$BENCH" PARTS="$PARTS" bash benchmarks/gpu_bench.sh
status=$?
cp "$BENCH/summary.txt" "$BENCH/bench.log" "$BENCH/quality-grid.png" "$OUT/" 2>/dev/null
tar -czf "$OUT/bench.tgz" -C "$BENCH" .
echo "[device] parts '$PARTS' done (status $status); summary.txt, bench.log and bench.tgz in $OUT"
exit $status
