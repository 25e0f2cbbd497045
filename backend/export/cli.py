"""``python -m backend render`` (reenactment video, turntable) and ``python -m backend export``
(3DGS PLY).

    python -m backend render --avatar A.npz --tracking T.npz --out video.mp4 [--size 512]
    python -m backend render --avatar A.npz --orbit [--tracking T.npz --frame N] --out turntable.mp4
    python -m backend export --avatar A.npz --out head.ply [--tracking T.npz --frame 10]
"""

from __future__ import annotations

import argparse
import os


def add_arguments_for(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--avatar", required=True, help="avatar file (.npz) written by train")
    if name == "render":
        parser.add_argument("--tracking", default=None,
                            help="tracking file driving the avatar (any subject: cross-identity "
                                 "works); with --orbit optional: frame N's expression and camera")
        parser.add_argument("--out", required=True,
                            help="output video (.mp4); with --orbit .mp4 (video + strip .png + "
                                 "coverage .json beside it) or .png (strip + .json)")
        parser.add_argument("--size", type=int, default=None, help="longer image side (default: tracking's)")
        parser.add_argument("--orbit", action="store_true",
                            help="a turntable instead: yaw -60..+60 deg around the head, with the "
                                 "expression, jaw and eyes of --frame, and its novel-view coverage")
        parser.add_argument("--frame", type=int, default=0, help="with --orbit: frame of --tracking")
        parser.add_argument("--head-model", default=None,
                            help="with --orbit: the head model the avatar was trained with "
                                 "(default: the tracking's, else the built-in one)")
    else:
        parser.add_argument("--out", required=True, help="output 3DGS PLY file")
        parser.add_argument("--tracking", default=None, help="pose the avatar with this tracking file")
        parser.add_argument("--frame", type=int, default=0, help="frame of --tracking to export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments_for("export", parser)


def run(args: argparse.Namespace, progress) -> int:
    if args.command == "render" and args.orbit:
        render_orbit(args.avatar, args.out, progress, tracking_path=args.tracking, frame=args.frame,
                     size=args.size, head_model=args.head_model)
    elif args.command == "render":
        if not args.tracking:
            from ..errors import InputError

            raise InputError("render needs --tracking FILE to drive the avatar (or --orbit for a "
                             "turntable)")
        render_reenactment(args.avatar, args.tracking, args.out, progress, size=args.size)
    else:
        export_ply(args.avatar, args.out, progress, tracking_path=args.tracking, frame=args.frame)
    return 0


def render_reenactment(avatar_path: str, tracking_path: str, out: str, progress,
                       size: int | None = None, frames=None) -> int:
    """The avatar driven by every frame of a tracking (or the indices ``frames``), as a video;
    returns the frame count."""
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from . import reenact

    avatar = avatar_format.read(avatar_path)
    tracking = tracking_format.read(tracking_path)
    reenact.check_compatible(avatar, tracking, tracking_path)
    total = tracking.n_frames if frames is None else len(frames)
    progress.stage("render", f"{total} frames", total=total)
    count = reenact.render_video(avatar, tracking, out, size=size, progress=progress, frames=frames)
    progress.result(f"rendered {count} frames", path=os.path.abspath(out))
    return count


def render_orbit(avatar_path: str, out: str, progress, tracking_path: str | None = None,
                 frame: int | None = 0, size: int | None = None, head_model: str | None = None,
                 video: bool | None = None) -> dict:
    """A turntable of the avatar (yaw -60..+60 deg) and its coverage at +-45 deg.

    ``out`` ending in .mp4 gets the video, the strip beside it (same name, .png) and the
    coverage (.json); any other ``out`` is the strip PNG, with the .json beside it. Returns the
    coverage report (``backend/export/orbit.py``) with the paths written.
    """
    from ..fileio import write_json
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from .orbit import Orbit, coverage_key, turntable

    avatar = avatar_format.read(avatar_path)
    tracking = tracking_format.read(tracking_path) if tracking_path else None
    stem, extension = os.path.splitext(out)
    video = extension.lower() == ".mp4" if video is None else video
    paths = {"video": out if video else None, "strip": stem + ".png", "json": stem + ".json"}
    orbit = Orbit(avatar, tracking, frame if tracking is not None else None, head_model, size)
    progress.stage("render", f"turntable of {os.path.basename(avatar_path)}")
    report = turntable(orbit, paths["video"], paths["strip"], progress=progress)
    report.update({k: os.path.abspath(v) for k, v in paths.items() if v and k != "json"})
    write_json(paths["json"], report)
    cover = ", ".join(f"{y:+g} deg {report[coverage_key(y)]:.1%} "
                      f"(surface {report[coverage_key(y, 'surface')]:.1%})" for y in report["yaws"])
    progress.result(f"turntable written; coverage {cover}",
                    path=os.path.abspath(paths["video"] or paths["strip"]), coverage=report)
    return report


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
