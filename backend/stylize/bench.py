"""Bench ``stylize``: frames per second of the built-in styles on a 512 x 512 face video.

Cases ``toon@512`` and ``exemplar@512``: a synthetic face drifting slowly with sensor noise is
streamed through the stylizer (temporal stabilization included), frames made beforehand; the
value is frames / seconds of the best of three passes (metric ``throughput``). Because the
development machines are shared, ``throughput_cpu`` also reports frames / CPU seconds of this
process (all its threads together): the rate one otherwise idle core would reach.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from ..bench import BenchRecord, cpu_device_name


def run(args) -> Iterator[BenchRecord]:
    from .exemplar import ExemplarStylizer
    from .synthetic import exemplar_image, face_clip
    from .toon import ToonStylizer

    n_frames = 15 if getattr(args, "quick", False) else 60
    frames = list(face_clip(n_frames, size=512, noise=2.0, motion_px=12.0))
    device = cpu_device_name()
    for case, stylizer in (("toon@512", ToonStylizer()),
                           ("exemplar@512", ExemplarStylizer(exemplar_image(), source="synthetic"))):
        wall_fps, cpu_fps = _best_fps(stylizer, frames)
        yield BenchRecord("stylize", case, "throughput", wall_fps, "fps", device)
        yield BenchRecord("stylize", case, "throughput_cpu", cpu_fps, "fps", device)


def _best_fps(stylizer, frames, passes: int = 3) -> tuple[float, float]:
    """Best wall-clock and CPU-time frame rates over ``passes`` streams of ``frames``."""
    for _ in stylizer.stream(frames[:3]):   # warm-up: OpenCV allocations, tables
        pass
    best_wall = best_cpu = 0.0
    for _ in range(passes):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in stylizer.stream(frames):
            pass
        best_wall = max(best_wall, len(frames) / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, len(frames) / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu
