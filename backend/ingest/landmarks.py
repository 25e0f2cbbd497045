"""Face landmarks: mediapipe 0.10.21 FaceMesh (478 points with refined irises), smoothing, gaps.

mediapipe ships its models inside the wheel, so nothing is downloaded. Landmarks are returned in
continuous pixel coordinates of the image they were detected on (x in [0, W], y in [0, H]).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import InputError
from ..formats.prepared import N_LANDMARKS
from ..progress import NativeLogsHidden

log = logging.getLogger("toonsplat")


class FaceMeshDetector:
    """One face, 478 landmarks per image. ``video=True`` tracks between frames (faster)."""

    def __init__(self, video: bool = True, min_confidence: float = 0.5):
        # mediapipe/TFLite log INFO/WARNING lines from their threads as the graph starts and
        # on its first frame: hidden (when the CLI says so) until the first frame is done.
        self._quiet = NativeLogsHidden()
        try:
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        except BaseException:
            self._quiet.close()
            raise

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks of the most prominent face in ``image``.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            (478, 3) float32: x, y in pixels and a relative depth z (pixels, same scale as x),
            or None if no face was found.
        """
        height, width = image.shape[:2]
        try:
            result = self._mesh.process(np.ascontiguousarray(image))
        finally:
            self._quiet.close()  # the graph has started and seen a frame
        if not result.multi_face_landmarks:
            return None
        points = result.multi_face_landmarks[0].landmark
        array = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
        if array.shape[0] != N_LANDMARKS:
            return None
        return array * np.array([width, height, width], dtype=np.float32)

    def close(self) -> None:
        self._quiet.close()
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def one_euro(values: np.ndarray, times: np.ndarray, min_cutoff: float = 1.0,
             beta: float = 0.05, d_cutoff: float = 1.0) -> np.ndarray:
    """The One-Euro filter (Casiez et al. 2012), causal, over the first axis.

    Args:
        values: (T, ...) signal; every trailing element is filtered independently.
        times: (T,) seconds, increasing.
        min_cutoff: cutoff frequency (Hz) when still; lower smooths more.
        beta: how fast the cutoff rises with speed (per unit of |velocity|); higher lags less.
        d_cutoff: cutoff (Hz) of the velocity estimate.

    Returns:
        (T, ...) filtered signal.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    out[0] = values[0]
    velocity = np.zeros_like(values[0])
    for t in range(1, len(values)):
        dt = max(float(times[t] - times[t - 1]), 1e-4)
        raw_velocity = (values[t] - out[t - 1]) / dt
        velocity = velocity + _alpha(d_cutoff, dt) * (raw_velocity - velocity)
        cutoff = min_cutoff + beta * np.abs(velocity)
        out[t] = out[t - 1] + _alpha(cutoff, dt) * (values[t] - out[t - 1])
    return out


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def smooth_landmarks(landmarks: np.ndarray, times: np.ndarray, scale: float = 1.0,
                     min_cutoff: float = 1.0, beta: float = 0.02) -> np.ndarray:
    """Zero-phase One-Euro: the average of a forward and a backward pass.

    Each pass lags in its own direction of time; the average cancels the lag to first order, so
    fast motion is followed while still frames lose their jitter.

    Args:
        landmarks: (T, L, D) pixel positions, no gaps (fill them first).
        times: (T,) seconds.
        scale: pixel size of the image relative to 512 (speeds are measured in 512-pixel units).

    Returns:
        (T, L, D) smoothed positions.
    """
    if len(landmarks) < 3:
        return np.asarray(landmarks, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    normalised = np.asarray(landmarks, dtype=np.float64) / scale
    forward = one_euro(normalised, times, min_cutoff, beta)
    backward = one_euro(normalised[::-1], times[-1] - times[::-1], min_cutoff, beta)[::-1]
    return 0.5 * (forward + backward) * scale


def fill_landmark_gaps(landmarks: np.ndarray, found: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Interpolate frames without a face from their neighbours in time.

    Args:
        landmarks: (T, L, D) with anything where ``found`` is False.
        found: (T,) bool.
        times: (T,) seconds.

    Returns:
        (T, L, D) float64; frames before the first / after the last detection copy the nearest.
    """
    if not found.any():
        raise InputError("no face was found in any frame; film the face from the front, "
                         "well lit, filling at least a fifth of the picture")
    out = np.array(landmarks, dtype=np.float64)
    flat = out.reshape(len(out), -1)
    known = np.asarray(times, dtype=np.float64)[found]
    for column in range(flat.shape[1]):
        flat[~found, column] = np.interp(np.asarray(times)[~found], known, flat[found, column])
    return flat.reshape(out.shape)


def check_enough_faces(found: np.ndarray, source: str, min_fraction: float = 0.3,
                       min_frames: int = 1) -> None:
    """Raise InputError when too few frames show a face."""
    n_found, n_total = int(found.sum()), int(len(found))
    if n_found < min_frames or n_found < min_fraction * n_total:
        raise InputError(
            f"a face was found in only {n_found} of {n_total} frames of {source} "
            f"(need at least {max(min_frames, int(np.ceil(min_fraction * n_total)))}); use a video "
            "where the face is visible, frontal-ish and well lit most of the time, or narrow "
            "--start/--end to the part that shows it")


def flag_outliers(landmarks: np.ndarray, found: np.ndarray, max_jump: float = 0.25) -> np.ndarray:
    """Mark detections as not found where the face box jumps implausibly between frames.

    Args:
        landmarks: (T, L, 2+) pixels.
        found: (T,) bool.
        max_jump: largest plausible frame-to-frame change of the box centre, in box sizes,
            relative to both neighbours (an isolated spike is dropped, a real cut is kept).

    Returns:
        (T,) bool, ``found`` with isolated spikes removed.
    """
    found = found.copy()
    index = np.flatnonzero(found)
    if len(index) < 3:
        return found
    points = landmarks[index, :, :2]
    centre = (points.min(axis=1) + points.max(axis=1)) / 2
    extent = (points.max(axis=1) - points.min(axis=1)).max(axis=1)
    before = np.linalg.norm(centre[1:-1] - centre[:-2], axis=1) / extent[1:-1]
    after = np.linalg.norm(centre[1:-1] - centre[2:], axis=1) / extent[1:-1]
    around = np.linalg.norm(centre[2:] - centre[:-2], axis=1) / extent[1:-1]
    spike = (before > max_jump) & (after > max_jump) & (around < 0.5 * np.minimum(before, after))
    found[index[1:-1][spike]] = False
    if spike.any():
        log.info("dropped %d landmark detections that jumped away for one frame", int(spike.sum()))
    return found
