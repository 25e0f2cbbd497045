#!/usr/bin/env bash
# The test command: install what the tests need into .venv/ (and the older Blender releases into
# .bpy-4.2/ and .bpy-4.5/), then run the whole suite and ruff.
# Exits non-zero on any failure. Extra arguments go to pytest (e.g. -k formats, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh requirements-test.txt
scripts/setup_venv.sh --blender-matrix
.venv/bin/python -m ruff check .
# Every Blender of the matrix must be there: a missing one fails its tests instead of skipping.
TOONSPLAT_BLENDER_MATRIX_REQUIRED=1 .venv/bin/python -m pytest "$@"
