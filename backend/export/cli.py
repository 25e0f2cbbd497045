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
    if args.command == "render":
        render_reenactment(args.avatar, args.tracking, args.out, progress, size=args.size)
    else:
        export_ply(args.avatar, args.out, progress, tracking_path=args.tracking, frame=args.frame)
    return 0


def render_reenactment(avatar_path: str, tracking_path: str, out: str, progress,
                       size: int | None = None) -> int:
    """The avatar driven by every frame of a tracking, as a video; returns the frame count."""
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from . import reenact

    avatar = avatar_format.read(avatar_path)
    tracking = tracking_format.read(tracking_path)
    reenact.check_compatible(avatar, tracking, tracking_path)
    progress.stage("render", f"{tracking.n_frames} frames", total=tracking.n_frames)
    count = reenact.render_video(avatar, tracking, out, size=size, progress=progress)
    progress.result(f"rendered {count} frames", path=os.path.abspath(out))
    return count


def export_ply(avatar_path: str, out: str, progress, tracking_path: str | None = None,
               frame: int = 0) -> None:
    """The avatar as a standard 3DGS PLY: neutral, or posed by one frame of a tracking."""
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from . import reenact
    from .ply import write_ply

    avatar = avatar_format.read(avatar_path)
    tracking = tracking_format.read(tracking_path) if tracking_path else None
    if tracking is not None:
        reenact.check_compatible(avatar, tracking, tracking_path)
    arrays = reenact.frame_ply_arrays(avatar, tracking, frame)
    write_ply(out, **arrays)
    what = "neutral avatar" if tracking is None else f"frame {frame}"
    progress.result(f"3DGS PLY of the {what}: {len(arrays['means'])} Gaussians",
                    path=os.path.abspath(out))
