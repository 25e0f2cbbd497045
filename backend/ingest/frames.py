"""Ingest: a video, image folder or portrait in; cropped frames, masks and landmarks out.

Two streaming passes over the source, so memory stays bounded whatever the video's length:

1. detect: frames scaled to ``detect_size``, FaceMesh landmarks -> one face box per frame; the
   boxes become stable square crops (fixed side, zero-phase smoothed centre).
2. crop: full-resolution frames cut to the crops at ``size``; FaceMesh again on the crop (more
   pixels on the face), a foreground mask, the hands' region (``--no-hands``: none), and the
   frame, mask and occluder PNGs written by a writer thread.

Then the landmarks are cleaned (spikes dropped, gaps filled, zero-phase One-Euro smoothing). The
head-model fit that follows is tracking's (``backend/pipeline/prepare.py`` runs both).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..fileio import ensure_writable_folder
from ..formats.options import PrepareOptions
from ..formats.prepared import FRAMES, MASKS, OCCLUDERS, PreparedData
from . import crop as crops
from .sources import Selection, SourceInfo, open_source

log = logging.getLogger("toonsplat")


@dataclass
class Landmarks:
    """Landmarks of the kept frames, in crop pixels."""

    points: np.ndarray   # (T, 478, 3) cleaned (filled and smoothed)
    found: np.ndarray    # (T,) bool, a face was detected in the crop
    valid: np.ndarray    # (T,) bool, found and not an outlier


@dataclass
class Ingested:
    """What ingest hands to tracking: the source, the kept frames and their crops, landmarks."""

    info: SourceInfo
    frames: dict              # {"indices": (T,), "timestamps": (T,), "names": [T]}
    crop_boxes: np.ndarray    # (T, 3) centre x, centre y, side in source pixels
    intrinsics: np.ndarray    # (T, 3, 3) crop intrinsics from the assumed source focal length
    landmarks: Landmarks
    single_image: bool        # unrelated images (a portrait, an image folder): no temporal terms
    timings: dict
    size: int                 # the crops' side in pixels (``options.size``, or the automatic one)
    hand_frames: int | None = None  # frames with a hand region in occluders/; None: not looked for


def ingest(options: PrepareOptions, data: PreparedData, progress) -> Ingested:
    """Detect, crop, segment and find landmarks and hands; writes frames/, masks/ and
    occluders/ of ``data``."""
    started = time.perf_counter()
    source = open_source(options.video, options.images, options.image,
                         Selection(options.start, options.end, options.stride), options.fps)
    static = source.info.kind != "video"
    progress.stage("detect", f"finding the face in {source.info.path}")
    frames, boxes = detect_pass(source, options, progress, static=static)
    timings = {"detect_s": time.perf_counter() - started}
    crop_boxes = crops.stable_crop_boxes(boxes, frames["timestamps"], options.crop_scale,
                                         sigma_s=0.0 if static else 0.25)
    if static:
        crop_boxes = _per_image_boxes(boxes, crop_boxes, options.crop_scale)
    if not options.size:
        options = replace(options, size=auto_size(crop_boxes))
        log.info("working resolution %d px (the crop is %.0f source pixels wide)", options.size,
                 float(np.nanmedian(crop_boxes[:, 2])))
    progress.stage("crop", f"cropping {len(crop_boxes)} frames to {options.size} px")
    stamp = time.perf_counter()
    landmarks, hand_frames = crop_pass(source, crop_boxes, frames, options, data, progress)
    timings["crop_s"] = time.perf_counter() - stamp
    focal = options.track.focal or 0.9 * max(source.info.width, source.info.height)
    principal = np.array([source.info.width / 2, source.info.height / 2])
    intrinsics = crops.crop_intrinsics(focal, principal, crop_boxes, options.size)
    return Ingested(source.info, frames, crop_boxes, intrinsics, landmarks, static, timings,
                    options.size, hand_frames)


def auto_size(crop_boxes: np.ndarray, smallest: int = 256, largest: int = 512) -> int:
    """The working resolution of ``--size 0``: the crop's side in source pixels rounded up to a
    multiple of 64, within ``smallest``..``largest``: a webcam's 250-pixel crop is not blown up
    to 512 (no detail there to learn, four times the work), a phone video's is not shrunk below
    512."""
    side = float(np.nanmedian(np.asarray(crop_boxes)[:, 2]))
    return int(min(max(64 * np.ceil(side / 64), smallest), largest))


def detect_pass(source, options: PrepareOptions, progress, static: bool):
    """Pass 1: face boxes on downscaled frames. Returns frame info and (T, 3) boxes (NaN = none)."""
    from .landmarks import FaceMeshDetector

    indices, times, names, boxes = [], [], [], []
    total = source.info.n_frames or 0
    with FaceMeshDetector(video=not static) as detector:
        for frame in source.frames(long_side=options.detect_size):
            factor = max(source.info.width, source.info.height) / max(frame.image.shape[:2])
            points = detector(frame.image)
            if points is None and static and factor > 1:
                points = _detect_full(source, frame, detector)
                factor = 1.0 if points is not None else factor
            box = np.full(3, np.nan)
            if points is not None:
                box = crops.landmark_boxes(points[None, :, :2] * factor, np.ones(1, bool))[0]
            indices.append(frame.index)
            times.append(frame.timestamp)
            names.append(frame.name)
            boxes.append(box)
            progress.progress(len(indices), max(total // options.stride, len(indices)))
    if not indices:
        raise InputError(f"no frames were read from {source.info.path} between --start "
                         f"{options.start} and --end {options.end}; check the range")
    frames = {"indices": np.array(indices), "timestamps": np.array(times, dtype=np.float64),
              "names": names}
    found = ~np.isnan(np.array(boxes)[:, 0])
    _check_faces(found, source.info.path, options.min_face_fraction)
    return frames, np.array(boxes)


def _detect_full(source, frame, detector):
    """Retry detection at full resolution for one image (small faces in large photos)."""
    for full in source.frames(long_side=None):
        if full.index == frame.index:
            return detector(full.image)
    return None


def _per_image_boxes(boxes: np.ndarray, stable: np.ndarray, scale: float) -> np.ndarray:
    """Unrelated images: each keeps its own box (no smoothing across images)."""
    out = stable.copy()
    ok = ~np.isnan(boxes[:, 0])
    out[ok, :2] = boxes[ok, :2]
    out[ok, 1] -= crops.DEFAULT_SHIFT_UP * boxes[ok, 2] * scale
    out[ok, 2] = boxes[ok, 2] * scale
    return out


def _check_faces(found: np.ndarray, path: str, min_fraction: float) -> None:
    from .landmarks import check_enough_faces

    check_enough_faces(found, path, min_fraction)


def crop_pass(source, crop_boxes: np.ndarray, frames: dict, options: PrepareOptions,
              data: PreparedData, progress) -> tuple[Landmarks, int | None]:
    """Pass 2: crops, landmarks on the crops, masks, hands; frames/, masks/ and occluders/
    written as it goes. Returns the landmarks and the number of frames with a hand (None with
    ``options.hands`` off)."""
    from . import landmarks as marks
    from .hands import HandSegmenter
    from .masks import SelfieSegmenter, UserMasks

    ensure_writable_folder(data.folder(FRAMES))
    ensure_writable_folder(data.folder(MASKS))
    data.clear_occluders()  # an earlier run's: its frames need not be this run's
    user_masks = UserMasks(options.masks) if options.masks else None
    segmenter = None if user_masks else SelfieSegmenter()
    total = len(crop_boxes)
    points = np.zeros((total, 478, 3), np.float32)
    found, hands = np.zeros(total, bool), np.zeros(total, bool)
    static = source.info.kind != "video"
    hand_segmenter = HandSegmenter(video=not static) if options.hands else None
    writer = ThreadPoolExecutor(max_workers=1)
    pending = []
    try:
        with marks.FaceMeshDetector(video=not static) as detector:
            for t, frame in enumerate(source.frames()):
                if t >= total:
                    break
                image = crops.crop_image(frame.image, crop_boxes[t], options.size)
                detected = detector(image)
                if detected is not None:
                    points[t], found[t] = detected, True
                if user_masks is not None:
                    full = user_masks.load(frame.index, frame.image.shape[:2], frame.name)
                    mask = crops.crop_image(full, crop_boxes[t], options.size)
                else:
                    mask = segmenter(image)
                occluder = None
                if hand_segmenter is not None:
                    occluder = hand_segmenter(image, mask, _hand_view(frame.image, crop_boxes[t],
                                                                      options.size))
                hands[t] = occluder is not None and bool(occluder.any())
                pending.append(writer.submit(_write_pair, data, t, image, mask,
                                             user_masks is None, occluder if hands[t] else None))
                if len(pending) > 8:
                    pending.pop(0).result()
                progress.progress(t + 1, total)
        for job in pending:
            job.result()
    finally:
        writer.shutdown(wait=True)
        if segmenter is not None:
            segmenter.close()
        if hand_segmenter is not None:
            hand_segmenter.close()
    if hands.any():
        log.info("a hand covers part of %d of %d frames: no target there (occluders/)",
                 int(hands.sum()), total)
    landmarks = _clean_landmarks(points, found, frames["timestamps"][:total], options,
                                 source.info.path, static)
    return landmarks, (int(hands.sum()) if options.hands else None)


def _hand_view(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The crop's surroundings for the hand detector: the same centre and pixel scale, grown by
    ``VIEW_MARGIN`` of the side on each side (a hand cut by the crop's edge is found there)."""
    from .hands import VIEW_MARGIN

    margin = round(VIEW_MARGIN * size)
    side = size + 2 * margin
    return crops.crop_image(image, np.array([box[0], box[1], box[2] * side / size]), side)


def _write_pair(data: PreparedData, t: int, image: np.ndarray, mask: np.ndarray,
                refine: bool, occluder: np.ndarray | None = None) -> None:
    """Writes a crop and its mask (a segmentation's mask with its edges refined first: this runs
    on the writer thread, next to mediapipe on the main one), and its occluder when it has one."""
    from ..fileio import write_png
    from .masks import refine_edges

    if refine:
        mask = refine_edges(image, mask)

    write_png(data.image_path(FRAMES, t), image)
    write_png(data.image_path(MASKS, t), mask)
    if occluder is not None:
        ensure_writable_folder(data.folder(OCCLUDERS))
        write_png(data.image_path(OCCLUDERS, t), occluder)


def _clean_landmarks(points: np.ndarray, found: np.ndarray, times: np.ndarray,
                     options: PrepareOptions, path: str, static: bool) -> Landmarks:
    from . import landmarks as marks

    marks.check_enough_faces(found, path, options.min_face_fraction)
    valid = found if static else marks.flag_outliers(points, found)
    filled = marks.fill_landmark_gaps(points, valid, times)
    if not static:
        filled = marks.smooth_landmarks(filled, times, scale=options.size / 512.0)
    return Landmarks(filled.astype(np.float32), found, valid)
