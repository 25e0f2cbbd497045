"""``python -m backend train``: Stage 2, train a Gaussian blendshape avatar from prepared data.

Writes OUT/checkpoint.pt (resumable), OUT/previews/*.png, OUT/loss.png, OUT/eval/ (report.json
and side-by-side images of held-out frames) and OUT/avatar.npz (the avatar file).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared-data folder (frames/, masks/, tracking.npz)")
    parser.add_argument("--out", required=True, help="output folder for checkpoints and the avatar")
    parser.add_argument("--preset", default="cpu-fast", choices=("cpu-fast", "gpu-paper", "tiny", "oneshot"),
                        help="training preset (default cpu-fast; single-frame data, e.g. from "
                             "`prepare --image`, trains in one-shot mode whatever the preset)")
    parser.add_argument("--iters", type=int, default=None, help="number of iterations (overrides the preset)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--images", default="frames", choices=("frames", "stylized"),
                        help="train on the real or the stylized frames")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--head-model", default=None,
                        help="head model: builtin or a FLAME file (default: what the tracking names)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: one thread when the machine is already "
                             "busy, i.e. load average >= cores - 1, else torch's choice)")
    parser.add_argument("--progressive", action="store_true",
                        help="3DToonify schedule: fit the real frames, then adapt geometry on near-frontal "
                             "stylized frames, then colours on all stylized frames (needs stylized/)")
    parser.add_argument("--frontal-yaw", type=float, default=0.2,
                        help="with --progressive: largest |head yaw| in radians of the geometry phase "
                             "(default 0.2)")


def run(args: argparse.Namespace, progress) -> int:
    import signal

    import torch

    from ..errors import InputError
    from .session import train_and_export

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but this machine has no CUDA GPU; use --device cpu")
    if args.threads < 0:
        raise InputError(f"--threads {args.threads} must be 0 (torch's default) or a positive count")
    threads = args.threads or _auto_threads()
    if threads and device == "cpu":
        torch.set_num_threads(threads)
    if args.progressive:
        overrides = progressive_overrides(args.frontal_yaw)
    else:
        overrides = {"phases": [{"name": "photoreal", "images": args.images}]}
    if args.iters is not None:
        overrides["iterations"] = args.iters
    if args.seed is not None:
        overrides["seed"] = args.seed
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outputs = train_and_export(args.data, args.out, args.preset, overrides, device=device,
                                   resume=args.resume, head_model=args.head_model, progress=progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report = outputs["report"]
    progress.result(f"avatar trained: {report['split']} PSNR {report['psnr']:.2f} dB, "
                    f"SSIM {report['ssim']:.4f}",
                    path=os.path.abspath(outputs["avatar"]), **{"eval": outputs["eval_dir"]})
    return 0


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
    were 2-8x slower than one, docs/BENCHMARKS.md), else 0 (torch's default)."""
    import logging

    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0
    if cores > 1 and load >= cores - 1:
        logging.getLogger("toonsplat").info("load average %.1f on %d cores: training with one thread",
                                            load, cores)
        return 1
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
