#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (unit + real multi-process launches).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
"${DISTGAN_VENV:-.venv}/bin/python" -m pytest -q "$@"
