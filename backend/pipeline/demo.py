"""``python -m backend demo``: the whole product on built-in inputs, no downloads, no licences.

1. Inputs: a real photograph shipped inside a registry package (``skimage.data.astronaut()``)
   and the synthetic subject's video (``synth``).
2. ``build`` on each: the photo in one-shot mode, the video through every stage.
3. A performance: the synthetic subject's tracked expressions, jaw, head and gaze drive both
   avatars (for the photo, that is cross-identity reenactment): a short video per subject.
4. Blender: ``scripts/build_avatar.py`` with the ``bpy`` module imports each avatar with the
   performance keyframed, and writes a .blend and a rendered PNG.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time

from ..errors import NotAvailableError, ToonSplatError
from ..fileio import ensure_writable_folder, write_image
from ..formats.options import BuildOptions, PrepareOptions, TrainOptions
from ..formats.prepared import PreparedData
from .run import run_build

log = logging.getLogger("toonsplat")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="results folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="working resolution (default 256)")
    parser.add_argument("--frames", type=int, default=90, help="synthetic video frames (default 90)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations per subject "
                        "(default: a short schedule that keeps the demo under 20 minutes)")
    parser.add_argument("--subjects", default="photo,video",
                        help="which subjects to run: photo, video or both (default)")
    parser.add_argument("--no-blender", action="store_true", help="skip the Blender import and render")


def run(args: argparse.Namespace, progress) -> int:
    start = time.monotonic()
    out = os.path.abspath(ensure_writable_folder(args.out))
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    inputs = ensure_writable_folder(os.path.join(out, "inputs"))
    progress.stage("demo", "synthetic subject (the performance, and the video subject's input)")
    synthetic = os.path.join(inputs, "synthetic")
    if not os.path.exists(os.path.join(synthetic, "video.mp4")):
        from ..synth.render import synthesize

        synthesize(synthetic, n_frames=args.frames, size=args.size, progress=progress)
    performance = PreparedData(synthetic).tracking
    results = {}
    if "photo" in subjects:
        photo = os.path.join(inputs, "astronaut.png")
        write_image(photo, _astronaut())
        results["photo"] = _subject("photo", PrepareOptions(image=photo), out, args, performance,
                                    progress)
    if "video" in subjects:
        results["video"] = _subject("video", PrepareOptions(
            video=os.path.join(synthetic, "video.mp4")), out, args, performance, progress)
    minutes = (time.monotonic() - start) / 60
    for name, paths in results.items():
        for kind, path in paths.items():
            print(f"{name:>6} {kind:<12} {path}")
    progress.result(f"demo finished in {minutes:.1f} min", path=out,
                    **{f"{n}_{k}": p for n, paths in results.items() for k, p in paths.items()})
    return 0


def _astronaut():
    try:
        from skimage import data
    except ImportError as exc:
        raise NotAvailableError("the demo's photo comes from scikit-image (skimage.data.astronaut); "
                                "run ./scripts/demo.sh, which installs it") from exc
    return data.astronaut()


def _subject(name: str, source: PrepareOptions, out: str, args, performance: str,
             progress) -> dict:
    from ..export.cli import render_reenactment

    folder = os.path.join(out, name)
    source.size = args.size
    options = BuildOptions(out=folder, prepare=source, train=TrainOptions(iters=_iters(name, args)))
    built = run_build(options, progress_mode=progress.mode)
    video = os.path.join(folder, "performance.mp4")
    render_reenactment(built["avatar"], performance, video, progress)
    paths = {"avatar": built["avatar"], "report": built["report_html"], "performance": video}
    if not args.no_blender:
        paths.update(_blender(folder, built["avatar"], performance, progress))
    return paths


def _iters(name: str, args) -> int:
    if args.iters:
        return args.iters
    return 400 if name == "photo" else 2000


def _blender(folder: str, avatar_path: str, performance: str, progress) -> dict:
    """Import into Blender with the bpy module (a subprocess), keyframe, save, render."""
    blend, picture = os.path.join(folder, "avatar.blend"), os.path.join(folder, "avatar.png")
    progress.stage("blender", f"import into Blender: {blend}")
    command = [sys.executable, os.path.join(REPO, "scripts", "build_avatar.py"), "--avatar",
               avatar_path, "--tracking", performance, "--out", blend, "--render", picture,
               "--frame", "20"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ToonSplatError(f"the Blender import failed ({' / '.join(last)}); is bpy installed? "
                             "./scripts/demo.sh installs it")
    return {"blend": blend, "render": picture}
