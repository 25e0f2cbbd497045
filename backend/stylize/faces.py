"""FaceMesh topology for the face-aware styles: which of the 478 landmarks outline which part.

MediaPipe FaceMesh with refined irises (what ``prepare`` writes to landmarks.npz) numbers 468
surface points and 2 x 5 iris points. The outlines below are closed polygons in drawing order,
taken from MediaPipe's own connection sets (FACEMESH_FACE_OVAL, FACEMESH_LIPS,
FACEMESH_{LEFT,RIGHT}_EYE, ..._EYEBROW, ..._IRIS). "First" and "second" eye are the subject's
right and left eye, i.e. the eye on the image's left and right for a frontal face.

Also here: :func:`detect_landmarks`, FaceMesh on one still image (the ``exemplar`` style's style
image), which loads mediapipe only when called.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("toonsplat")

N_POINTS = 478

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
             109)
# Eye openings: lower lid from the outer to the inner corner, then the upper lid back.
EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
        (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
UPPER_LIDS = ((33, 246, 161, 160, 159, 158, 157, 173, 133),
              (263, 466, 388, 387, 386, 385, 384, 398, 362))
LOWER_LIDS = ((33, 7, 163, 144, 145, 153, 154, 155, 133),
              (263, 249, 390, 373, 374, 380, 381, 382, 362))
# Iris centre and its four rim points, same order as EYES.
IRISES = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
         (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39,
              40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80,
              191)
CHIN = 152
FOREHEAD = 10


def check_points(points: np.ndarray) -> np.ndarray:
    """``points`` as (478, 2) float32 pixel x, y (a third column, depth, is dropped).

    Raises:
        ValueError: the array is not (478, 2+) or holds non-finite values.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] != N_POINTS or points.shape[1] < 2:
        raise ValueError(f"face landmarks must be ({N_POINTS}, 2) FaceMesh points, got {points.shape}")
    if not np.all(np.isfinite(points[:, :2])):
        raise ValueError("face landmarks hold NaN or infinite values")
    return np.ascontiguousarray(points[:, :2])


def polygon_mask(points: np.ndarray, indices, shape: tuple[int, int],
                 scale: float = 1.0) -> np.ndarray:
    """(H, W) uint8 mask, 255 inside the polygon of ``points[indices]`` (anti-aliased edge).

    Args:
        points: (478, 2) pixel coordinates of the full-size image.
        indices: the polygon's landmark indices, in drawing order.
        shape: (H, W) of the mask.
        scale: mask pixels per image pixel (0.5 for a half-size mask).
    """
    import cv2

    mask = np.zeros(shape, np.uint8)
    polygon = np.round(points[list(indices)] * scale * 16).astype(np.int32)
    cv2.fillPoly(mask, [polygon], 255, cv2.LINE_AA, shift=4)
    return mask


def iris_circle(points: np.ndarray, eye: int) -> tuple[np.ndarray, float]:
    """Centre (2,) and radius in pixels of iris ``eye`` (0 or 1) from its five landmarks."""
    centre_index, *rim = IRISES[eye]
    centre = points[centre_index]
    radius = float(np.mean(np.linalg.norm(points[list(rim)] - centre, axis=1)))
    return centre, radius


def eye_width(points: np.ndarray, eye: int) -> float:
    """Distance between the corners of eye ``eye`` in pixels."""
    lid = UPPER_LIDS[eye]
    return float(np.linalg.norm(points[lid[0]] - points[lid[-1]]))


def detect_landmarks(image: np.ndarray) -> np.ndarray | None:
    """FaceMesh (refined irises) on one still RGB image: (478, 2) float32 pixels or None.

    None also when mediapipe is not installed (logged): callers fall back to their face-blind
    behaviour.
    """
    mesh = FaceMesh(video=False)
    try:
        return mesh(image)
    finally:
        mesh.close()


class FaceMesh:
    """MediaPipe FaceMesh with refined irises, one face; ``video=True`` tracks between frames.

    For prepared-data folders without a landmarks.npz (synthetic or converted data) and for
    style images; ``prepare`` has its own detector. Without mediapipe every call returns None.
    """

    def __init__(self, video: bool = True):
        try:
            import mediapipe as mp
        except ImportError:
            log.warning("mediapipe is not installed: no face landmarks (pip install mediapipe)")
            self._mesh = None
            return
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 2) float32 pixel landmarks of the face in an (H, W, 3) uint8 RGB image, or None."""
        if self._mesh is None:
            return None
        height, width = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        found = result.multi_face_landmarks[0].landmark
        if len(found) != N_POINTS:
            return None
        return np.array([(p.x * width, p.y * height) for p in found], dtype=np.float32)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None
