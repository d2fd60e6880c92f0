#!/usr/bin/env bash
# The test command of the README and of CI: sets up .venv and the reference oracle (.venv-reference), then
# runs the whole suite (tests/reference compares with detectron2 and the authors' code, live).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_reference.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest -q tests "$@"
