#!/usr/bin/env bash
# The GPU issue's measurements in one script, sized for a short device lease; PARTS picks some of them:
#   tests    the CUDA-only tests (no host sync between log steps, fp16 overflow, channels_last, precisions,
#            CUDA graphs replayed by train.compile_mode=reduce-overhead)
#   mlp      the tutorial's MLP, distgan against a bare loop (benchmarks/throughput.py): fp32 and bf16 at
#            batch 100 and 8192
#   presets  the conv presets against bare loops of the same networks (benchmarks/presets.py) with bf16,
#            channels_last and fused Adam: img/s, ratio, TFLOP/s and MFU
#   scaling  scaling on paper (benchmarks/scaling.py), with step times taken from presets
#   graphs   the launch-bound steps captured: the MLP at batch 100 and mnist_dcgan (fp32), eager against
#            train.compile_mode=reduce-overhead, the "vs eager" column of the table
#   quality  configs/mnist_dcgan_gpu.yaml on real MNIST (MNIST_IDX: a folder with its four IDX files) with its
#            evaluations (fid_mnistcnn), capped at QUALITY_S seconds: wall time, metrics and the last grid.
#            Not in the default PARTS (it needs MNIST); one seed per call
# then one table (benchmarks/summary.py) and $OUT/summary.json. Every part has its own time cap, so a slow
# part cannot eat the lease. All parts take about 12 minutes on one GPU, more than one call of the device
# tool allows (10): run PARTS="tests mlp presets scaling" (~8 min) and PARTS=graphs (~5 min) as two calls.
# BUDGET=tiny runs the parts for seconds each on a CPU (graphs without compiling): CI does, so the script
# cannot rot (tests/integration/test_benchmarks.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t distgan-gpu-bench.XXXXXX)}
BUDGET=${BUDGET:-gpu}
PARTS=" ${PARTS:-tests mlp presets scaling graphs} "
PY=${PYTHON:-python3}
DATA=${DATA:-$(mktemp -d -t distgan-bench-syn.XXXXXX)/shards}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
start=$(date +%s)
part() { echo "== $1 ($(($(date +%s) - start)) s)" | tee -a "$OUT/bench.log"; }
want() { [[ "$PARTS" == *" $1 "* ]]; }

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
if [ "$BUDGET" != tiny ] && want tests; then
  part "CUDA tests"
  timeout 240 $PY -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py 2>&1 | tail -5 | tee "$OUT/tests.log"
fi

part "synthetic MNIST-sized shards ($N images)"
$PY - "$DATA" "$N" <<'PYEOF'
import sys
from pathlib import Path
from tests.conftest import synthetic
from distgan.data.shard_writer import write_shards
write_shards(Path(sys.argv[1]), {"train": synthetic(int(sys.argv[2]))}, [str(i) for i in range(10)], "synthetic",
             10000, 1000)
PYEOF

mlp() {  # tag, batches, throughput.py options
  part "throughput $1, batches $2"
  timeout "$CAP" $PY benchmarks/throughput.py --data "$DATA" --batches $2 --procs 1 --repeats 1 --steps "$STEPS" \
    "${@:3}" --json "$OUT/throughput-$1.json" 2>&1 | tail -8 | tee -a "$OUT/bench.log"
}
presets() {  # tag, presets, overrides
  part "presets $2 ${3:+with $3}"
  timeout $((2 * CAP)) $PY benchmarks/presets.py --presets $2 --data "$DATA" --seconds "$SECONDS_" --repeats 1 \
    ${3:+--set $3} --json "$OUT/presets$1.json" 2>&1 | tail -12 | tee -a "$OUT/bench.log"
}
GRAPHS="train.compile=true train.compile_mode=reduce-overhead"

if want mlp; then
  mlp mlp-no "$BATCHES" --precision no
  mlp mlp-bf16 "$BATCHES" --precision bf16
fi
want presets && presets "" "$PRESETS" "$CONV_SET"
if want scaling; then
  part "scaling on paper"
  measured=""
  [ -f "$OUT/presets.json" ] && measured="--measured $OUT/presets.json"
  timeout "$CAP" $PY benchmarks/scaling.py ${SCALE_PRESETS:+--presets $SCALE_PRESETS} $measured \
    --json "$OUT/scaling.json" 2>&1 | tail -14 | tee -a "$OUT/bench.log"
fi
# tiny (CI on a CPU): no compiler run (minutes of inductor), and the eager half would repeat the presets part
if want graphs && [ "$BUDGET" != tiny ]; then  # eager and captured side by side in this call, on the same GPU
  want mlp || mlp mlp-no 100 --precision no
  presets -dcgan-eager mnist_dcgan ""
  mlp mlp-no-graphs 100 --precision no --compile --compile-mode reduce-overhead
  presets -dcgan-graphs mnist_dcgan "$GRAPHS"
fi

if want quality; then
  QUALITY_S=${QUALITY_S:-480}
  q=$(mktemp -d -t distgan-quality.XXXXXX)
  extra=()
  [ "$BUDGET" = tiny ] && extra=(train.max_steps=40 eval.every=40 eval.n_samples=1000 eval.classifier_epochs=1
                                 train.batch_size=64 train.precision=no train.channels_last=false)
  part "quality: mnist_dcgan_gpu on MNIST from ${MNIST_IDX:-?}, at most $QUALITY_S s"
  if [ -z "${MNIST_IDX:-}" ] || ! $PY -m distgan.cli data mnist --from "$MNIST_IDX" --out "$q/mnist" >"$OUT/quality-data.log" 2>&1; then
    echo "quality: no MNIST (set MNIST_IDX to the folder of its four IDX files; see $OUT/quality-data.log)" | tee -a "$OUT/bench.log"
  else
    t0=$(date +%s)
    timeout "$QUALITY_S" $PY distgan/train.py configs/mnist_dcgan_gpu.yaml data.path="$q/mnist" train.out_dir="$q" \
      train.run_name=run track.plot=false eval.cache_dir="$q/cache" "${extra[@]}" > "$OUT/quality.log" 2>&1
    echo "quality: exit $?, $(($(date +%s) - t0)) s wall (data conversion excluded); last evaluations:" | tee -a "$OUT/bench.log"
    grep -E "fid_mnistcnn|done:" "$OUT/quality.log" | tail -4 | tee -a "$OUT/bench.log"
    cp "$q/run/metrics.jsonl" "$OUT/quality-metrics.jsonl" 2>/dev/null
    cp "$(ls -t "$q"/run/samples/grid_*.png 2>/dev/null | head -1)" "$OUT/quality-grid.png" 2>/dev/null
  fi
  rm -rf "$q"  # shards, checkpoints and caches of this check only
fi

part "summary"
$PY benchmarks/summary.py "$OUT" | tee "$OUT/summary.txt"
part "done"
