#!/usr/bin/env bash
# Create .venv (if missing) and install edgekit with its test tools into it.
# torch is pinned to 2.13.0 (a CPU build); an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
