#!/usr/bin/env bash
# Set up .venv and run the whole test suite, offline, one pytest-xdist worker per core (each test module on one
# worker, so that its fixtures are built once, the slowest modules first: tests/conftest.py; `-n 0` runs it in this
# process alone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
.venv/bin/python -m pytest -n auto --dist loadscope --no-loadscope-reorder "$@"
