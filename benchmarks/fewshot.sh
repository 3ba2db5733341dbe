#!/usr/bin/env bash
# The small-data comparison of docs/evaluation.md: MNIST training subsets (100 or 500 per class), the mnist_dcgan
# networks (configs/fewshot_dcgan_ada.yaml), no augmentation vs DiffAugment vs ADA, 3 seeds each, the same
# image budget (STEPS x 64), fid_mnistcnn of the EMA generator against the full test set, measured by the
# classifier of the full training set. Runs one at a time (2 cores); then `distgan compare` per subset.
#   SIZES="1000 5000" STEPS=3000 bash benchmarks/fewshot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST=${MNIST:-../shared/data/mnist}
OUT=${OUT:-runs/fewshot}
SIZES=${SIZES:-1000 5000}
STEPS=${STEPS:-3000}
SEEDS=${SEEDS:-3}
PY=${PY:-.venv/bin/python}
DG=(".venv/bin/distgan")
mkdir -p "$OUT"
[ -f "$OUT/data/full/manifest.json" ] || "${DG[@]}" data mnist --from "$MNIST" --out "$OUT/data/full"
"${DG[@]}" eval classifier --data "$OUT/data/full" --cache-dir "$OUT/cache" | tee "$OUT/classifier.txt"
CLF=$(ls -t "$OUT"/cache/classifier-*.safetensors | head -1)
for n in $SIZES; do
  [ -f "$OUT/data/$n/manifest.json" ] || "${DG[@]}" data mnist --from "$MNIST" --subset "$n" --out "$OUT/data/$n"
  common=(data.path="$OUT/data/$n" train.max_steps="$STEPS" train.epochs=100000 eval.every=$((STEPS / 2))
          eval.classifier="$CLF" eval.cache_dir="$OUT/cache" track.wandb=disabled train.print_every_epochs=1000
          train.sample_every=$((STEPS / 2)) train.log_every=100)
  for aug in none diffaugment ada; do
    case $aug in
      none) a=(train.augment=) ;;
      diffaugment) a=(train.augment=color,translation,cutout) ;;
      ada) a=(train.augment=ada) ;;
    esac
    "${DG[@]}" sweep configs/fewshot_dcgan_ada.yaml "${common[@]}" "${a[@]}" --seeds "$SEEDS" --local 1 \
      --name "n$n-$aug" --out "$OUT"
  done
  "${DG[@]}" compare "$OUT/n$n-none" "$OUT/n$n-diffaugment" "$OUT/n$n-ada" --metric fid_mnistcnn \
    --metric recall --format markdown | tee "$OUT/compare-$n.md"
done
