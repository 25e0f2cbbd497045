"""A style sheet of built avatars: input | stylized | avatar | avatar with toon proportions,
each avatar at 0 and 30 degrees of yaw, one row per build folder.

    .venv/bin/python scripts/style_sheet.py --build build/cap13 --build build/me \
        --proportions toon:1.0 --out sheet.png [--frame N] [--height 256]

A build folder is what ``python -m backend build --out`` makes (data/frames, data/stylized,
data/tracking.npz, avatar.npz or train/avatar.npz). The avatar is posed with the expression, jaw
and eyes of frame N (default: the turntable's frame from turntable.json, else the middle frame)
and seen by the orbit camera of ``python -m backend render --orbit``; the proportions are applied
to a copy in memory, the build folder is not changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

YAWS = (0.0, 30.0)


def pick_frame(build: str, frame: int | None, n_frames: int) -> int:
    """The frame to show: ``frame`` if given, else the turntable's, else the middle one."""
    if frame is not None:
        return min(max(frame, 0), n_frames - 1)
    turntable = os.path.join(build, "turntable.json")
    if os.path.isfile(turntable):
        with open(turntable, encoding="utf-8") as handle:
            saved = json.load(handle).get("frame")
        if saved is not None:
            return int(saved)
    return n_frames // 2


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    width = max(1, int(round(image.shape[1] * height / image.shape[0])))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def avatar_views(avatar, tracking, frame: int, size: int) -> list[np.ndarray]:
    from backend.export.orbit import Orbit, to_uint8

    orbit = Orbit(avatar, tracking, frame, None, size)
    return [to_uint8(orbit.render(yaw).rgb[0]) for yaw in YAWS]


def sheet_row(build: str, spec: str, frame: int | None, height: int) -> np.ndarray:
    """One build's row: input, stylized, avatar at 0/30 deg, proportioned avatar at 0/30 deg."""
    from backend.fileio import read_png
    from backend.formats import avatar as avatar_format
    from backend.formats import tracking as tracking_format
    from backend.formats.prepared import FRAMES, STYLIZED, PreparedData
    from backend.headmodel.proportions import apply_proportions

    data = PreparedData(os.path.join(build, "data"))
    tracking = tracking_format.read(data.tracking)
    index = pick_frame(build, frame, len(tracking.frame_ids))
    name = data.names(FRAMES)[index]
    images = [read_png(os.path.join(data.folder(FRAMES), name))]
    stylized = os.path.join(data.folder(STYLIZED), name)
    images.append(read_png(stylized) if os.path.isfile(stylized) else np.zeros_like(images[0]))
    avatar_path = os.path.join(build, "avatar.npz")
    if not os.path.isfile(avatar_path):  # a train-only folder (bench quality's synthetic subject)
        avatar_path = os.path.join(build, "train", "avatar.npz")
    avatar = avatar_format.read(avatar_path)
    images += avatar_views(avatar, tracking, index, height)
    images += avatar_views(apply_proportions(avatar, spec), tracking, index, height)
    return np.concatenate([fit_height(image, height) for image in images], axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", required=True, help="a build folder (repeat)")
    parser.add_argument("--proportions", default="toon:1.0", help="PRESET[:STRENGTH]")
    parser.add_argument("--frame", type=int, default=None, help="the tracking frame to pose")
    parser.add_argument("--height", type=int, default=256, help="row height in pixels")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    from backend.fileio import write_png

    rows = [sheet_row(build, args.proportions, args.frame, args.height) for build in args.build]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    write_png(args.out, np.concatenate(rows, axis=0))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
