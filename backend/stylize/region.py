"""Face-region mode: stylize a square around the face and blend it back without seams.

Many image-to-image models are trained on face crops. Here the crop box comes from the mask's
bounding box, from the tracking (the head centre projected through the camera) or, failing both,
the centre of the frame. The box is made square, enlarged by a margin and smoothed over time (an
exponential moving average of its centre and size), so the crop does not jitter; the stylized crop
goes back through a feathered mask that is exactly 0 on the crop border and 1 inside, so there is
no seam. Parts of the box outside the frame are reflected in and ignored on the way back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .base import Stylizer

HEAD_SIZE_M = 0.30           # side of the box around the head, metres (hair included)
HEAD_CENTRE_M = (0.0, 0.02, 0.0)  # head centre in head-model space, metres (a little above root)

# (x0, y0, x1, y1) in pixels, or None when no box is known for a frame
Box = tuple[float, float, float, float]
BoxSource = Callable[[int, np.ndarray], "Box | None"]


def mask_box(mask: np.ndarray, threshold: int = 127) -> Box | None:
    """Bounding box of the pixels of an (H, W) uint8 mask above ``threshold``; None if empty."""
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def tracking_boxes(rotations: np.ndarray, translation: np.ndarray, intrinsics: np.ndarray,
                   extrinsics: np.ndarray) -> np.ndarray:
    """Image boxes of the head from tracking parameters (the head centre and a fixed head size).

    Args:
        rotations: (T, 3) axis-angle of the root joint.
        translation: (T, 3) head translation, metres.
        intrinsics: (T, 3, 3) pinhole K, pixels.
        extrinsics: (T, 4, 4) world-to-camera, OpenCV axes.

    Returns:
        (T, 4) float64 boxes x0, y0, x1, y1; NaN rows where the head is behind the camera.
    """
    from scipy.spatial.transform import Rotation

    centre = Rotation.from_rotvec(rotations).apply(np.asarray(HEAD_CENTRE_M)) + translation
    camera = np.einsum("tij,tj->ti", extrinsics[:, :3, :3], centre) + extrinsics[:, :3, 3]
    depth = camera[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics[:, 0, 0] * camera[:, 0] / depth + intrinsics[:, 0, 2]
        v = intrinsics[:, 1, 1] * camera[:, 1] / depth + intrinsics[:, 1, 2]
        half = 0.5 * HEAD_SIZE_M * intrinsics[:, 0, 0] / depth
    boxes = np.stack([u - half, v - half, u + half, v + half], axis=1)
    boxes[~(depth > 1e-6)] = np.nan
    return boxes


def centre_box(height: int, width: int) -> Box:
    """The largest centred square of an H x W frame."""
    side = min(height, width)
    x0, y0 = (width - side) / 2.0, (height - side) / 2.0
    return x0, y0, x0 + side, y0 + side


def feather_mask(side: int, feather: float) -> np.ndarray:
    """(side, side) float32 weights: 0 on the border, 1 inside, smoothstep ramps ``feather`` wide.

    Args:
        side: the crop size in pixels.
        feather: ramp width as a fraction of ``side`` (0 < feather <= 0.5).
    """
    ramp_px = max(1.0, feather * side)
    position = np.arange(side, dtype=np.float32) + 0.5
    distance = np.minimum(position, side - position)             # to the nearest edge
    t = np.clip((distance - 0.5) / ramp_px, 0.0, 1.0)
    edge = t * t * (3.0 - 2.0 * t)
    return np.outer(edge, edge).astype(np.float32)


class RegionStylizer(Stylizer):
    """Runs ``inner`` on a square around the face and blends it back with a feathered mask.

    Args:
        inner: the stylizer applied to the crop (a user model, or any built-in style).
        box_source: ``(frame_index, frame) -> box or None``; None keeps the previous box (or the
            centre square on the first frame).
        margin: the square's side is (1 + margin) x the box's longer side.
        feather: the blend ramp width as a fraction of the square's side.
        box_momentum: EMA rate of the box (1 = follow each frame's box exactly).
    """

    uses_context = True   # passed on to ``inner``, cropped like the frame

    def __init__(self, inner: Stylizer, box_source: BoxSource, margin: float = 0.25,
                 feather: float = 0.12, box_momentum: float = 0.3):
        self.inner, self.box_source = inner, box_source
        self.margin, self.feather, self.box_momentum = margin, feather, box_momentum
        self.name = f"{inner.name} (face region)"
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self._square: np.ndarray | None = None   # smoothed (centre x, centre y, side)
        self.inner.reset()

    def fit_clip(self, samples) -> None:
        self.inner.fit_clip(samples)   # per-clip statistics (colours) do not depend on the crop

    def notes(self) -> dict[str, Any]:
        return self.inner.notes()

    def parameters(self) -> dict[str, Any]:
        return {**self.inner.parameters(), "region": "face", "margin": self.margin,
                "feather": self.feather, "box_momentum": self.box_momentum}

    def _stylize(self, frame: np.ndarray, context=None) -> np.ndarray:
        height, width = frame.shape[:2]
        box = self.box_source(self.index, frame)
        self.index += 1
        self._update_square(box, height, width)
        cx, cy, side_f = self._square
        side = max(8, int(round(side_f)))
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        crop = crop_reflect(frame, x0, y0, side)
        styled = self.inner.stylize(crop, None if context is None else context.crop(x0, y0, side))
        return paste_feathered(frame, styled, x0, y0, feather_mask(side, self.feather))

    def _update_square(self, box: Box | None, height: int, width: int) -> None:
        if box is None or not np.all(np.isfinite(box)):
            if self._square is not None:
                return
            box = centre_box(height, width)
        x0, y0, x1, y1 = box
        side = (1.0 + self.margin) * max(x1 - x0, y1 - y0, 8.0)
        square = np.array([(x0 + x1) / 2, (y0 + y1) / 2, side])
        if self._square is None:
            self._square = square
        else:
            self._square += self.box_momentum * (square - self._square)


def crop_reflect(frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """(side, side, 3) crop at (x0, y0); parts outside the frame are reflected in."""
    import cv2

    height, width = frame.shape[:2]
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x0 + side - width), max(0, y0 + side - height)
    inside = frame[max(0, y0):min(height, y0 + side), max(0, x0):min(width, x0 + side)]
    if left or top or right or bottom:
        border = cv2.BORDER_REFLECT_101 if min(inside.shape[:2]) > max(left, top, right, bottom) \
            else cv2.BORDER_REPLICATE
        inside = cv2.copyMakeBorder(inside, top, bottom, left, right, border)
    return np.ascontiguousarray(inside)


def paste_feathered(frame: np.ndarray, crop: np.ndarray, x0: int, y0: int,
                    weights: np.ndarray) -> np.ndarray:
    """Blend a (side, side, 3) crop into a copy of ``frame`` at (x0, y0) with (side, side) weights."""
    height, width = frame.shape[:2]
    side = crop.shape[0]
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + side), min(height, y0 + side)
    if fx1 <= fx0 or fy1 <= fy0:
        return frame.copy()
    window = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
    alpha = weights[window][..., None]
    region = frame[fy0:fy1, fx0:fx1].astype(np.float32)
    blended = region + alpha * (crop[window].astype(np.float32) - region)
    result = frame.copy()
    result[fy0:fy1, fx0:fx1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return result
