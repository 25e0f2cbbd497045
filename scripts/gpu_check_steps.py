"""The small steps of scripts/gpu_check.sh that are easier in Python than in bash (issue 24).

    python scripts/gpu_check_steps.py env --json ENV.json
    python scripts/gpu_check_steps.py wheels DIR            # names and tags fit cp312 manylinux x86_64
    python scripts/gpu_check_steps.py gsplat [--build]      # import gsplat; --build: JIT-compile, timed
    python scripts/gpu_check_steps.py nvcc-check       # gsplat's sources through this machine's nvcc (slow)
    python scripts/gpu_check_steps.py imports FILE          # third-party imports vs the GPU machine's list
    python scripts/gpu_check_steps.py sizes PATH...         # what a device call carries, against 64 MiB
    python scripts/gpu_check_steps.py summary WORK RESULTS  # summary.json from the steps' outputs

Nothing here imports the backend, mediapipe or bpy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

GSPLAT = ("gsplat", "1.5.3")
CARRY_LIMIT = 64 * 2 ** 20  # the device tool's limit on the working tree plus carried paths
# The GPU machine's Python packages (device tool KINDS.md, read 2026-11-17), as import names.
DEVICE_PACKAGES = """absl accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated_doc anyio attr
attrs botorch build certifi charset_normalizer chex click cloudpickle cmake colorama contourpy coverage cuda
cupy cupy_backends cupyx cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools frozenlist fsspec google gpytorch grpc h11 h5py hf_xet httpcore httpx huggingface_hub humanize
hypothesis idna imageio iniconfig interface_meta jax jaxlib jaxtyping jinja2 joblib kiwisolver
lazy_loader lightning lightning_utilities linear_operator lineax llvmlite lxml markdown markdown_it
markupsafe matplotlib mdurl mesonbuild ml_dtypes mpi4py mpl_toolkits mpmath msgpack multidict
multipledispatch mypy_extensions nanobind narwhals networkx ninja numba numpy numpyro nvidia onnx
onnx_ir onnxruntime onnxscript optax opt_einsum opt_einsum_fx optimistix orbax packaging pandas
pathspec patsy peft pil pip pluggy portalocker prometheus_client propcache psutil pyarrow pybind11
pycparser cpuinfo pygments pyparsing pyproject_hooks pyre_extensions pytest pytest_benchmark pytest_cov
pytest_mock pytest_timeout xdist dateutil pytorch_lightning yaml regex requests rich sacrebleu
safetensors scikit_build_core skimage sklearn scipy seaborn sentencepiece sentence_transformers
setuptools pkg_resources shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard_data_server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
torch torchgen functorch torchaudio torchdiffeq torch_geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing_extensions typing_inspect urllib3 uvloop wadler_lindig
werkzeug wheel wrapt xarray xxhash yarl zipp cv2 fonttools distutils""".lower().split()
DEVICE_PACKAGES += ["gsplat", "pillow", "py", "cython_runtime"]  # py: pytest's shim


def env(args) -> int:
    """The machine, the Python and the packages the check depends on, as JSON."""
    info: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
                  "cpus": os.cpu_count(), "python": sys.version.split()[0], "executable": sys.executable}
    for name in ("torch", "numpy", "scipy", "cv2", "PIL", "matplotlib", "jaxtyping", "rich", "ninja",
                 "pytest"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as exc:  # missing or broken: recorded, not fatal
            info[name] = f"missing ({type(exc).__name__})"
    for name in ("mediapipe", "bpy", "av"):
        info[f"{name} importable"] = _importable(name)
    try:
        import torch

        info["torch cuda"] = torch.version.cuda
        info["cuda available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
            info["gpu memory gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
    except Exception as exc:
        info["torch error"] = repr(exc)
    info["nvcc"] = _first_line(["nvcc", "--version"], last=True)
    info["nvidia-smi"] = _first_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                      "--format=csv,noheader"])
    info["commit"] = _first_line(["git", "rev-parse", "--short", "HEAD"])
    print(json.dumps(info, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=1)
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # refused by the gpu_check import blocker
        return False


def _first_line(command: list[str], last: bool = False) -> str | None:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return (lines[-1] if last else lines[0]) if lines and out.returncode == 0 else None


def device_tags() -> set:
    """Wheel tags that CPython 3.12 on manylinux x86_64 (the GPU machine) accepts."""
    from packaging import tags

    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    abis = ["cp312", "abi3", "none"]
    found = set(tags.cpython_tags(python_version=(3, 12), abis=abis, platforms=platforms))
    found |= set(tags.compatible_tags(python_version=(3, 12), interpreter="cp312", platforms=platforms))
    return found


def wheels(args) -> int:
    """Every wheel installs on the GPU machine's Python, one version per name, gsplat is there."""
    from packaging.utils import parse_wheel_filename

    files = sorted(f for f in os.listdir(args.folder) if not f.startswith("."))
    accepted, problems, versions = device_tags(), [], {}
    for name in files:
        if not name.endswith(".whl"):
            problems.append(f"{name}: not a wheel (the GPU machine cannot build sdists offline reliably)")
            continue
        project, version, _, wheel_tags = parse_wheel_filename(name)
        versions.setdefault(project, []).append(str(version))
        fits = bool(set(wheel_tags) & accepted)
        print(f"  {name}: {project} {version}, {'fits' if fits else 'does NOT fit'} cp312 manylinux x86_64, "
              f"{os.path.getsize(os.path.join(args.folder, name)) / 2 ** 20:.1f} MiB")
        if not fits:
            problems.append(f"{name}: no tag for CPython 3.12 on manylinux x86_64")
    problems += [f"{p}: several versions {v}; keep one" for p, v in versions.items() if len(v) > 1]
    if versions.get(GSPLAT[0]) != [GSPLAT[1]]:
        problems.append(f"no {GSPLAT[0]}-{GSPLAT[1]} wheel in {args.folder}; run scripts/gpu_carry.sh")
    for problem in problems:
        print("error: " + problem, file=sys.stderr)
    return 1 if problems else 0


