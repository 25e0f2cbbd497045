#!/usr/bin/env bash
# The GPU path on a lent GPU machine (issue 24), in one device call of at most 10 minutes.
#
#   scripts/gpu_check.sh              on the GPU machine: results in $OUT (else gpu_results/)
#   scripts/gpu_check.sh --dry-run    here, on the CPU: every step that can run, small sizes
#   scripts/gpu_check.sh --sizes-only what a device call would carry, against its 64 MiB
#
# Carried (made here by scripts/gpu_carry.sh, ignored by git): gpu_carry/wheels (gsplat 1.5.3)
# and gpu_carry/data (a prepared, stylized clip). The device call:
#   carry ["gpu_carry"], command "bash scripts/gpu_check.sh", timeout_s 600
#
# Steps, each with a time limit, its log in WORK/logs and its status in WORK/steps.tsv:
#  env       machine, Python, torch/CUDA, numpy, nvcc, GPU
#  wheels    the carried wheels: names and tags fit CPython 3.12 manylinux x86_64; installed
#            offline (--no-index --no-deps) into WORK/site, put on PYTHONPATH
#  gsplat    JIT-compiles gsplat's CUDA kernels for this GPU only (TORCH_CUDA_ARCH_LIST), timed;
#            dry run: imports the installed gsplat and counts its sources
#  pytest    tests/test_render_gsplat.py (torch reference vs gsplat: images and gradients)
#  speed     scripts/gpu_render_speed.py: 70k Gaussians, 512x512, blend + skinning + rasterization
#  bench     python -m backend bench animate --device cuda
#  train     scripts/gpu_train.py: the train command's preset gpu-paper on the stylized clip with
#            a time budget (what is left of the call, at most TRAIN_MAX s), held-out PSNR every
#            15 s of training (time to 30 dB), then the final evaluation and the avatar
#  speed-avatar  the render speed of that trained avatar, driven by the clip's tracking
#  summary   RESULTS/summary.json and a table; RESULTS gets at most 8 files
# Every Python step runs with scripts/gpu_blocker.py as sitecustomize: mediapipe, bpy and av
# (absent on the GPU machine) cannot be imported, so the dry run fails where the device would.
# The dry run also checks this script's syntax, the third-party imports of every step against
# the GPU machine's package list, the numpy 2 path (gpu_work/np2, if gpu_carry.sh made it) and
# the carried size; with GPU_CHECK_NVCC=1 it also compiles gsplat's CUDA sources with this
# machine's nvcc (sm_90, -O0; about 7 minutes on one core). Exit status: the number of failed
# steps (0: all passed).
set -uo pipefail

MODE=device
case "${1:-}" in
    --dry-run) MODE=dry ;;
    --sizes-only) MODE=sizes ;;
    "") ;;
    *) echo "usage: scripts/gpu_check.sh [--dry-run | --sizes-only]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
CARRY=${GPU_CARRY:-gpu_carry}
if [ "$MODE" = sizes ]; then
    exec "${PYTHON:-.venv/bin/python}" scripts/gpu_check_steps.py sizes "$CARRY"
fi

START=$(date +%s)
if [ "$MODE" = dry ]; then
    PYTHON=${PYTHON:-$(pwd)/.venv/bin/python}
    WORK=${GPU_WORK:-gpu_work/dryrun}
    RESULTS=${RESULTS:-gpu_work/dryrun_out}
    DEADLINE=$((START + 3600))
else
    PYTHON=${PYTHON:-python3}
    WORK=${GPU_WORK:-/tmp/gpu_check}
    RESULTS=${RESULTS:-${OUT:-gpu_results}}
    DEADLINE=$((START + ${GPU_CHECK_SECONDS:-550}))  # the call's 600 s, less copying and margin
