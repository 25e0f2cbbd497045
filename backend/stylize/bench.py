"""Bench ``stylize``: frames per second of the built-in styles, and on real clips, what they keep.

Without ``--clip``: cases ``toon@512``, ``exemplar@512`` and ``cel@512``: a synthetic face
drifting slowly with sensor noise is streamed through the stylizer (temporal stabilization
included), frames made beforehand; ``cel`` gets landmarks placed on the drawn face (eye,
iris, brow and lip outlines where the drawing has them). The value is frames / seconds of the
best of three passes (metric ``throughput``). Because the development machines are shared,
``throughput_cpu`` also reports frames / CPU seconds of this process (all its threads
together): the rate one otherwise idle core would reach.

With ``--clip VIDEO`` (repeatable): each clip is prepared (``python -m backend prepare`` in a
child process, into ``--out DIR/<clip name>`` when given and reused if it is already there,
else a temporary folder), then stylized by ``stylize_folder`` with the default style and with
``toon``. Case ``<clip>/<style>``, metrics: ``eye_contrast_ratio`` (docs/STYLIZE.md),
``itf_db_input``, ``itf_db_stylized``, ``isi_input``, ``isi_stylized``, ``stage_fps`` (frames /
seconds of the whole stage: read, stylize, write, measure), ``stage_cpu_fps`` (frames per
CPU-second of the process, all threads: the fair number on a shared machine) and
``filter_fps`` (the stylizer alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from ..bench import BenchRecord, cpu_device_name
from ..errors import InputError

CLIP_STYLES = ("cel", "toon")   # the default style first, then the one it replaced


def run(args) -> Iterator[BenchRecord]:
    clips = list(getattr(args, "clip", None) or [])
    if clips:
        yield from run_clips(clips, getattr(args, "out", None))
        return
    yield from run_synthetic(getattr(args, "quick", False))


def run_synthetic(quick: bool) -> Iterator[BenchRecord]:
    from .cel import CelStylizer
    from .exemplar import ExemplarStylizer
    from .synthetic import drawn_face_landmarks, exemplar_image, face_clip
    from .toon import ToonStylizer

    n_frames = 15 if quick else 60
    motion = 12.0
    frames = list(face_clip(n_frames, size=512, noise=2.0, motion_px=motion))
    contexts = [drawn_face_landmarks(512, index / 25.0, motion) for index in range(n_frames)]
    device = cpu_device_name()
    for case, stylizer in (("toon@512", ToonStylizer()),
                           ("exemplar@512", ExemplarStylizer(exemplar_image(), source="synthetic")),
                           ("cel@512", CelStylizer())):
        wall_fps, cpu_fps = _best_fps(stylizer, frames, contexts if stylizer.uses_context else None)
        yield BenchRecord("stylize", case, "throughput", wall_fps, "fps", device)
        yield BenchRecord("stylize", case, "throughput_cpu", cpu_fps, "fps", device)


def _best_fps(stylizer, frames, contexts=None, passes: int = 3) -> tuple[float, float]:
    """Best wall-clock and CPU-time frame rates over ``passes`` streams of ``frames``."""
    if contexts is not None:
        stylizer.fit_clip(list(zip(frames[::5], contexts[::5])))
    for _ in stylizer.stream(frames[:3], contexts[:3] if contexts else None):   # warm-up
        pass
    best_wall = best_cpu = 0.0
    for _ in range(passes):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in stylizer.stream(frames, contexts):
            pass
        best_wall = max(best_wall, len(frames) / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, len(frames) / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu


def run_clips(clips: list[str], out: str | None) -> Iterator[BenchRecord]:
    from .pipeline import stylize_folder
    from .styles import builtin_stylizer

    missing = [clip for clip in clips if not os.path.isfile(clip)]
    if missing:
        raise InputError(f"clip not found: {', '.join(missing)}; pass --clip with a video file")
    device = cpu_device_name()
    temporary = None if out else tempfile.mkdtemp(prefix="toonsplat-bench-stylize-")
    try:
        for clip in clips:
            name = os.path.splitext(os.path.basename(clip))[0]
            data = prepare_clip(clip, os.path.join(out or temporary, name))
            for style in CLIP_STYLES:
                report = stylize_folder(data, builtin_stylizer(style), style=style)
                for metric, value, unit in clip_metrics(report):
                    if value is not None:
                        yield BenchRecord("stylize", f"{name}/{style}", metric, value, unit, device)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def prepare_clip(clip: str, folder: str) -> str:
    """``folder`` holding the prepared clip: prepared now by ``python -m backend prepare`` in a
    child process (stylize does not import the ingest stage), or as found when complete."""
    if os.path.isfile(os.path.join(folder, "tracking.npz")) and \
            os.path.isfile(os.path.join(folder, "landmarks.npz")):
        return folder
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "backend", "prepare", "--video", clip,
                           "--out", folder, "--progress", "quiet"], cwd=package_parent,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"prepare failed on {clip}: {done.stderr.strip()[-500:]}")
    return folder


def clip_metrics(report: dict) -> list[tuple[str, float | None, str]]:
    """(metric, value, unit) of one stylize.json report, as the clip bench prints them."""
    metrics, timing = report["metrics"], report["timing"]
    return [("eye_contrast_ratio", metrics["eyes"]["eye_contrast_ratio"], "ratio"),
            ("itf_db_input", metrics["input"]["itf_db"], "dB"),
            ("itf_db_stylized", metrics["stylized"]["itf_db"], "dB"),
            ("isi_input", metrics["input"]["isi"], "ratio"),
            ("isi_stylized", metrics["stylized"]["isi"], "ratio"),
            ("stage_fps", timing["stage_fps"], "fps"),
            ("stage_cpu_fps", timing.get("stage_cpu_fps"), "fps"),
            ("filter_fps", timing["stylize_fps"], "fps")]

