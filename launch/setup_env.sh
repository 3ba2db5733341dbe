#!/usr/bin/env bash
# Creates the virtual environment (default .venv; set DISTGAN_VENV to use another, e.g. one that already
# holds your own CUDA torch) and installs distgan into it.
# torch: an installed torch is left alone. Otherwise a machine with an NVIDIA GPU gets PyPI's default (CUDA)
# build, and a CPU-only machine gets a CPU build: a local wheel if pip is configured with one, else the
# PyTorch CPU index. Never a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DISTGAN_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "[setup] keeping installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] GPU found: installing torch from PyPI"
  "${pip[@]}" install torch
else
  echo "[setup] no GPU: installing a CPU build of torch"
  # A "+cpu" build exists only where pip can see one (a local wheel via find-links, or PyTorch's CPU index
  # configured), never on plain PyPI, so this cannot pull CUDA; otherwise ask PyTorch's CPU index directly.
  "${pip[@]}" install "torch==${DISTGAN_TORCH_VERSION:-2.13.0}+cpu" 2>/dev/null \
    || "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" install -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
# torch-fidelity (the Inception metrics) without its torchvision requirement: distgan imports only its network
# and statistics, which need torch alone, and PyPI's torchvision would not match a CPU or a user's own torch.
"$VENV/bin/python" -c "import importlib.util as u; exit(u.find_spec('torch_fidelity') is None)" 2>/dev/null \
  || "${pip[@]}" install --no-deps "torch-fidelity==${DISTGAN_FIDELITY_VERSION:-0.4.0}" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import distgan, torch; print(f'[setup] distgan ready (torch {torch.__version__})')"
