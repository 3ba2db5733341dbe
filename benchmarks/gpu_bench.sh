#!/usr/bin/env bash
# The performance issue's GPU matrix in one go, for a lent GPU (CI has none): distgan against the bare loop
# (benchmarks/throughput.py) in fp32/bf16/fp16 at batch 100, 1024 and 8192, without and with torch.compile,
# on synthetic MNIST-sized shards (throughput does not depend on the pixels). One process; 2 repeats each.
# JSON per cell and a log in $OUT (default /tmp/distgan-gpu-bench). Each (precision, compile) cell is capped at
# 5 minutes; to fit a short device lease run one cell: PRECISIONS=bf16 MODES=compile benchmarks/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/distgan-gpu-bench}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi -L | tee "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py 2>&1 | tail -3 | tee "$OUT/tests.log"
$PY - <<'PYEOF'
from pathlib import Path
from tests.conftest import synthetic
from distgan.data.source import write_shards
write_shards(Path("/tmp/syn"), {"train": synthetic(60000)}, [str(i) for i in range(10)], "synthetic", 10000, 1000)
PYEOF
for mode in ${MODES:-eager compile}; do
  compile=""
  [ "$mode" = compile ] && compile=--compile
  for p in ${PRECISIONS:-no bf16 fp16}; do
    tag="$p-$mode"
    echo "== precision $p $mode" | tee -a "$OUT/bench.log"
    timeout 300 $PY benchmarks/throughput.py --data /tmp/syn --batches 100 1024 8192 --procs 1 --repeats 2 \
      --steps 300 --precision "$p" $compile --json "$OUT/throughput-$tag.json" 2>&1 | tail -12 | tee -a "$OUT/bench.log"
  done
done
