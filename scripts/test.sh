#!/usr/bin/env bash
# The test command: install what the tests need into .venv/, then run the whole suite and ruff.
# Exits non-zero on any failure. Extra arguments go to pytest (e.g. -k formats, -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh requirements-test.txt
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest "$@"
