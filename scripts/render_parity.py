"""Render a tracked frame of an avatar in Blender and with the backend, side by side, and print
the head-region PSNR between the two: the check that the Blender import shows what was trained.

    python scripts/render_parity.py --avatar A.npz --tracking T.npz --out SIDE.png [--frame N]

Blender's side is ``scripts/build_avatar.py --avatar --tracking --render`` (Cycles, the tracking's
camera of the frame) run with this interpreter, which needs the ``bpy`` module (the demo and test
venvs have it); the backend's side is ``backend.export.reenact.render_tracked_frame``. ``--frame``
is a 0-based tracking frame (default: the first held-out frame of the build). The PNG holds
Blender | backend | 4x their difference; the PSNR is over the backend's alpha > 0.5 (the head).
Prints one JSON line in the bench protocol (``metric`` ``parity_psnr_head``, dB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKGROUND = 0.3  # display grey behind the head, both renderers


def backend_render(avatar_path: str, tracking_path: str, index: int, size: int,
                   background: float = BACKGROUND):
    """The backend's render of frame ``index``: (H, W, 3) rgb and (H, W) alpha in [0, 1]."""
    from backend.export.avatar_file import model_from_avatar
    from backend.export.reenact import render_tracked_frame
    from backend.formats import avatar, tracking

    data, track = avatar.read(avatar_path), tracking.read(tracking_path)
    model, _ = model_from_avatar(data)
    out = render_tracked_frame(model, data, track, index, size / max(int(v) for v in track.image_size),
                               (background,) * 3)
    return out.rgb[0].clamp(0, 1).numpy().astype(np.float64), out.alpha[0, ..., 0].numpy()


def blender_render(avatar_path: str, tracking_path: str, index: int, size: int, png: str,
                   python: str = sys.executable, env: dict | None = None,
                   background: float = BACKGROUND) -> np.ndarray:
    """Blender's Cycles render of frame ``index`` through the batch script: (H, W, 3) in [0, 1]."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [python, os.path.join(ROOT, "scripts", "build_avatar.py"), "--avatar", avatar_path,
             "--tracking", tracking_path, "--out", os.path.join(folder, "avatar.blend"),
             "--render", png, "--resolution", str(size), "--frame", str(index + 1),
             "--background", str(background)], capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the Blender render failed (exit {result.returncode}):\n"
                           f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
    return np.asarray(Image.open(png).convert("RGB"), np.float64) / 255


def head_psnr(blender: np.ndarray, backend: np.ndarray, mask: np.ndarray) -> float:
    error = np.mean((blender - backend)[mask] ** 2)
    return float(10 * np.log10(1.0 / max(error, 1e-12)))


def side_by_side(path, blender: np.ndarray, backend: np.ndarray) -> None:
    from PIL import Image

    difference = np.clip(4 * np.abs(blender - backend), 0, 1)
    row = np.concatenate([blender, backend, difference], axis=1)
    Image.fromarray((row * 255 + 0.5).astype(np.uint8)).save(path)


def compare(avatar_path: str, tracking_path: str, index: int, size: int, out_png: str) -> float:
    """Head-region PSNR (dB) of Blender's render against the backend's; writes the side by side."""
    with tempfile.TemporaryDirectory() as folder:
        blender = blender_render(avatar_path, tracking_path, index, size,
                                 os.path.join(folder, "blender.png"))
    backend, alpha = backend_render(avatar_path, tracking_path, index, size)
    side_by_side(out_png, blender, backend)
    head = alpha > 0.5
    if not head.any():
        raise RuntimeError(f"frame {index}: the backend's render shows no head to compare")
    return head_psnr(blender, backend, head)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="render_parity.py", description=__doc__.split("\n")[0])
    parser.add_argument("--avatar", required=True, help="avatar file (.npz)")
    parser.add_argument("--tracking", required=True, help="tracking file (.npz) with the cameras")
    parser.add_argument("--out", required=True, help="side-by-side PNG to write")
    parser.add_argument("--frame", type=int, default=None, help="0-based frame (default: the "
                        "first held-out frame)")
    parser.add_argument("--size", type=int, default=256, help="longer image side (default 256)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    from backend.errors import ToonSplatError
    from backend.formats import avatar, tracking
    from backend.train.data import split_frames

    try:
        avatar.read(args.avatar)  # a clear error for a missing or unreadable file, before Blender
        n_frames = tracking.read(args.tracking).n_frames
        index = int(split_frames(n_frames)[1][0]) if args.frame is None else args.frame
        if not 0 <= index < n_frames:
            raise ToonSplatError(f"--frame {index} is outside the tracking's 0..{n_frames - 1}")
        psnr = compare(args.avatar, args.tracking, index, args.size, args.out)
    except (ToonSplatError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"bench": "blender", "case": f"{os.path.basename(args.avatar)} frame {index}",
                      "metric": "parity_psnr_head", "value": round(psnr, 2), "unit": "dB"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