fi
TRAIN_MAX=${TRAIN_MAX:-420}
# Fresh outputs; the JIT build folder survives, so a rerun on a warm machine does not recompile.
rm -rf "$WORK/logs" "$WORK/site" "$WORK/train" "$WORK"/*.json "$WORK"/*.jsonl "$WORK/steps.tsv"
mkdir -p "$WORK/logs" "$WORK/pyblock" "$RESULTS"
WORK=$(cd "$WORK" && pwd)
LOGS=$WORK/logs
exec > >(tee "$RESULTS/gpu_check.log") 2>&1
TEE_PID=$!
finish() { exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null; }  # the whole log is on disk before exit
trap finish EXIT
export PYTHONUNBUFFERED=1
export GPU_CHECK_BLOCK=mediapipe,bpy,av GPU_CHECK_IMPORTS=$WORK/imports.jsonl
cp scripts/gpu_blocker.py "$WORK/pyblock/sitecustomize.py"
PYPATH="$WORK/site:$WORK/pyblock:$REPO"
[ "$MODE" = dry ] && [ -d gpu_work/np2/numpy ] && PYPATH="$PYPATH:$(pwd)/gpu_work/np2"
# numpy 2 goes behind the repo but before the venv's own site-packages (PYTHONPATH precedes them).
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"
FAILED=0

remaining() { echo $((DEADLINE - $(date +%s))); }

# step NAME LIMIT_S [--quiet] CMD...: run CMD with a time limit; its output to LOGS/NAME.log and,
# unless --quiet (then the last 30 lines on failure), to the console; status to steps.tsv.
step() {
    local name=$1 limit=$2 quiet=0 rc t0
    shift 2
    if [ "$1" = --quiet ]; then quiet=1; shift; fi
    if [ "$limit" -lt 5 ]; then
        echo "=== $name: skipped, ${limit}s left of the call"
        printf '%s\t%s\t%s\n' "$name" 124 0 >> "$WORK/steps.tsv"
        FAILED=$((FAILED + 1))
        return 1
    fi
    echo "=== $name (limit ${limit}s, $(($(date +%s) - START))s into the call)"
    t0=$(date +%s%N)
    if [ $quiet = 1 ]; then
        timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
        rc=$?
        [ $rc != 0 ] && tail -30 "$LOGS/$name.log"
    else
        timeout -k 10 "$limit" "$@" 2>&1 | tee "$LOGS/$name.log"
        rc=${PIPESTATUS[0]}
    fi
    local ms=$((($(date +%s%N) - t0) / 1000000))
    local seconds=$((ms / 1000)).$((ms % 1000 / 100))
    printf '%s\t%s\t%s\n' "$name" "$rc" "$seconds" >> "$WORK/steps.tsv"
    if [ "$rc" = 0 ]; then echo "--- $name: ok in $seconds s"; else
        echo "--- $name: FAILED (rc $rc) after $seconds s"; FAILED=$((FAILED + 1)); fi
    return "$rc"
}

echo "gpu_check ($MODE) at $(date -u +%FT%TZ) in $REPO; work $WORK; results $RESULTS"
if [ "$MODE" = dry ]; then
    step syntax 30 bash -c "bash -n scripts/gpu_check.sh && bash -n scripts/gpu_carry.sh && echo syntax ok"
    step sizes 60 "$PYTHON" scripts/gpu_check_steps.py sizes "$CARRY"
fi
step env 60 "$PYTHON" scripts/gpu_check_steps.py env --json "$WORK/env.json"
if [ "$MODE" = device ] && ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: $PYTHON's torch sees no CUDA device; run this on a lent GPU machine, or use --dry-run" >&2
    exit 2
fi

# --- carried wheels, offline ------------------------------------------------------------------
step wheels-check 30 "$PYTHON" scripts/gpu_check_steps.py wheels "$CARRY/wheels"
shopt -s nullglob
WHEELS=()
for whl in "$CARRY"/wheels/*.whl; do
    # Here (Python 3.11) only pure-Python wheels install; wheels-check covered the others' tags.
    if [ "$MODE" = device ] || [[ $whl == *-py3-none-any.whl ]]; then WHEELS+=("$whl"); fi
done
step wheels 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$WORK/site" "${WHEELS[@]}" &&
    echo "installed offline into $WORK/site: ${WHEELS[*]##*/}"

# --- gsplat's CUDA kernels (JIT), timed -----------------------------------------------------
if [ "$MODE" = device ]; then
    # torch's JIT needs nvcc (CUDA_HOME) and the ninja beside this Python on PATH.
    if [ -z "${CUDA_HOME:-}" ]; then
        if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
        elif command -v nvcc > /dev/null; then  # may be a wrapper script: ask nvcc where it lives
            CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
            [ -x "$CUDA_HOME/bin/nvcc" ] || CUDA_HOME=$(ls -d /usr/local/cuda-* 2>/dev/null | tail -1)
        fi
    fi
    export CUDA_HOME
    PYBIN=$(dirname "$(command -v "$PYTHON")")
    export PATH="$CUDA_HOME/bin:$PYBIN:$PATH"
    echo "CUDA_HOME=$CUDA_HOME; nvcc $(command -v nvcc); ninja $(command -v ninja || echo MISSING)"
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    export TORCH_CUDA_ARCH_LIST MAX_JOBS=${MAX_JOBS:-$(nproc)}
    export TORCH_EXTENSIONS_DIR=$WORK/torch_extensions
    if ! step gsplat "$(( $(remaining) - 200 < 360 ? $(remaining) - 200 : 360 ))" --quiet \
            "$PYTHON" scripts/gpu_check_steps.py gsplat --build --json "$WORK/gsplat_build.json"; then
        # Without its kernels, the later steps measure the torch reference on CUDA (summary: backend).
        mkdir -p "$WORK/no-gsplat" && mv "$WORK"/site/gsplat* "$WORK/no-gsplat/"
        echo "gsplat unusable: the following steps run the torch rasterizer on CUDA"
    fi
    grep -h "gsplat" "$LOGS/gsplat.log" | tail -3
