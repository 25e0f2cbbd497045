#!/usr/bin/env bash
# Makes what scripts/gpu_check.sh carries to a lent GPU machine (issue 24). Run it HERE, on the
# dev machine: prepare and stylize need mediapipe, which the GPU machine does not have.
#
#   scripts/gpu_carry.sh [VIDEO]        (default ../shared/data/real/cap13_edit2.mp4)
#
# 1. gpu_work/data: `prepare --video VIDEO --size 512 --stride 3` then `stylize` (the default
#    toon style). The clip is 765 frames of 400x300 at 25 fps; every third frame (255 frames,
#    8.3 fps) keeps the carried folder under the 64 MiB a device call can carry.
# 2. gpu_carry/data: what training on the stylized frames reads (stylized/, masks/,
#    tracking.npz, prepare.json, stylize.json). frames/ (23 MB) stays here: `train --images
#    stylized` never opens it, and with it the carry would exceed the limit.
# 3. gpu_carry/wheels: gsplat 1.5.3 (a pure-Python wheel that JIT-compiles its CUDA kernels;
#    the GPU machine has its needs: torch, numpy, ninja, jaxtyping, rich).
# 4. gpu_work/np2: numpy 2 for the dry run here (the GPU machine has numpy 2.x; .venv has 1.26).
# gpu_carry/ and gpu_work/ are third-party data and downloads: git ignores them (.git/info/exclude)
# and they are never committed. Prints the size of what a device call would carry.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDEO=${1:-../shared/data/real/cap13_edit2.mp4}
PYTHON=${PYTHON:-.venv/bin/python}
WORK=gpu_work
CARRY=gpu_carry

for path in /gpu_carry/ /gpu_work/; do
    grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
mkdir -p "$WORK" "$CARRY/wheels"

if [ ! -f "$WORK/data/stylize.json" ]; then
    "$PYTHON" -m backend --progress quiet prepare --video "$VIDEO" --out "$WORK/data" --size 512 --stride 3
    "$PYTHON" -m backend --progress quiet stylize --data "$WORK/data"
fi
rm -rf "$CARRY/data" && mkdir -p "$CARRY/data"
cp -r "$WORK/data/stylized" "$WORK/data/masks" "$CARRY/data/"
cp "$WORK/data/tracking.npz" "$WORK/data/prepare.json" "$WORK/data/stylize.json" "$CARRY/data/"

ls "$CARRY"/wheels/gsplat-1.5.3-*.whl > /dev/null 2>&1 ||
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux2014_x86_64 -d "$CARRY/wheels" gsplat==1.5.3
[ -d "$WORK/np2/numpy" ] || "$PYTHON" -m pip install -q --no-deps --target "$WORK/np2" "numpy>=2,<3"

echo "carried: $(du -sb "$CARRY" | cut -f1) bytes in $CARRY ($(ls "$CARRY/data/stylized" | wc -l) frames)"
bash scripts/gpu_check.sh --sizes-only
