#!/usr/bin/env bash
# Create or reuse the virtual environment at .venv/ and install a requirements file into it.
# Usage: scripts/setup_venv.sh [requirements.txt|requirements-test.txt]
#        scripts/setup_venv.sh --blender-matrix   # the older Blender releases the tests also run
set -euo pipefail
cd "$(dirname "$0")/.."
requirements="${1:-requirements.txt}"
python="${PYTHON:-python3}"

# The Blender LTS releases tests/test_blender.py runs under besides the venv's bpy (5.0.1): the
# newest bpy wheel of each series on PyPI (Python 3.11), each in its own folder beside .venv/
# (.bpy-4.2/, .bpy-4.5/), put first on PYTHONPATH by the tests. Blender bundles numpy 1.26.4 in
# all of them; the wheels do not pin it, so it is pinned here (else pip picks numpy 2.x).
BLENDER_MATRIX="${TOONSPLAT_BLENDER_MATRIX-4.2.23 4.5.15}"
BLENDER_NUMPY="numpy==1.26.4"

install_blender_matrix() {
  for version in $BLENDER_MATRIX; do
    folder=".bpy-${version%.*}"
    spec="bpy==$version $BLENDER_NUMPY"
    if [ "$(cat "$folder/.installed" 2>/dev/null)" != "$spec" ]; then
      echo "[setup] installing $spec into $folder (about 1 GB, a minute or two)" >&2
      rm -rf "$folder" "$folder.partial"
      .venv/bin/python -m pip install --quiet --disable-pip-version-check --target "$folder.partial" \
        $spec
      echo "$spec" > "$folder.partial/.installed"
      mv "$folder.partial" "$folder"
    fi
  done
}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
if [ "$requirements" = "--blender-matrix" ]; then
  install_blender_matrix
  exit 0
fi
stamp=".venv/.installed-$(basename "$requirements" .txt)"
# Reinstall only when the requirements changed since the last successful install.
digest=$(cat requirements*.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "[setup] installing $requirements into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$digest" > "$stamp"
fi
