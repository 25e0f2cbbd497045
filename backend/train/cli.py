"""``python -m backend train``: Stage 2, train a Gaussian blendshape avatar from prepared data.

Writes OUT/checkpoint.pt (resumable), OUT/previews/*.png, OUT/loss.png, OUT/eval/ (report.json
and side-by-side images of held-out frames) and OUT/avatar.npz (the avatar file).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..formats.options import TrainOptions, add_arguments

    add_arguments(parser, TrainOptions)


def run(args: argparse.Namespace, progress) -> int:
    from ..formats.options import TrainOptions, from_args

    train(from_args(TrainOptions, args), progress)
    return 0


def resolve_preset(preset: str, device: str) -> str:
    """``default`` is gpu-paper where training runs on CUDA, cpu-fast elsewhere."""
    if preset != "default":
        return preset
    import torch

    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "gpu-paper" if cuda else "cpu-fast"


def train(options, progress) -> dict:
    """Train on ``options.data`` into ``options.out`` (a ``TrainOptions``); returns the outputs
    (avatar path, evaluation folder and report)."""
    import signal

    import torch

    from ..errors import InputError
    from .session import train_and_export

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but this machine has no CUDA GPU; use --device cpu")
    if options.threads < 0:
        raise InputError(f"--threads {options.threads} must be 0 (torch's default) or a positive count")
    threads = options.threads or _auto_threads()
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    overrides = training_overrides(options)
    preset = resolve_preset(options.preset, options.device)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outputs = train_and_export(options.data, options.out, preset, overrides, device=device,
                                   resume=options.resume, head_model=options.head_model,
                                   progress=progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = outputs["report"]
    progress.result(f"avatar trained: {report['split']} PSNR {report['psnr']:.2f} dB, "
                    f"SSIM {report['ssim']:.4f}",
                    path=os.path.abspath(outputs["avatar"]), tracking=os.path.abspath(outputs["tracking"]),
                    **{"eval": outputs["eval_dir"]})
    return outputs


def training_overrides(options) -> dict:
    """The preset overrides a ``TrainOptions`` asks for (``make_config``'s nested dicts)."""
    from ..errors import InputError

    if options.progressive:
        overrides = progressive_overrides(options.frontal_yaw)
    else:
        overrides = {"phases": [{"name": "photoreal", "images": options.images}]}
    if options.iters is not None:
        overrides["iterations"] = options.iters
    if options.seed is not None:
        overrides["seed"] = options.seed
    if options.novel_prior is not None:
        if not options.novel_prior >= 0:
            raise InputError(f"--novel-prior {options.novel_prior} must be 0 (off) or a positive weight")
        overrides["novel"] = {"weight": float(options.novel_prior)}
    if options.register_at is not None:
        if not 0 <= options.register_at < 1:
            raise InputError(f"--register-at {options.register_at} must be 0 (off) or a share of "
                             "the run below 1, e.g. 0.5")
        overrides["register"] = {"at": float(options.register_at)}
    return overrides


def progressive_overrides(frontal_yaw: float = 0.2, fractions=(0.5, 0.3, 0.2)) -> dict:
    """Training overrides of the progressive (3DToonify) schedule.

    Phase 1 fits everything on the real frames; phase 2 adapts geometry (B0 positions, scales,
    rotations, opacities and their blendshape deltas, not colours) on stylized frames with
    |yaw| < ``frontal_yaw``; phase 3 adapts colours only on all stylized frames. Densification
    stops with phase 1, so later phases change properties, never the set of Gaussians.
    """
    from ..errors import InputError

    if not 0 < frontal_yaw <= 3.2:
        raise InputError(f"--frontal-yaw {frontal_yaw} must be a yaw in radians in (0, 3.2]")
    return {
        "phases": [
            {"name": "photoreal", "fraction": fractions[0], "images": "frames"},
            {"name": "geometry", "fraction": fractions[1], "images": "stylized", "max_abs_yaw": frontal_yaw,
             "trainable": ["geometry", "blendshape_geometry"], "densify": False},
            {"name": "texture", "fraction": fractions[2], "images": "stylized",
             "trainable": ["texture", "blendshape_texture"], "densify": False},
        ],
    }


def _auto_threads() -> int:
    """1 on a busy machine (parallel regions then wait for descheduled siblings and two threads
    were 2-8x slower than one, docs/BENCHMARKS.md), else 0 (torch's default). Busy: other
    processes keep ``cores - 1`` cores running now; the load average alone would count the
    build's own earlier stages, which just kept both cores busy."""
    import logging

    cores = os.cpu_count() or 1
    load = _others_running()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            return 0
    if cores > 1 and load >= cores - 1:
        logging.getLogger("toonsplat").info("load average %.1f on %d cores: training with one thread",
                                            load, cores)
        return 1
    return 0


def _others_running(samples: int = 5) -> float | None:
    """Runnable tasks other than this one, the median of a few readings of /proc/loadavg over
    half a second; None where there is no /proc."""
    import statistics
    import time

    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as handle:
                running = int(handle.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(running - 1)
        time.sleep(0.1)
    return float(statistics.median(counts))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