GSPLAT_SMOKE = "a Gaussian 1 m in front of a 32x32 camera: its centre pixel must be covered"


def gsplat_step(args) -> int:
    """Import gsplat; with --build compile its CUDA kernels (timed) and render one Gaussian."""
    start = time.monotonic()
    import gsplat

    print(f"gsplat {gsplat.__version__} from {os.path.dirname(gsplat.__file__)} "
          f"(import {time.monotonic() - start:.1f} s)")
    if gsplat.__version__ != GSPLAT[1]:
        print(f"error: gsplat {gsplat.__version__} is not {GSPLAT[1]}", file=sys.stderr)
        return 1
    sources = [f for f in os.listdir(os.path.join(os.path.dirname(gsplat.__file__), "cuda", "csrc"))
               if f.endswith((".cu", ".cpp"))]
    print(f"{len(sources)} CUDA/C++ sources to JIT-compile; CUDA_HOME={os.environ.get('CUDA_HOME')}, "
          f"TORCH_CUDA_ARCH_LIST={os.environ.get('TORCH_CUDA_ARCH_LIST')}, "
          f"MAX_JOBS={os.environ.get('MAX_JOBS')}")
    if not args.build:
        print("JIT build skipped (dry run: no CUDA device here)")
        return 0
    import torch

    start = time.monotonic()
    from gsplat.cuda._backend import _C

    seconds = time.monotonic() - start
    if _C is None:
        print("error: gsplat found no CUDA toolkit (nvcc); its kernels were not built", file=sys.stderr)
        return 1
    means = torch.tensor([[0.0, 0.0, 1.0]], device="cuda")
    quats = torch.tensor([[1.0, 0, 0, 0]], device="cuda")
    scales = torch.full((1, 3), 0.1, device="cuda")
    ks = torch.tensor([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]], device="cuda")
    _, alphas, _ = gsplat.rasterization(means, quats, scales, torch.full((1,), 0.9, device="cuda"),
                                        torch.ones(1, 3, device="cuda"), torch.eye(4, device="cuda")[None],
                                        ks, 32, 32)
    alpha = float(alphas[0, 16, 16, 0])
    print(f"gsplat JIT build: {seconds:.1f} s; smoke render ({GSPLAT_SMOKE}): alpha {alpha:.3f}")
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"gsplat": gsplat.__version__, "build_s": round(seconds, 1), "smoke_alpha": alpha,
                   "arch": os.environ.get("TORCH_CUDA_ARCH_LIST"), "max_jobs": os.environ.get("MAX_JOBS")},
                  handle)
    return 0 if alpha > 0.5 else 1


