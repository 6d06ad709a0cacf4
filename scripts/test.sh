#!/usr/bin/env bash
# Install edgekit with its test tools into .venv and run the test suite.
# pytest exits 5 when it collects no test: that fails this script too, never passes silently.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/ruff check edgekit tests
.venv/bin/mypy edgekit
exec .venv/bin/python -m pytest -q "$@"
