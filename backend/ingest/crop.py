"""Head-centred square crops that are stable over time.

The crop of frame t is a square box (centre_x, centre_y, side) in source pixels. The side is one
value for the whole clip (so the head keeps its scale), the centre follows the head through a
zero-phase (forward-backward) Gaussian filter over time, so it neither jitters nor lags. Where the
box leaves the frame the crop is black (and, in masks, background): those pixels hold no picture,
and the trainer never takes them as targets (``formats.prepared.inside_source``).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

# Box side as a multiple of the face-landmark extent, and the upward shift of the centre (as a
# fraction of the side) so hair and chin both fit.
DEFAULT_SCALE = 2.2
DEFAULT_SHIFT_UP = 0.08


def landmark_boxes(landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame face boxes from landmarks.

    Args:
        landmarks: (T, L, 2) pixel positions (any values where not ``valid``).
        valid: (T,) bool.

    Returns:
        (T, 3) centre_x, centre_y, extent (largest side of the landmark bounding box); NaN rows
        where not valid.
    """
    boxes = np.full((len(landmarks), 3), np.nan)
    if valid.any():
        points = landmarks[valid]
        low, high = points.min(axis=1), points.max(axis=1)
        boxes[valid, :2] = (low + high) / 2
        boxes[valid, 2] = (high - low).max(axis=1)
    return boxes


def fill_gaps(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN rows of (T, D) ``values`` over ``times``; ends hold the nearest."""
    values = np.array(values, dtype=np.float64)
    ok = ~np.isnan(values).any(axis=1)
    if not ok.any():
        raise InputError("no face was found in any frame")
    for d in range(values.shape[1]):
        values[~ok, d] = np.interp(times[~ok], times[ok], values[ok, d])
    return values


def smooth_zero_phase(values: np.ndarray, times: np.ndarray, sigma_s: float) -> np.ndarray:
    """Gaussian smoothing over time, symmetric in time (no lag). (T, D) -> (T, D).

    Handles irregular timestamps (variable frame rate) by weighting with the true time gaps.
    """
    if sigma_s <= 0 or len(values) < 3:
        return np.asarray(values, dtype=np.float64)
    out = np.empty_like(values, dtype=np.float64)
    radius = 3 * sigma_s
    lo = np.searchsorted(times, times - radius, side="left")
    hi = np.searchsorted(times, times + radius, side="right")
    for t in range(len(values)):
        window = slice(lo[t], hi[t])
        weights = np.exp(-0.5 * ((times[window] - times[t]) / sigma_s) ** 2)
        out[t] = weights @ values[window] / weights.sum()
    return out


def stable_crop_boxes(boxes: np.ndarray, times: np.ndarray, scale: float = DEFAULT_SCALE,
                      shift_up: float = DEFAULT_SHIFT_UP, sigma_s: float = 0.25) -> np.ndarray:
    """Square crop boxes for every frame from per-frame face boxes with gaps.

    Args:
        boxes: (T, 3) centre_x, centre_y, extent from ``landmark_boxes`` (NaN where no face).
        times: (T,) seconds.
        scale: crop side / face extent.
        shift_up: centre moved up by this fraction of the side.
        sigma_s: temporal smoothing of the centre in seconds.

    Returns:
        (T, 3) centre_x, centre_y, side in source pixels.
    """
    filled = fill_gaps(boxes, np.asarray(times, dtype=np.float64))
    side = float(np.median(filled[:, 2])) * scale
    centres = smooth_zero_phase(filled[:, :2], np.asarray(times, dtype=np.float64), sigma_s)
    centres[:, 1] -= shift_up * side
    return np.concatenate([centres, np.full((len(centres), 1), side)], axis=1)


def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """The 2x3 affine map from source to crop coordinates for ``box`` (cx, cy, side).

    Coordinates are continuous: the image spans [0, W] x [0, H] and pixel (i, j) has its centre at
    (i + 0.5, j + 0.5), the convention of mediapipe landmarks and of the intrinsics.
    """
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0.0, (side / 2 - cx) * s], [0.0, s, (side / 2 - cy) * s]])


def _pixel_centre_matrix(matrix: np.ndarray) -> np.ndarray:
    """Convert a continuous-coordinate affine map to OpenCV's pixel-centre convention."""
    out = matrix.copy()
    out[:, 2] += 0.5 * (matrix[:, 0] + matrix[:, 1]) - 0.5
    return out


def crop_image(image: np.ndarray, box: np.ndarray, size: int, interpolation: str = "linear") -> np.ndarray:
    """Cut the square ``box`` out of ``image`` at ``size`` x ``size``; zeros outside the image.

    Args:
        image: (H, W, C) or (H, W) uint8.
        box: (3,) centre_x, centre_y, side in ``image`` continuous pixel coordinates.
        size: output side in pixels.
        interpolation: "linear" or "nearest".

    Returns:
        (size, size, C) or (size, size) uint8.
    """
    import cv2

    matrix = crop_matrix(box, size)
    shrink = int(1.0 / matrix[0, 0])
    if shrink >= 2 and interpolation == "linear":
        # Area-average first so a large downscale does not alias; continuous coordinates scale
        # exactly by the integer factor.
        height, width = (n // shrink * shrink for n in image.shape[:2])
        image = cv2.resize(image[:height, :width], (width // shrink, height // shrink),
                           interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[0, 0] *= shrink
        matrix[1, 1] *= shrink
    flags = cv2.INTER_LINEAR if interpolation == "linear" else cv2.INTER_NEAREST
    return cv2.warpAffine(image, _pixel_centre_matrix(matrix), (size, size), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_intrinsics(focal_source: float, principal_source: np.ndarray, boxes: np.ndarray,
                    size: int) -> np.ndarray:
    """Pinhole matrices of the crops, in crop pixels. boxes (T, 3) -> (T, 3, 3)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    scale = size / boxes[:, 2]
    intrinsics = np.zeros((len(boxes), 3, 3))
    intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal_source * scale
    intrinsics[:, 0, 2] = (principal_source[0] - boxes[:, 0]) * scale + size / 2
    intrinsics[:, 1, 2] = (principal_source[1] - boxes[:, 1]) * scale + size / 2
    intrinsics[:, 2, 2] = 1.0
    return intrinsics
