#!/usr/bin/env bash
# The demo command: install the backend's pinned dependencies into .venv/, then run the main job
# end to end on the built-in defaults (no licensed files, no downloads) and print where results are.
# Usage: scripts/demo.sh [OUT_DIR]   (default: ./demo_output)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_venv.sh requirements-demo.txt
exec .venv/bin/python -m backend demo --out "${1:-demo_output}"
