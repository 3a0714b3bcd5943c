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
# The packages' modules compiled once after the installs, on every core (pip compiles one file at a time); a few
# files written for newer Pythons (torch's py312 tests) do not compile, which pip ignores too.
PIP=(.venv/bin/pip install --quiet --no-compile)
"${PIP[@]}" --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" torch==2.13.0
"${PIP[@]}" -r requirements-dev.txt
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
  >/dev/null || true
echo "$wanted" > "$STAMP"
