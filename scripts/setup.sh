#!/usr/bin/env bash
# Create .venv with the CPU build of torch and the project's requirements (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -r requirements-dev.txt
