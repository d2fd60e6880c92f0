#!/usr/bin/env bash
# The test command of the README and of CI: sets up .venv and the reference oracle (.venv-reference), then
# runs the whole suite (tests/reference compares with detectron2 and the authors' code, live).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/setup_reference.sh
# Two workers of one thread each (pytest-xdist, a test module stays on one worker): much of the suite is
# single-threaded Python (torch.export, ONNX conversion), which one process with 2 threads leaves on one core.
workers=${TEST_WORKERS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile tests "$@"
