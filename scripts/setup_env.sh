#!/usr/bin/env bash
# Creates ./.venv (once) and installs the project into it. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating virtual environment .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing the package and its pinned dependencies (torch/torchvision from the local wheel cache)"
  .venv/bin/pip install -q -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
