"""Bench ``track``: prepare end to end (decode, crop, landmarks, masks, fit, write) at 512, in fps.

The input is a real video the bench writes: the astronaut photo (scikit-image) sliding inside a
640 x 480 frame (case ``512``, 300 frames) or, scaled to 1024 px, inside a 1920 x 1080 frame
(case ``512-from-1080p``, 150 frames). Rows: ``end-to-end`` (frames / wall seconds of
``prepare``), ``end-to-end-cpu`` (frames / CPU seconds of this process: what a machine shared
with other work still guarantees, since the wall time of an idle one is at most that),
``fit`` (the batched fit alone, wall) and ``landmarks`` (FaceMesh alone on 512 crops).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import numpy as np

from ..bench import BenchRecord, cpu_device_name


def _frames(count: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """The astronaut sliding sideways. For a 1080p frame the head and shoulders part of the photo
    is scaled to the frame height (mediapipe's face detector needs a face that fills a good part
    of the frame, as in a phone video)."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    if height > 480:
        photo = cv2.resize(photo[:320, 100:420], (height, height), interpolation=cv2.INTER_LINEAR)
    side = photo.shape[1]
    frames = []
    for i in range(count):
        canvas = np.full((height, width, 3), 90, np.uint8)
        x = (width - side) // 2 - 24 + int(side * 40 / 512 * np.sin(i / 10))
        rows = min(side, height)
        canvas[:rows, x:x + side] = photo[:rows]
        frames.append(canvas)
    return frames


def _write_video(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def run(args) -> Iterator[BenchRecord]:
    from ..ingest.landmarks import FaceMeshDetector

    device = cpu_device_name()
    quick = getattr(args, "quick", False)
    cases = (("512", 640, 480, 60 if quick else 300),
             ("512-from-1080p", 1920, 1080, 30 if quick else 150))
    for case, width, height, count in cases:
        yield from _prepare_case(case, _frames(count, width, height), device)
    frames = _frames(60)
    with FaceMeshDetector(video=True) as detector:
        crops = [np.ascontiguousarray(f[:, 64:576][:480]) for f in frames]
        crops = [np.pad(c, ((16, 16), (0, 0), (0, 0)), mode="edge") for c in crops]
        detector(crops[0])
        started = time.perf_counter()
        for image in crops:
            detector(image)
        yield BenchRecord("track", "512", "landmarks", len(crops) / (time.perf_counter() - started),
                          "fps", device)


def _prepare_case(case: str, frames: list[np.ndarray], device: str) -> Iterator[BenchRecord]:
    """``prepare`` on a video of ``frames`` at 512: wall and CPU throughput, and the fit alone."""
    from ..formats.options import PrepareOptions
    from ..progress import Progress
    from .prepare import prepare

    with tempfile.TemporaryDirectory() as folder:
        video = os.path.join(folder, "bench.mp4")
        _write_video(video, frames)
        cpu = time.process_time()
        report = prepare(PrepareOptions(video=video, out=os.path.join(folder, "out"), size=512,
                                        qa=False),
                         Progress("quiet"))
        cpu = time.process_time() - cpu
    count = len(frames)
    yield BenchRecord("track", case, "end-to-end", report["fps_end_to_end"], "fps", device)
    yield BenchRecord("track", case, "end-to-end-cpu", count / cpu, "fps", device)
    yield BenchRecord("track", case, "fit", count / report["timings"]["fit_s"], "fps", device)


def run_accuracy(args) -> Iterator[BenchRecord]:
    """Bench ``track-accuracy``: the tracking accuracy measurement in one command.

    Renders the synthetic subject (seed 0, 40 frames at 512; 12 with --quick), runs ``prepare``
    with the default focal guess (case ``synth-512``), with the true focal length (case
    ``synth-512-known-focal``) and with it plus ``--refine photometric`` (case
    ``synth-512-known-focal-photometric``), then the same subject rendered with its first quarter
    looking into the lens and prepared with ``--eye-contact`` on those frames as well (case
    ``synth-512-eye-contact-photometric``), and compares each with the ground truth
    (``evaluate-tracking``): reprojection (px at 512), per-joint rotation error and per-eye gaze
    direction error (deg), head-space vertex error with and without the clip's unobservable offset
    (mm); the refined case also reports its speed (fps).
    """
    from ..formats import tracking as tracking_format
    from ..formats.options import PrepareOptions, TrackOptions
    from ..formats.prepared import PreparedData
    from ..headmodel import load_head_model
    from ..progress import Progress
    from ..synth.render import synthesize
    from ..tracking.evaluate import evaluate
    from .prepare import prepare

    device, frames = cpu_device_name(), 12 if getattr(args, "quick", False) else 40
    model = load_head_model("builtin")
    with tempfile.TemporaryDirectory() as folder:
        synth = os.path.join(folder, "synth")
        synthesize(synth, n_frames=frames, size=512, seed=0)
        contact = frames // 4
        synthesize(synth + "-contact", n_frames=frames, size=512, seed=0, eye_contact=contact)
        focal = float(tracking_format.read(PreparedData(synth).tracking).intrinsics[0, 0, 0])
        cases = (("synth-512", None, "none", ""), ("synth-512-known-focal", focal, "none", ""),
                 ("synth-512-known-focal-photometric", focal, "photometric", ""),
                 ("synth-512-eye-contact-photometric", focal, "photometric", "-contact"))
        for case, known, refine, subject in cases:
            out = os.path.join(folder, case)
            truth = tracking_format.read(PreparedData(synth + subject).tracking)
            track = TrackOptions(focal=known, refine=refine,
                                 eye_contact=f"0-{contact - 1}" if subject else None)
            report = prepare(PrepareOptions(video=os.path.join(synth + subject, "video.mp4"),
                                            out=out, size=512, qa=False, track=track),
                             Progress("quiet"))
            if refine != "none":
                seconds = report["fit_timings"]["refine"]["seconds"]
                yield BenchRecord("track-accuracy", case, "refine speed", frames / seconds, "fps",
                                  device)
            result = evaluate(model, truth, tracking_format.read(PreparedData(out).tracking),
                              report["crop_boxes"])
            yield BenchRecord("track-accuracy", case, "reprojection", result["reprojection_px"],
                              "px", device)
            for joint, angle in result["rotation_deg"].items():
                yield BenchRecord("track-accuracy", case, f"rotation {joint}", angle, "deg", device)
            for eye, angle in result["gaze_deg"].items():
                yield BenchRecord("track-accuracy", case, f"gaze {eye}", angle, "deg", device)
            yield BenchRecord("track-accuracy", case, "vertices", result["vertex_mm"], "mm", device)
            yield BenchRecord("track-accuracy", case, "vertices aligned", result["vertex_mm_aligned"],
                              "mm", device)
