"""Bench ``quality``: avatars from real clips and the synthetic subject, built with the defaults.

For each clip (``--clip``, repeatable; default: the real webcam clips in ``../shared/data/real``
next to the repository, when present): ``build`` with the default style, then the same prepared
data trained with ``--style none`` (against the real frames). Rows per clip:

- ``psnr_head`` / ``ssim_head`` (dB / ratio) on the held-out frames, in the head region (the
  person above the neck cut, inside the source frame), against the stylized frames (case
  ``CLIP``) and the real frames (case ``CLIP-style-none``);
- ``coverage_-45`` / ``coverage_45`` (%): the share of the posed head model's silhouette above
  the neck cut where the avatar's alpha is >= 0.9, at -45 and +45 deg of yaw (build's export);
- every stage's seconds, and the end-to-end seconds.

The synthetic subject (case ``synthetic``): 150 frames at 256 px, trained on its exact tracking
with the default preset, against its frames. ``--quick``: the first 4 s of each clip at 256 px
and a short schedule (a smoke test, not the measurement). ``--out DIR`` keeps every build
(turntables, reports) for looking at; by default they go to a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

from ..bench import BenchRecord, cpu_device_name

QUICK_ITERS = 120


def default_clips() -> list[str]:
    """The real clips shipped beside the repository (``../shared/data/real/*.mp4``)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    folder = os.path.join(os.path.dirname(repo), "shared", "data", "real")
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".mp4"))


def run(args) -> Iterator[BenchRecord]:
    from ..errors import InputError

    clips = list(getattr(args, "clip", None) or default_clips())
    missing = [c for c in clips if not os.path.isfile(c)]
    if missing:
        raise InputError(f"clip not found: {', '.join(missing)}; pass --clip with a video file")
    quick = getattr(args, "quick", False)
    keep = getattr(args, "out", None)
    with tempfile.TemporaryDirectory() as scratch:
        root = os.path.abspath(keep) if keep else scratch
        for clip in clips:
            yield from clip_rows(clip, os.path.join(root, _case(clip)), quick)
        yield from synthetic_rows(os.path.join(root, "synthetic"), quick)


def _case(clip: str) -> str:
    return os.path.splitext(os.path.basename(clip))[0]


def clip_rows(clip: str, out: str, quick: bool) -> Iterator[BenchRecord]:
    """Build ``clip`` with the defaults (toon), then train its data with no style."""
    from ..fileio import read_json
    from ..formats.options import BuildOptions, PrepareOptions, TrainOptions
    from ..progress import Progress
    from ..train.cli import train
    from .run import run_build

    device, case = cpu_device_name(), _case(clip)
    prepare = PrepareOptions(video=clip, size=256 if quick else 0)
    options = BuildOptions(out=out, prepare=prepare, frame_end=100 if quick else -1,
                           train=TrainOptions(iters=QUICK_ITERS if quick else None))
    started = time.monotonic()
    result = run_build(options, progress_mode="quiet")
    total = time.monotonic() - started
    report = read_json(os.path.join(result["out"], "report.json"), "build report")
    for stage in report["stages"]:
        yield BenchRecord("quality", case, f"{stage['name']} seconds", stage["seconds"], "s", device)
        metrics = stage.get("metrics", {})
        if stage["name"] == "train":
            yield from _image_rows(case, metrics, device)
        for key, value in metrics.items():
            if key.startswith(("coverage_", "surface_")):
                yield BenchRecord("quality", case, key, 100 * value, "%", device)
    yield BenchRecord("quality", case, "end-to-end seconds", total, "s", device)
    plain = train(TrainOptions(data=os.path.join(result["out"], "data"),
                               out=os.path.join(out, "train-style-none"), images="frames",
                               iters=QUICK_ITERS if quick else None), Progress("quiet"))
    yield from _image_rows(f"{case}-style-none", plain["report"], device)


def synthetic_rows(out: str, quick: bool) -> Iterator[BenchRecord]:
    """The synthetic subject, trained on its exact tracking against its frames."""
    from ..formats.options import TrainOptions
    from ..progress import Progress
    from ..synth.render import synthesize
    from ..train.cli import train

    device = cpu_device_name()
    data = os.path.join(out, "data")
    if not os.path.exists(os.path.join(data, "tracking.npz")):
        synthesize(data, n_frames=40 if quick else 150, size=128 if quick else 256, video=False)
    started = time.monotonic()
    outputs = train(TrainOptions(data=data, out=os.path.join(out, "train"),
                                 iters=QUICK_ITERS if quick else None), Progress("quiet"))
    yield from _image_rows("synthetic", outputs["report"], device)
    yield BenchRecord("quality", "synthetic", "train seconds", time.monotonic() - started, "s",
                      device)


def _image_rows(case: str, report: dict, device: str) -> Iterator[BenchRecord]:
    for key, unit in (("psnr_head", "dB"), ("ssim_head", "ratio"), ("psnr", "dB")):
        if key in report:
            yield BenchRecord("quality", case, key, report[key], unit, device)
