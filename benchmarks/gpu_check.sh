#!/usr/bin/env bash
# GPU checks in one go (CI has no GPU): the CUDA-only tests, then short real runs of train.py in each precision
# and at two batch sizes on synthetic MNIST-sized shards. Logs go to $OUT (default: a new folder from mktemp -d;
# never a fixed shared /tmp path, where another user could plant a checkpoint).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t distgan-gpu.XXXXXX)}
WORK=$(mktemp -d -t distgan-gpu-work.XXXXXX)  # shards and runs of this check only
mkdir -p "$OUT"
echo "logs in $OUT, runs in $WORK"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi -L | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
$PY -m pytest -q -p no:cacheprovider tests/unit/test_gpu.py tests/unit/test_trainer.py 2>&1 | tee "$OUT/tests.log"
$PY - "$WORK/syn" <<'PYEOF'
from pathlib import Path
from tests.conftest import synthetic
from distgan.data.shard_writer import write_shards
import sys
write_shards(Path(sys.argv[1]), {"train": synthetic(60000)}, [str(i) for i in range(10)], "synthetic", 10000, 1000)
PYEOF
for batch in 100 1024; do
  for p in no bf16 fp16; do
    echo "== batch $batch precision $p" | tee -a "$OUT/runs.log"
    $PY distgan/train.py configs/mnist_mlp.yaml data.path=$WORK/syn train.epochs=3 train.batch_size=$batch \
      train.precision=$p train.out_dir=$WORK/runs train.run_name=b$batch-$p train.log_every=100000 data.workers=2 \
      2>&1 | grep -E "done:|error|Error" | tee -a "$OUT/runs.log"
  done
done
cp $WORK/runs/b100-fp16/samples/grid_final.png "$OUT/grid_b100_fp16.png" 2>/dev/null || true
# fp16 stop signal + resume on the GPU: the loss scaler's state travels through the checkpoint
echo "== fp16 SIGTERM + resume" | tee -a "$OUT/runs.log"
args=(configs/mnist_mlp.yaml data.path=$WORK/syn train.precision=fp16 train.max_steps=3000 train.log_every=500
      train.out_dir=$WORK/runs train.run_name=resume-fp16 track.plot=false)
$PY distgan/train.py "${args[@]}" > "$OUT/resume1.log" 2>&1 &
pid=$!
sleep 15
kill -TERM $pid
wait $pid
echo "first segment exit status $? (75 = stopped by signal after a checkpoint)" | tee -a "$OUT/runs.log"
$PY - "$WORK/runs/resume-fp16/checkpoints" <<'PYEOF' | tee -a "$OUT/runs.log"
import sys
from pathlib import Path
from distgan.run.checkpoint_read import complete_checkpoints, read_checkpoint  # checked, then read as data only
ck = complete_checkpoints(Path(sys.argv[1]))[-1]
s = read_checkpoint(ck)["objects"]["trainer"]
print("checkpoint", ck, "scaler state", {k: v for k, v in (s["scaler"] or {}).items() if k in ("scale", "_growth_tracker")})
PYEOF
$PY distgan/train.py "${args[@]}" 2>&1 | grep -E "resuming|done:" | tee -a "$OUT/runs.log"
