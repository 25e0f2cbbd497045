"""``python -m backend render`` (reenactment video) and ``python -m backend export`` (3DGS PLY).

    python -m backend render --avatar A.npz --tracking T.npz --out video.mp4 [--size 512]
    python -m backend export --avatar A.npz --out head.ply [--tracking T.npz --frame 10]
"""

from __future__ import annotations

import argparse
import os


def add_arguments_for(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--avatar", required=True, help="avatar file (.npz) written by train")
    if name == "render":
        parser.add_argument("--tracking", required=True,
                            help="tracking file driving the avatar (any subject: cross-identity works)")
        parser.add_argument("--out", required=True, help="output video (.mp4)")
        parser.add_argument("--size", type=int, default=None, help="longer image side (default: tracking's)")
    else:
        parser.add_argument("--out", required=True, help="output 3DGS PLY file")
        parser.add_argument("--tracking", default=None, help="pose the avatar with this tracking file")
        parser.add_argument("--frame", type=int, default=0, help="frame of --tracking to export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments_for("export", parser)


def run(args: argparse.Namespace, progress) -> int:
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from . import reenact

    avatar = avatar_format.read(args.avatar)
    tracking = tracking_format.read(args.tracking) if args.tracking else None
    if tracking is not None:
        reenact.check_compatible(avatar, tracking, args.tracking)
    if args.command == "render":
        progress.stage("render", f"{tracking.n_frames} frames", total=tracking.n_frames)
        count = reenact.render_video(avatar, tracking, args.out, size=args.size, progress=progress)
        progress.result(f"rendered {count} frames", path=os.path.abspath(args.out))
        return 0
    from .ply import write_ply

    arrays = reenact.frame_ply_arrays(avatar, tracking, args.frame)
    write_ply(args.out, **arrays)
    what = "neutral avatar" if tracking is None else f"frame {args.frame}"
    progress.result(f"3DGS PLY of the {what}: {len(arrays['means'])} Gaussians",
                    path=os.path.abspath(args.out))
    return 0
