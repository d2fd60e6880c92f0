#!/usr/bin/env bash
# Builds the reference oracle once into ./.venv-reference (git-ignored): detectron2 with projects/DensePose and
# the paper authors' DensePoseFnL from ../shared/reference-peer, in a venv of their own (the project never
# imports them; tests/reference runs them in subprocesses and compares). Idempotent: a built venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${DENSEPOSE_REFERENCE_PEER:-../shared/reference-peer}
if [ ! -f "$PEER/build.sh" ]; then
  if [ -n "${CI:-}" ]; then
    echo "[setup] error: the reference peer is missing ($PEER/build.sh); CI runs the oracle tests" >&2
    exit 1
  fi
  echo "[setup] no reference peer at $PEER: the oracle tests (tests/reference) will be skipped"
  exit 0
fi
if [ ! -f .venv-reference/.reference-peer-ok ]; then
  echo "[setup] building the reference oracle into .venv-reference (about 3 minutes, once)"
fi
bash "$PEER/build.sh" "$PWD/.venv-reference"
