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
    parser.add_argument("--preset", default="cpu-fast", choices=("cpu-fast", "gpu-paper", "tiny"),
                        help="training preset (default cpu-fast)")
    parser.add_argument("--iters", type=int, default=None, help="number of iterations (overrides the preset)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--images", default="frames", choices=("frames", "stylized"),
                        help="train on the real or the stylized frames")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--head-model", default=None,
                        help="head model: builtin or a FLAME file (default: what the tracking names)")
    parser.add_argument("--seed", type=int, default=None, help="random seed")


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
    progress.result(f"avatar trained: held-out PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f}",
                    path=os.path.abspath(outputs["avatar"]), **{"eval": outputs["eval_dir"]})
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