else
    step gsplat 120 "$PYTHON" scripts/gpu_check_steps.py gsplat
    # Optional, ~7 min on one core: gsplat's kernels through this machine's nvcc 13 for sm_90.
    [ "${GPU_CHECK_NVCC:-0}" = 1 ] && step nvcc 1800 "$PYTHON" scripts/gpu_check_steps.py nvcc-check
fi

# --- parity tests -----------------------------------------------------------------------------
# From a copy of tests/: the repository root is a Blender extension whose __init__.py imports
# bpy, and pytest imports it as the parent package of tests/ (no bpy on the GPU machine).
rm -rf "$WORK/pytree" && mkdir -p "$WORK/pytree" && cp -r tests pyproject.toml "$WORK/pytree/"
step pytest 150 bash -c 'cd "$1" && shift && exec "$@"' pytest "$WORK/pytree" \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_render_gsplat.py

# --- render speed and bench animate ---------------------------------------------------------
if [ "$MODE" = device ]; then
    DEVICE=cuda SPEED=(--n 70000 --size 512 --frames 300 --warmup 20) BENCH=(--device cuda) BENCH_S=90
else  # on 2 busy CPU cores, bench animate --quick takes about two minutes
    DEVICE=cpu SPEED=(--n 2000 --size 64 --frames 3 --warmup 1) BENCH=(--device cpu --quick) BENCH_S=300
fi
step speed 90 "$PYTHON" scripts/gpu_render_speed.py --device $DEVICE "${SPEED[@]}" --json "$WORK/render_speed.json"
step bench $BENCH_S "$PYTHON" -m backend --progress quiet bench animate "${BENCH[@]}"
grep -h '^{' "$LOGS/bench.log" > "$WORK/bench_animate.jsonl"

# --- training with the time left ------------------------------------------------------------
# Training stops 75 s before the deadline (final evaluation, avatar, speed-avatar, summary),
# however long its set-up took (the 256^3 surface grid, 64k Gaussians: minutes on 2 CPU cores).
if [ "$MODE" = device ]; then
    TRAIN=(--device cuda --budget "$TRAIN_MAX" --stop-at $((DEADLINE - 75)) --eval-every 15)
else
    TRAIN=(--device cpu --tiny --iters 12 --eval-every-steps 6 --eval-frames 4 --threads 1 --budget 120)
fi
LIMIT=$(( $(remaining) - 20 ))
echo "training budget: ${TRAIN[*]}"
step train "$LIMIT" "$PYTHON" scripts/gpu_train.py --data "$CARRY/data" --out "$WORK/train" --preset gpu-paper \
    --images stylized "${TRAIN[@]}" --json "$WORK/train_summary.json"
if [ -f "$WORK/train/avatar.npz" ] && [ "$(remaining)" -gt 25 ]; then
    SPEED[1]=0  # --n 0: the trained avatar only
    step speed-avatar "$(( $(remaining) - 10 < 60 ? $(remaining) - 10 : 60 ))" "$PYTHON" scripts/gpu_render_speed.py \
        --device $DEVICE "${SPEED[@]}" --avatar "$WORK/train/avatar.npz" --tracking "$CARRY/data/tracking.npz" \
        --json "$WORK/render_speed_trained.json"
fi

# --- what the steps imported, the summary, the files back -----------------------------------
[ "$MODE" = dry ] && step imports 30 "$PYTHON" scripts/gpu_check_steps.py imports "$WORK/imports.jsonl"
GPU_CHECK_IMPORTS= "$PYTHON" scripts/gpu_check_steps.py summary "$WORK" "$RESULTS" --mode "$MODE"
# RESULTS holds at most 8 files: gpu_check.log, summary.json and these six.
cp "$LOGS/pytest.log" "$LOGS/train.log" "$RESULTS/" 2>/dev/null
cp "$WORK/bench_animate.jsonl" "$RESULTS/" 2>/dev/null
[ -f "$LOGS/gsplat.log" ] && tail -c 2000000 "$LOGS/gsplat.log" > "$RESULTS/gsplat_build.log"
cp "$WORK/train/eval/report.json" "$RESULTS/eval_report.json" 2>/dev/null
picture=$(ls "$WORK"/train/eval/*.png 2>/dev/null | head -1)
[ -n "$picture" ] && cp "$picture" "$RESULTS/eval_$(basename "$picture")"
echo "gpu_check ($MODE): $FAILED failed step(s) in $(($(date +%s) - START)) s; results in $RESULTS: $(ls "$RESULTS" | tr '\n' ' ')"
exit "$FAILED"
