#!/usr/bin/env bash
# The GPU issue's measurements in one script, sized for a short device lease (about 8 minutes on one GPU):
#   1. the CUDA-only tests (no host sync between log steps, fp16 overflow, channels_last, precisions)
#   2. the tutorial's MLP, distgan against a bare loop (benchmarks/throughput.py): fp32 and bf16 at batch 100
#      and 8192, and torch.compile at batch 100
#   3. the conv presets against bare loops of the same networks (benchmarks/presets.py) with bf16,
#      channels_last and fused Adam: img/s, ratio, TFLOP/s and MFU
#   4. scaling on paper (benchmarks/scaling.py), with step times taken from 3
# then one table (benchmarks/summary.py) and $OUT/summary.json. Every part has its own time cap, so a slow
# part cannot eat the lease. BUDGET=tiny runs the same parts for seconds each on a CPU: CI does, so the script
# cannot rot (tests/integration/test_benchmarks.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t distgan-gpu-bench.XXXXXX)}
BUDGET=${BUDGET:-gpu}
PY=${PYTHON:-python3}
DATA=${DATA:-$(mktemp -d -t distgan-bench-syn.XXXXXX)/shards}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
start=$(date +%s)
part() { echo "== $1 ($(($(date +%s) - start)) s)" | tee -a "$OUT/bench.log"; }

if [ "$BUDGET" = tiny ]; then
  N=6000 BATCHES="100" STEPS=30 SECONDS_=1 PRESETS="mnist_dcgan" CONV_SET="" CAP=240
  SCALE_PRESETS="mnist_mlp mnist_dcgan"
else
  N=60000 BATCHES="100 8192" STEPS=300 SECONDS_=5 PRESETS="mnist_dcgan_gpu rgb64_dcgan rgb64_resnet rgb64_stylegan2" CAP=240
  CONV_SET="train.precision=bf16 train.channels_last=true optim.fused=true"
  SCALE_PRESETS=""
fi

part "device"
{ nvidia-smi -L 2>/dev/null || echo "no GPU"; $PY -c "import torch; print('torch', torch.__version__)"; } \
  | tee "$OUT/device.txt"
if [ "$BUDGET" != tiny ]; then
  part "CUDA tests"
  timeout 180 $PY -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py 2>&1 | tail -5 | tee "$OUT/tests.log"
fi

part "synthetic MNIST-sized shards ($N images)"
$PY - "$DATA" "$N" <<'PYEOF'
import sys
from pathlib import Path
from tests.conftest import synthetic
from distgan.data.source import write_shards
write_shards(Path(sys.argv[1]), {"train": synthetic(int(sys.argv[2]))}, [str(i) for i in range(10)], "synthetic",
             10000, 1000)
PYEOF

for cell in "no:" "bf16:" "no:--compile"; do
  prec=${cell%%:*} comp=${cell#*:}
  batches=$BATCHES
  [ -n "$comp" ] && batches=${BATCHES%% *}  # compile: the launch-bound batch only (compiling takes a while)
  [ "$BUDGET" = tiny ] && [ -n "$comp" ] && continue  # no compiler run on a CPU in CI: minutes of inductor
  tag="mlp-$prec${comp:+-compile}"
  part "throughput $tag, batches $batches"
  timeout "$CAP" $PY benchmarks/throughput.py --data "$DATA" --batches $batches --procs 1 --repeats 1 \
    --steps "$STEPS" --precision "$prec" $comp --json "$OUT/throughput-$tag.json" 2>&1 | tail -8 | tee -a "$OUT/bench.log"
done

part "presets $PRESETS ${CONV_SET:+with $CONV_SET}"
timeout $((2 * CAP)) $PY benchmarks/presets.py --presets $PRESETS --data "$DATA" --seconds "$SECONDS_" --repeats 1 \
  ${CONV_SET:+--set $CONV_SET} --json "$OUT/presets.json" 2>&1 | tail -12 | tee -a "$OUT/bench.log"

part "scaling on paper"
measured=""
[ -f "$OUT/presets.json" ] && measured="--measured $OUT/presets.json"
timeout "$CAP" $PY benchmarks/scaling.py ${SCALE_PRESETS:+--presets $SCALE_PRESETS} $measured \
  --json "$OUT/scaling.json" 2>&1 | tail -14 | tee -a "$OUT/bench.log"

part "summary"
$PY benchmarks/summary.py "$OUT" | tee "$OUT/summary.txt"
part "done"
