"""Per-frame context for the face-aware styles: the frame's FaceMesh landmarks and person mask.

``prepare`` has already found the face in every frame (``landmarks.npz``, cleaned: gaps filled
from the neighbouring frames and smoothed over time without lag) and the person (``masks/``).
:class:`ContextReader` hands them to a stylizer frame by frame as a :class:`FrameContext`;
styles that do not need them ignore the argument. A frame whose face was not found (and is
not within ``MAX_GAP_FRAMES`` of a frame where it was) gets no landmarks, and face-aware styles
fall back to their face-blind look for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from ..formats.npzio import read_npz
from ..formats.prepared import PreparedData
from .faces import N_POINTS

MAX_GAP_FRAMES = 5   # interpolated landmarks are trusted this many frames from a detection


@dataclass(frozen=True)
class FrameContext:
    """What is known about one frame besides its pixels.

    Attributes:
        index: the frame's index in its sequence.
        landmarks: (478, 2) float32 FaceMesh points in the frame's pixels, or None.
        mask: (H, W) uint8 person mask (255 = person), or None.
    """

    index: int = 0
    landmarks: np.ndarray | None = None
    mask: np.ndarray | None = None

    def crop(self, x0: int, y0: int, side: int) -> FrameContext:
        """The context of the (side, side) crop at (x0, y0): landmarks shifted, mask cut out
        (zero outside the frame)."""
        landmarks = None if self.landmarks is None else self.landmarks - np.float32([x0, y0])
        mask = None
        if self.mask is not None:
            mask = np.zeros((side, side), np.uint8)
            height, width = self.mask.shape
            fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + side), min(height, y0 + side)
            if fx1 > fx0 and fy1 > fy0:
                mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = self.mask[fy0:fy1, fx0:fx1]
        return replace(self, landmarks=landmarks, mask=mask)


class ContextReader:
    """Frame contexts of a prepared-data folder: ``reader(position, frame) -> FrameContext``.

    Reads ``landmarks.npz`` once (when present) and one mask per call. A folder without one
    (synthetic or converted data) gets its landmarks from FaceMesh run on each frame as it is
    stylized (``detect=True``; tracked from frame to frame), or none.

    Args:
        data_dir: the prepared-data folder.
        frame_names: the frames in stylizing order (their indices come from the file names).
        detect: run FaceMesh on the frames when the folder has no landmarks.npz.
    """

    def __init__(self, data_dir: str, frame_names: list[str], detect: bool = False):
        self.data = PreparedData(data_dir)
        self.frame_names = frame_names
        self.points, self.usable = load_landmarks(self.data.landmarks)
        self.detected: dict[int, np.ndarray | None] = {}
        self._tracker = None
        self.detect = detect and self.points is None

    @property
    def source(self) -> str:
        """Where the landmarks come from: ``landmarks.npz``, ``facemesh`` or ``none``."""
        return "landmarks.npz" if self.points is not None else "facemesh" if self.detect \
            else "none"

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    def index(self, position: int) -> int:
        """The frame index (from the file name) of the ``position``-th frame."""
        stem = os.path.splitext(self.frame_names[position])[0]
        return int(stem) if stem.isdigit() else position

    def landmarks(self, position: int) -> np.ndarray | None:
        """(478, 2) landmarks of the ``position``-th frame, or None (none usable, or no file
        and not detected)."""
        if self.points is None:
            return self.detected.get(position)
        index = self.index(position)
        if index >= len(self.points) or not self.usable[index]:
            return None
        return self.points[index]

    def __call__(self, position: int, frame: np.ndarray | None = None,
                 still: bool = False) -> FrameContext:
        """The context of the ``position``-th frame of ``frame_names``; ``frame`` (its pixels)
        is needed only to detect landmarks, ``still`` detects it alone (not tracked)."""
        if self.detect and frame is not None and position not in self.detected:
            self.detected[position] = self._detect(frame, still)
        index = self.index(position)
        return FrameContext(index=index, landmarks=self.landmarks(position),
                            mask=self.data.read_mask(index))

    def _detect(self, frame: np.ndarray, still: bool) -> np.ndarray | None:
        from .faces import FaceMesh, detect_landmarks

        if still:
            return detect_landmarks(frame)
        if self._tracker is None:
            self._tracker = FaceMesh(video=True)
        if len(self.detected) > 64:                   # keep the last frames only
            for key in sorted(self.detected)[:-32]:
                del self.detected[key]
        return self._tracker(frame)


def load_landmarks(path: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(T, 478, 2) float32 points and (T,) bool "usable" from a landmarks.npz, or (None, None)
    when there is no such file (synthetic data, converted trackings).

    Usable: found by the detector, or interpolated across a gap of at most
    ``MAX_GAP_FRAMES`` frames from a detection.
    """
    if not os.path.isfile(path):
        return None, None
    arrays, _ = read_npz(path, "landmarks file")
    points = np.asarray(arrays["points"], np.float32)[..., :2]
    if points.ndim != 3 or points.shape[1] != N_POINTS:
        return None, None
    found = np.asarray(arrays.get("found", np.ones(len(points), bool)), bool)
    return points, frames_near_detections(found, MAX_GAP_FRAMES)


def frames_near_detections(found: np.ndarray, max_gap: int) -> np.ndarray:
    """(T,) bool: frames at most ``max_gap`` frames away from a frame where ``found`` is True."""
    return distance_to_nearest(np.asarray(found, bool)) <= max_gap


def distance_to_nearest(found: np.ndarray) -> np.ndarray:
    """(T,) distance in frames to the nearest True of ``found`` (two linear passes; more than
    T everywhere when there is none)."""
    big = len(found) + 1
    forward = np.empty(len(found), np.int64)
    last = -big
    for i, hit in enumerate(found):
        last = i if hit else last
        forward[i] = i - last
    backward = np.empty(len(found), np.int64)
    last = 2 * big
    for i in range(len(found) - 1, -1, -1):
        last = i if found[i] else last
        backward[i] = last - i
    return np.minimum(forward, backward)
