#!/usr/bin/env bash
# Run every benchmark and collect the JSON lines in one file (default bench_results.jsonl).
# Usage: scripts/bench_all.sh [OUT.jsonl] [extra args for the backend benches, e.g. --quick]
# Run it on an otherwise idle machine: the numbers in docs/BENCHMARKS.md come from it.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench_results.jsonl}"
shift || true
python=".venv/bin/python"
: > "$out"
uptime >&2
for name in formats head-model raster animate stylize track; do
  echo "[bench] $name" >&2
  "$python" -m backend bench "$name" "$@" | tee -a "$out"
done
echo "[bench] blender" >&2
"$python" scripts/bench_blender.py | tee -a "$out"
uptime >&2
echo "[bench] results: $out" >&2
