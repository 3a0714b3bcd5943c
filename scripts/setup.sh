#!/usr/bin/env bash
# Create .venv with the CPU build of torch and the project's requirements (idempotent: a stamp in .venv records the
# requirement files it was installed from, and an unchanged set is not installed again).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
STAMP=.venv/.installed-requirements
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum)
[ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ] && exit 0
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -r requirements-dev.txt
echo "$wanted" > "$STAMP"
