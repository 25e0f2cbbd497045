"""``python -m backend synth``: render the synthetic test subject into a prepared-data folder.

Writes DIR/frames/*.png, DIR/masks/*.png, DIR/tracking.npz (exact ground truth), DIR/video.mp4
and DIR/synth.json. Deterministic from --seed.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (prepared-data layout)")
    parser.add_argument("--frames", type=int, default=300, help="number of frames (default 300)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity and performance")
    parser.add_argument("--eye-contact", type=int, default=0, metavar="N",
                        help="the first N frames look into the lens (a gaze calibration for "
                             "prepare --eye-contact 0-<N-1>; default 0)")
    parser.add_argument("--no-video", action="store_true", help="skip the mp4")


def run(args: argparse.Namespace, progress) -> int:
    from ..errors import InputError
    from .render import synthesize

    if args.frames < 2 or args.size < 16:
        raise InputError("--frames must be >= 2 and --size >= 16")
    if not 0 <= args.eye_contact <= args.frames:
        raise InputError(f"--eye-contact must lie in 0..--frames ({args.frames}), not {args.eye_contact}")
    info = synthesize(args.out, n_frames=args.frames, size=args.size, seed=args.seed,
                      video=not args.no_video, eye_contact=args.eye_contact, progress=progress)
    progress.result(f"synthetic subject: {args.frames} frames at {args.size}x{args.size}, "
                    f"last {info['n_test']} held out", path=os.path.abspath(args.out))
    return 0
