#!/usr/bin/env bash
# Fine-tuning against training from scratch (docs/evaluation.md "Fine-tuning"): the mnist_dcgan networks
# (configs/fewshot_dcgan_ada.yaml without augmentation) pretrained on MNIST digits 0-4 (all 30,596 training
# images, one run), then 1,000 training images of digits 5-9 (200 per class): fine-tuned from the pretrained
# weights with D's first block frozen (FreezeD), fine-tuned without freezing, and trained from scratch, the
# same STEPS x 64 images each, 3 seeds; fid_mnistcnn of the EMA generator against the 4,861 test images of
# digits 5-9, measured by the classifier of the full training set. One run at a time (2 cores).
#   STEPS=3000 PRE_STEPS=6000 bash benchmarks/finetune.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
OUT=${OUT:-runs/finetune}
STEPS=${STEPS:-3000}
PRE_STEPS=${PRE_STEPS:-6000}
SEEDS=${SEEDS:-3}
DG=(".venv/bin/distgan")
mkdir -p "$OUT"
[ -f "$OUT/data/full/manifest.json" ] || "${DG[@]}" data mnist --from "$MNIST" --out "$OUT/data/full"
"${DG[@]}" eval classifier --data "$OUT/data/full" --cache-dir "$OUT/cache" | tee "$OUT/classifier.txt"
CLF=$(ls -t "$OUT"/cache/classifier-*.safetensors | head -1)
[ -f "$OUT/data/d04/manifest.json" ] || "${DG[@]}" data mnist --from "$MNIST" --digits 0-4 --out "$OUT/data/d04"
[ -f "$OUT/data/d59-1k/manifest.json" ] || "${DG[@]}" data mnist --from "$MNIST" --digits 5-9 --subset 1000 \
  --out "$OUT/data/d59-1k"
common=(train.augment= eval.classifier="$CLF" eval.cache_dir="$OUT/cache" track.wandb=disabled train.epochs=100000
        train.print_every_epochs=100000 train.log_every=100)
[ -f "$OUT/pretrain/final/G.safetensors" ] || .venv/bin/python distgan/train.py configs/fewshot_dcgan_ada.yaml \
  "${common[@]}" data.path="$OUT/data/d04" train.max_steps="$PRE_STEPS" eval.every="$PRE_STEPS" \
  train.sample_every="$PRE_STEPS" train.out_dir="$OUT" train.run_name=pretrain
tune=(data.path="$OUT/data/d59-1k" train.max_steps="$STEPS" eval.every=$((STEPS / 2)) train.sample_every=$((STEPS / 2)))
for arm in scratch finetune finetune-freezed; do
  case $arm in
    scratch) a=() ;;
    finetune) a=(train.init_from="$OUT/pretrain/final") ;;
    finetune-freezed) a=(train.init_from="$OUT/pretrain/final" model.d_freeze=1) ;;
  esac
  "${DG[@]}" sweep configs/fewshot_dcgan_ada.yaml "${common[@]}" "${tune[@]}" "${a[@]}" --seeds "$SEEDS" --local 1 \
    --name "$arm" --out "$OUT"
done
"${DG[@]}" compare "$OUT/scratch" "$OUT/finetune" "$OUT/finetune-freezed" --metric fid_mnistcnn --metric recall \
  --format markdown | tee "$OUT/compare.md"
