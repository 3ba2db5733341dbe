#!/usr/bin/env bash
# The main job on a fresh machine: set up, prepare MNIST shards, train the tutorial GAN, write sample grids.
# Extra arguments are config overrides, e.g. `bash launch/quickstart.sh train.epochs=10`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
VENV=${DISTGAN_VENV:-.venv}
if [ ! -f data/mnist/manifest.json ]; then
  if [ -d ../shared/data/mnist ]; then from=(--from ../shared/data/mnist); else from=(); fi
  "$VENV/bin/distgan" data mnist --out data/mnist "${from[@]}"
fi
"$VENV/bin/python" distgan/train.py configs/mnist_mlp.yaml "$@"
