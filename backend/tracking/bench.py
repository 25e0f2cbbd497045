"""Bench ``track``: prepare end to end (decode, crop, landmarks, masks, fit, write) at 512, in fps.

The input is a real video the bench writes: the astronaut photo (scikit-image) sliding inside a
640 x 480 frame. Rows: ``end-to-end`` (frames / total seconds of ``prepare``), ``landmarks``
(FaceMesh alone on 512 crops) and ``fit`` (the batched fit alone, frames / seconds).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from ..bench import BenchRecord, cpu_device_name


def _frames(count: int) -> list[np.ndarray]:
    from skimage import data

    photo = data.astronaut()
    frames = []
    for i in range(count):
        canvas = np.full((480, 640, 3), 90, np.uint8)
        x = 40 + int(40 * np.sin(i / 10))
        canvas[:, x:x + 512] = photo[:480]
        frames.append(canvas)
    return frames


def _write_video(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def run(args) -> Iterator[BenchRecord]:
    from ..ingest.prepare import PrepareOptions, prepare
    from ..progress import Progress
    from ..tracking.landmarks import FaceMeshDetector

    device = cpu_device_name()
    count = 60 if getattr(args, "quick", False) else 300
    frames = _frames(count)
    with tempfile.TemporaryDirectory() as folder:
        video = os.path.join(folder, "bench.mp4")
        _write_video(video, frames)
        report = prepare(PrepareOptions(video=video, out=os.path.join(folder, "out"), qa=False),
                         Progress("quiet"))
        yield BenchRecord("track", "512", "end-to-end", report["fps_end_to_end"], "fps", device)
        yield BenchRecord("track", "512", "fit", count / report["timings"]["fit_s"], "fps", device)
    with FaceMeshDetector(video=True) as detector:
        crops = [np.ascontiguousarray(f[:, 64:576][:480]) for f in frames[:60]]
        crops = [np.pad(c, ((16, 16), (0, 0), (0, 0)), mode="edge") for c in crops]
        detector(crops[0])
        started = time.perf_counter()
        for image in crops:
            detector(image)
        yield BenchRecord("track", "512", "landmarks", len(crops) / (time.perf_counter() - started),
                          "fps", device)