def nvcc_check(args) -> int:
    """Compile gsplat's CUDA sources with this machine's nvcc for sm_90, no GPU needed (-O0).

    A CPU build of torch ships the CUDA headers but not one generated header, stubbed here. The
    headers are this torch's, not the GPU machine's 2.11: this catches what a CUDA 13 toolkit
    rejects in gsplat 1.5.3's kernels, not an API change between torch versions.
    """
    import shutil
    import sysconfig
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import gsplat
    import torch.utils.cpp_extension as extension

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("nvcc-check skipped: no nvcc on this machine")
        return 0
    root = os.path.join(os.path.dirname(gsplat.__file__), "cuda")
    shim = tempfile.mkdtemp(prefix="gsplat-nvcc-")
    os.makedirs(os.path.join(shim, "c10", "cuda", "impl"))
    with open(os.path.join(shim, "c10", "cuda", "impl", "cuda_cmake_macros.h"), "w") as handle:
        handle.write("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [shim, *extension.include_paths(), sysconfig.get_paths()["include"],
                os.path.join(root, "include"), os.path.join(root, "csrc", "third_party", "glm")]
    flags = ["-c", "-std=c++17", f"-arch={args.arch}", "-O0", "--expt-relaxed-constexpr", "-use_fast_math",
             "-DTORCH_EXTENSION_NAME=gsplat_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H",
             "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
             "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
    flags += [f"-I{path}" for path in includes]
    sources = sorted(os.path.join(root, "csrc", f) for f in os.listdir(os.path.join(root, "csrc"))
                     if f.endswith(".cu") and (not args.names or f in args.names))

    def compile_one(source: str) -> tuple[str, int, float, str]:
        start = time.monotonic()
        out = subprocess.run([nvcc, *flags, source, "-o", os.path.join(shim, "out.o")],
                             capture_output=True, text=True)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if "error" in ln]
        return os.path.basename(source), out.returncode, time.monotonic() - start, "\n".join(errors[:5])

    print(f"{_first_line([nvcc, '--version'], last=True)}; {len(sources)} sources, {args.jobs} at a time")
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, rc, seconds, errors in pool.map(compile_one, sources):
            status = "ok" if rc == 0 else "FAILED"
            print(f"  {name}: {status} in {seconds:.0f} s" + (f"\n{errors}" if rc else ""), flush=True)
            failed += rc != 0
    shutil.rmtree(shim, ignore_errors=True)
    return 1 if failed else 0


def imports(args) -> int:
    """Third-party modules the steps imported, and those the GPU machine may not have."""
    seen: set[str] = set()
    with open(args.file, encoding="utf-8") as handle:
        for line in handle:
            seen.update(json.loads(line)["modules"])
    known = set(DEVICE_PACKAGES)
    unknown = sorted(m for m in seen if m.lower() not in known)
    print(f"third-party modules imported by the steps: {', '.join(sorted(seen))}")
    blocked = {"mediapipe", "bpy", "av"} & {m.lower() for m in seen}
    if blocked:
        print(f"error: imported {sorted(blocked)}, which the GPU machine lacks", file=sys.stderr)
        return 1
    print("not in the GPU machine's package list (optional imports of torch/scipy, or missing there): "
          + (", ".join(unknown) if unknown else "none"))
    return 0


def sizes(args) -> int:
    """Bytes a device call carries: tracked and untracked-not-ignored files plus the carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    tree = sum(os.path.getsize(p) for p in listed if p and os.path.isfile(p))
    total, rows = tree, [("working tree (tracked + untracked, not ignored)", tree)]
    for path in args.paths:
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) \
            if os.path.isdir(path) else (os.path.getsize(path) if os.path.exists(path) else 0)
        rows.append((f"carried {path}", size))
        total += size
    for label, size in rows:
        print(f"  {size / 2 ** 20:7.2f} MiB  {label}")
    print(f"  {total / 2 ** 20:7.2f} MiB  in all, of the {CARRY_LIMIT / 2 ** 20:.0f} MiB limit")
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        print(f"error: carried paths missing: {missing}; run scripts/gpu_carry.sh", file=sys.stderr)
    if total > CARRY_LIMIT:
        print("error: over the device call's limit; carry fewer frames", file=sys.stderr)
    return 1 if missing or total > CARRY_LIMIT else 0


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _read_lines(path: str) -> list:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.startswith("{")]
    except (OSError, ValueError):
        return []


def summary(args) -> int:
    """summary.json: environment, step results, build time, tests, training, speed, memory."""
    work = args.work
    steps = []
    if os.path.exists(os.path.join(work, "steps.tsv")):
        with open(os.path.join(work, "steps.tsv"), encoding="utf-8") as handle:
            for line in handle:
                name, rc, seconds = line.split("\t")
                steps.append({"step": name, "rc": int(rc), "s": float(seconds)})
    pytest_line = None
    try:
        with open(os.path.join(work, "logs", "pytest.log"), encoding="utf-8") as handle:
            pytest_line = ([ln.strip() for ln in handle if re.search(r"\b(passed|failed|skipped|error)", ln)]
                           or [None])[-1]
    except OSError:
        pass
    train = _read_json(os.path.join(work, "train_summary.json")) or {}
    if not train:  # stopped before its summary: the held-out curve it printed
        try:
            with open(os.path.join(work, "logs", "train.log"), encoding="utf-8") as handle:
                curve = [json.loads(ln.split(" ", 1)[1]) for ln in handle if ln.startswith("held-out {")]
            train = {"incomplete": True, "curve": curve}
        except (OSError, ValueError):
            pass
    out = {"mode": args.mode, "environment": _read_json(os.path.join(work, "env.json")),
           "steps": steps, "gsplat_build": _read_json(os.path.join(work, "gsplat_build.json")),
           "pytest": pytest_line, "train": train,
           "render_speed": (_read_json(os.path.join(work, "render_speed.json")) or [])
           + (_read_json(os.path.join(work, "render_speed_trained.json")) or []),
           "bench_animate": _read_lines(os.path.join(work, "bench_animate.jsonl"))}
    peaks = [r.get("peak_allocated_gib") for r in out["render_speed"]] + [train.get("peak_allocated_gib")]
    peaks = [p for p in peaks if p is not None]
    out["peak_gpu_allocated_gib"] = max(peaks) if peaks else None
    with open(os.path.join(args.results, "summary.json"), "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=1)
    print("summary:")
    for step in steps:
        print(f"  {step['step']:16s} {'ok' if step['rc'] == 0 else 'FAILED rc ' + str(step['rc']):12s} "
              f"{step['s']:7.1f} s")
    if out["gsplat_build"]:
        print(f"  gsplat JIT build {out['gsplat_build']['build_s']} s")
    print(f"  pytest: {pytest_line}")
    if train:
        final = train.get("final", {})
        print(f"  train: {train.get('steps')} steps in {train.get('train_s')} s "
              f"({train.get('render_backend')}), "
              f"time to {train.get('target_db')} dB: {train.get('time_to_target_s')} s, final held-out PSNR "
              f"{final.get('psnr')}, {final.get('n_gaussians')} Gaussians")
    for row in out["render_speed"]:
        print(f"  render: {row['case']}: {row['n_gaussians']} Gaussians {row['width']}x{row['height']} "
              f"blend+skin+render {row['blend+skin+render pipelined fps']} fps ({row['backend']})")
    print(f"  peak GPU memory (allocated): {out['peak_gpu_allocated_gib']} GiB")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("--json")
    p.set_defaults(run=env)
    p = sub.add_parser("wheels")
    p.add_argument("folder")
    p.set_defaults(run=wheels)
    p = sub.add_parser("gsplat")
    p.add_argument("--build", action="store_true")
    p.add_argument("--json", default=os.devnull)
    p.set_defaults(run=gsplat_step)
    p = sub.add_parser("nvcc-check")
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("names", nargs="*", help="only these sources (e.g. IntersectTile.cu)")
    p.set_defaults(run=nvcc_check)
    p = sub.add_parser("imports")
    p.add_argument("file")
    p.set_defaults(run=imports)
    p = sub.add_parser("sizes")
    p.add_argument("paths", nargs="*")
    p.set_defaults(run=sizes)
    p = sub.add_parser("summary")
    p.add_argument("work")
    p.add_argument("results")
    p.add_argument("--mode", default="device")
    p.set_defaults(run=summary)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
