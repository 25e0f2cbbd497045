#!/usr/bin/env bash
# GPU checks of the rasterizer (issue 4), for a lent GPU machine that cannot reach the internet.
#
#   scripts/gpu_check.sh [WHEELS_DIR] [RESULTS_DIR]
#
# 1. Installs gsplat 1.5.3 from WHEELS_DIR (default ./wheels), offline and without dependencies:
#    the GPU image already has torch, numpy, ninja, jaxtyping, rich and nvcc. gsplat's wheel is
#    pure Python and JIT-compiles its CUDA kernels on first use (a few minutes, done up front here).
#    Fetch it on the dev machine beforehand, into a folder git ignores, and carry that folder:
#        echo /wheels/ >> .git/info/exclude
#        pip download gsplat==1.5.3 --no-deps -d wheels
#    (device tool: carry ["wheels"], command "bash scripts/gpu_check.sh wheels $OUT").
# 2. Runs the torch-vs-gsplat parity tests and the rasterizer tests on this machine.
# 3. Runs `python -m backend bench raster --device cuda` (gsplat through backend="auto").
# Results (logs, bench JSON lines, environment) go to RESULTS_DIR, default $OUT, else ./gpu_results.
# Exit status: non-zero if the install, the compile or any test failed.
set -uo pipefail

WHEELS_DIR=${1:-wheels}
RESULTS_DIR=${2:-${OUT:-gpu_results}}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
mkdir -p "$RESULTS_DIR"
export PYTHONUNBUFFERED=1
status=0

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$RESULTS_DIR/environment.txt" 2>&1
cat "$RESULTS_DIR/environment.txt"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: $PYTHON's torch sees no CUDA device; run this on a lent GPU machine" >&2
    exit 2
fi

# --- 1. install gsplat offline ---------------------------------------------------------------
shopt -s nullglob
packages=("$WHEELS_DIR"/gsplat-1.5.3*)
if [ ${#packages[@]} -eq 0 ]; then
    echo "error: no gsplat-1.5.3 wheel in '$WHEELS_DIR'; on the dev machine run" \
         "'pip download gsplat==1.5.3 --no-deps -d $WHEELS_DIR' and carry that folder" >&2
    exit 2
fi
SITE=${GSPLAT_SITE:-/tmp/gsplat-site}
# BUILD_NO_CUDA=1: if only the source archive was downloaded, build the JIT (pure Python) package.
if ! BUILD_NO_CUDA=1 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation \
        --target "$SITE" "${packages[0]}" > "$RESULTS_DIR/install.log" 2>&1; then
    echo "error: installing ${packages[0]} failed; see $RESULTS_DIR/install.log" >&2
    cat "$RESULTS_DIR/install.log" >&2
    exit 2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

# --- compile gsplat's kernels once, for this GPU only ----------------------------------------
TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c \
    "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}.{minor}')")
export TORCH_CUDA_ARCH_LIST MAX_JOBS=${MAX_JOBS:-$(nproc)}
start=$(date +%s)
if ! "$PYTHON" - > "$RESULTS_DIR/compile.log" 2>&1 <<'PY'
import torch
import gsplat
means = torch.zeros(1, 3, device="cuda")
means[0, 2] = 1.0
quats = torch.tensor([[1.0, 0, 0, 0]], device="cuda")
scales = torch.full((1, 3), 0.1, device="cuda")
K = torch.tensor([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]], device="cuda")
colors, alphas, _ = gsplat.rasterization(means, quats, scales, torch.ones(1, device="cuda"),
                                         torch.ones(1, 3, device="cuda"), torch.eye(4, device="cuda")[None],
                                         K, 32, 32)
print("gsplat", gsplat.__version__, "compiled; centre alpha", alphas[0, 16, 16, 0].item())
PY
then
    echo "error: gsplat did not import or compile; see $RESULTS_DIR/compile.log" >&2
    tail -40 "$RESULTS_DIR/compile.log" >&2
    exit 3
fi
echo "gsplat ready in $(( $(date +%s) - start )) s: $(tail -1 "$RESULTS_DIR/compile.log")"

# --- 2. tests --------------------------------------------------------------------------------
"$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_render_gsplat.py tests/test_render.py \
    tests/test_render_grad.py 2>&1 | tee "$RESULTS_DIR/pytest.log" || status=1

# --- 3. benches ------------------------------------------------------------------------------
"$PYTHON" -m backend --progress quiet bench raster --device cuda 2>"$RESULTS_DIR/bench.err" \
    | tee "$RESULTS_DIR/bench_raster.jsonl" || status=1

echo "results in $RESULTS_DIR (status $status)"
exit $status
