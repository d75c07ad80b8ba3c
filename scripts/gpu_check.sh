#!/bin/sh
# The GPU check: every measurement of the CUDA path in one run on one GPU (at most 8 minutes), stopping at the first
# failing step with one line naming it. Figures: OUT/gpu_check.json; summary: OUT/summary.md; logs: OUT/logs/.
#   sh scripts/gpu_check.sh                         # OUT = gpu_check
#   sh scripts/gpu_check.sh --out runs/gpu_check    # another folder
#   sh scripts/gpu_check.sh --device cpu --tiny     # the same steps at tiny sizes on the CPU (minutes)
# Steps and figures: scripts/gpu_check.py and the README ("On a GPU"). PYTHON picks the interpreter.
set -e
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
. "$ROOT/scripts/python.sh"
cd "$ROOT"
exec "$PYTHON" scripts/gpu_check.py "$@"
