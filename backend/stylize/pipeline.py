"""Stylize a prepared-data folder: DATA/frames -> DATA/stylized, DATA/stylize.json, a QA picture.

Frames stream through the stylizer one at a time (read, stylize, write atomically, measure; the
writing and measuring of one frame overlap with the stylizing of the next), so a long video
never sits in memory; only the previous input and output frame (for ITF/ISI) and three
small thumbnails (for the side-by-side picture) are kept.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError
from ..fileio import ensure_writable_folder, read_png, write_image, write_json, write_png
from ..formats.prepared import FRAMES, MASKS, STYLIZED, PreparedData
from .base import Stylizer
from .context import ContextReader
from .metrics import EyeContrastMeter, JitterMeter
from .region import BoxSource, centre_box, mask_box, tracking_boxes

THUMBNAIL_HEIGHT = 256
CLIP_SAMPLES = 12   # frames a face-aware style sees before the first one (per-clip statistics)
BOX_SOURCES = ("auto", "mask", "tracking", "center")
QA_PICTURE = "stylize_side_by_side.png"


def list_frames(data_dir: str) -> tuple[str, list[str]]:
    """The frames folder of a prepared-data folder and its PNG names, sorted."""
    data = PreparedData(data_dir)
    frames_dir = data.folder(FRAMES)
    if not os.path.isdir(frames_dir):
        raise InputError(f"{frames_dir} not found: --data must be a prepared-data folder "
                         "(run `python -m backend prepare` first)")
    names = data.names(FRAMES)
    if not names:
        raise InputError(f"{frames_dir} holds no PNG frames; re-run `python -m backend prepare`")
    return frames_dir, names


def make_box_source(data_dir: str, frame_names: list[str], mode: str = "auto") -> tuple[BoxSource, str]:
    """A face box per frame for the face-region mode, and the name of the source used.

    ``auto`` uses DATA/masks if present, else DATA/tracking.npz, else the centre square.
    """
    if mode not in BOX_SOURCES:
        raise InputError(f"--face-box must be one of {BOX_SOURCES}, got {mode!r}")
    data = PreparedData(data_dir)
    masks_dir, tracking_path = data.folder(MASKS), data.tracking
    if mode == "auto":
        mode = "mask" if os.path.isdir(masks_dir) else "tracking" if os.path.isfile(tracking_path) \
            else "center"
    if mode == "mask":
        if not os.path.isdir(masks_dir):
            raise InputError(f"--face-box mask needs {masks_dir}; re-run prepare or use --face-box center")

        def from_mask(index: int, frame: np.ndarray):
            path = os.path.join(masks_dir, frame_names[index])
            if not os.path.isfile(path):
                return None
            return mask_box(read_png(path, gray=True))
        return from_mask, "mask"
    if mode == "tracking":
        from ..formats import tracking as tracking_format

        if not os.path.isfile(tracking_path):
            raise InputError(f"--face-box tracking needs {tracking_path}; use --face-box mask or center")
        track = tracking_format.read(tracking_path)
        boxes = tracking_boxes(track.joint_rotations[:, 0], track.translation, track.intrinsics,
                               track.extrinsics)
        return (lambda index, frame: tuple(boxes[index]) if index < len(boxes) else None), "tracking"
    return (lambda index, frame: centre_box(*frame.shape[:2])), "center"


def stylize_folder(data_dir: str, stylizer: Stylizer, progress=None, style: str = "",
                   frame_names: list[str] | None = None) -> dict[str, Any]:
    """Stylize every frame of ``data_dir``/frames into ``data_dir``/stylized and write the report.

    Args:
        data_dir: the prepared-data folder.
        stylizer: any Stylizer; it is reset first.
        progress: a ``backend.progress.Progress`` (or None).
        style: the style specification, for the report.
        frame_names: the frames to stylize (default: all PNGs in frames/).

    Returns:
        The report that was written to ``data_dir``/stylize.json.
    """
    frames_dir, names = list_frames(data_dir)
    names = frame_names or names
    data = PreparedData(data_dir)
    out_dir = ensure_writable_folder(data.folder(STYLIZED))
    _remove_stale(out_dir, names)
    contexts = ContextReader(data_dir, names, detect=stylizer.uses_context)
    meters = {"input": JitterMeter(), "stylized": JitterMeter()}
    eyes = EyeContrastMeter()
    samples = set(np.unique(np.linspace(0, len(names) - 1, 3).round().astype(int)).tolist())
    thumbnails: list[np.ndarray] = []
    timings = {"read_s": 0.0, "stylize_s": 0.0, "write_s": 0.0, "metrics_s": 0.0}
    started, started_cpu = time.perf_counter(), time.process_time()
    stylizer.reset()
    if progress is not None:
        progress.stage("stylize", f"{style or stylizer.name}: {len(names)} frames", total=len(names))
    if stylizer.uses_context:
        clock = time.perf_counter()
        stylizer.fit_clip(clip_samples(frames_dir, names, contexts))
        timings["fit_clip_s"] = time.perf_counter() - clock
    # Writing and measuring frame i (OpenCV and numpy, which release the GIL) overlap with
    # reading and stylizing frame i + 1; one frame at a time is in flight, in order.
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = None
        for index, name in enumerate(names):
            clock = time.perf_counter()
            frame = read_png(os.path.join(frames_dir, name))
            context = contexts(index, frame) if stylizer.uses_context else None
            clock = _tick(timings, "read_s", clock)
            result = stylizer.stylize(frame, context)
            _tick(timings, "stylize_s", clock)
            if pending is not None:
                pending.result()
            pending = worker.submit(_write_and_measure, os.path.join(out_dir, name), frame, result,
                                    contexts.landmarks(index), meters, eyes, timings)
            if index in samples:
                thumbnails.append(_thumbnail(np.concatenate([frame, result], axis=1)))
            if progress is not None:
                progress.progress(index + 1, len(names))
        if pending is not None:
            pending.result()
    contexts.close()
    timings["cpu_s"] = time.process_time() - started_cpu
    report = _report(data_dir, stylizer, style, names, frame, meters, eyes, timings,
                     time.perf_counter() - started, contexts.source)
    qa_path = os.path.join(ensure_writable_folder(data.qa), QA_PICTURE)
    write_image(qa_path, _stack(thumbnails))
    write_json(data.stylize_report, report)
    if progress is not None:
        progress.preview(qa_path, "input | stylized")
    return report


def _write_and_measure(path, frame, result, landmarks, meters, eyes, timings) -> None:
    clock = time.perf_counter()
    write_png(path, result)
    clock = _tick(timings, "write_s", clock)
    meters["input"].add(frame)
    meters["stylized"].add(result)
    eyes.add(frame, result, landmarks)
    _tick(timings, "metrics_s", clock)


def clip_samples(frames_dir: str, names: list[str], contexts: ContextReader,
                 count: int = CLIP_SAMPLES) -> list[tuple[np.ndarray, Any]]:
    """``count`` (frame, context) pairs spread evenly over the clip, for ``fit_clip``."""
    picks = np.unique(np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int))
    samples = []
    for i in picks:
        frame = read_png(os.path.join(frames_dir, names[i]))
        samples.append((frame, contexts(int(i), frame, still=True) if contexts.detect
                        else contexts(int(i))))
    contexts.detected.clear()      # sampled out of order: detect again, tracked, when stylizing
    return samples


def _report(data_dir, stylizer, style, names, last_frame, meters, eyes, timings,
            total_s, landmark_source) -> dict[str, Any]:
    n = len(names)
    report = {
        "version": __version__,
        "style": style or stylizer.name,
        "stylizer": stylizer.name,
        "parameters": stylizer.parameters(),
        "n_frames": n,
        "image_size": [int(last_frame.shape[1]), int(last_frame.shape[0])],
        "metrics": {"input": meters["input"].report(), "stylized": meters["stylized"].report(),
                    "eyes": eyes.report(),
                    "definitions": "itf_db: mean PSNR of consecutive frames (dB, identical = 100); "
                                   "isi: mean SSIM of consecutive frames (11x11 Gaussian, sigma 1.5); "
                                   "eye_contrast_ratio: median over eyes of the luminance spread "
                                   "(90th - 10th percentile) inside the FaceMesh eye contour, "
                                   "stylized / input"},
        "timing": {**{k: round(v, 3) for k, v in timings.items()}, "total_s": round(total_s, 3),
                   "stylize_fps": round(n / max(timings["stylize_s"], 1e-9), 2),
                   "stage_fps": round(n / max(total_s, 1e-9), 2),
                   "stage_cpu_fps": round(n / max(timings["cpu_s"], 1e-9), 2)},
        "outputs": {"stylized": PreparedData(data_dir).folder(STYLIZED),
                    "side_by_side": os.path.join(PreparedData(data_dir).qa, QA_PICTURE)},
    }
    notes = stylizer.notes()
    if notes:
        report["notes"] = notes
    report["metrics"]["eyes"]["landmarks"] = landmark_source
    return report


def _tick(timings: dict[str, float], key: str, since: float) -> float:
    now = time.perf_counter()
    timings[key] += now - since
    return now


def _remove_stale(out_dir: str, names: list[str]) -> None:
    """Delete PNGs in ``out_dir`` that no input frame will overwrite (from an earlier, longer run)."""
    keep = set(names)
    for name in os.listdir(out_dir):
        if name.lower().endswith(".png") and name not in keep:
            os.unlink(os.path.join(out_dir, name))


def _thumbnail(image: np.ndarray) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    if height <= THUMBNAIL_HEIGHT:
        return image
    size = (max(1, int(round(width * THUMBNAIL_HEIGHT / height))), THUMBNAIL_HEIGHT)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Stack thumbnails vertically, padding narrower rows with black."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(padded, axis=0)
