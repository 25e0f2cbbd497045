"""Foreground masks: mediapipe selfie segmentation on the crop, or the user's own mask files."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..progress import NativeLogsHidden
from .sources import IMAGE_EXTENSIONS


class SelfieSegmenter:
    """mediapipe's selfie segmentation (the model ships inside the wheel). Its masks are soft;
    ``refine_edges`` sharpens them (the caller's choice: it may run on another thread)."""

    def __init__(self, landscape: bool = False):
        # mediapipe/TFLite log INFO/WARNING lines from their threads as the graph starts and
        # on its first frame: hidden (when the CLI says so) until the first frame is done.
        self._quiet = NativeLogsHidden()
        try:
            import mediapipe as mp

            self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(
                model_selection=1 if landscape else 0)
        except BaseException:
            self._quiet.close()
            raise

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask, 255 = person."""
        try:
            result = self._model.process(np.ascontiguousarray(image))
        finally:
            self._quiet.close()  # the graph has started and seen a frame
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(image.shape[:2], np.uint8)
        return np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def close(self) -> None:
        self._quiet.close()
        self._model.close()


def refine_edges(image: np.ndarray, mask: np.ndarray, eps: float = 1e-3,
                 reach: float = 2.0) -> np.ndarray:
    """Snap a soft mask's edges to the image's: a colour guided filter (He, Sun and Tang 2010),
    applied only where the mask itself is undecided.

    Selfie segmentation runs at 256 pixels and its edge leans into dark, low-contrast parts of the
    outline (a face's shadow side): on the synthetic subject its edge sits 0.7 px off the true
    outline on average, 0.1 px after this (docs/TRACKING.md). In every window of radius
    ``size / 32`` the filter's output is a linear function of the colour, fitted to the mask, so
    it follows colour edges and stays smooth where the colours do. The coefficients are computed
    at a quarter of the size (they are smooth: the same edges as at full size to 0.01 px), the
    output at full size.

    A linear function of colour cannot tell dark hair from a skin-coloured wall behind it: on
    real clips the filtered mask dipped to 0.8 inside the hair and glowed at 0.1-0.3 over the wall
    for 10 px around the head. So the filtered value is used only on the mask's soft band
    (2 < mask < 253) and fades to the segmentation's own value within ``reach`` pixels of it;
    where the segmentation is sure (inside the head, far out on the backdrop) its value stands.

    Args:
        image: (H, W, 3) uint8 RGB; mask: (H, W) uint8, 255 = person.
    Returns:
        (H, W) uint8 mask.
    """
    import cv2

    undecided = ((mask > 2) & (mask < 253)).astype(np.uint8)
    if not undecided.any():
        return mask.copy()
    height, width = mask.shape
    small = (max(width // 4, 1), max(height // 4, 1))
    colour = cv2.resize(image, small, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    soft = cv2.resize(mask, small, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    side = 2 * max(round(min(height, width) / 128), 1) + 1

    def box(values):
        return cv2.boxFilter(values, -1, (side, side), borderType=cv2.BORDER_REFLECT)

    mean_colour, mean_mask = box(colour), box(soft)
    covariance = box(colour * soft[..., None]) - mean_colour * mean_mask[..., None]
    # The colour's 3 x 3 covariance per window (6 distinct entries), regularized by eps.
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    variance = box(np.stack([colour[..., i] * colour[..., j] for i, j in pairs], -1))
    variance -= np.stack([mean_colour[..., i] * mean_colour[..., j] for i, j in pairs], -1)
    xx, xy, xz, yy, yz, zz = np.moveaxis(variance, -1, 0)
    xx, yy, zz = xx + eps, yy + eps, zz + eps
    # Solve by the adjugate (symmetric 3 x 3): a = Sigma^-1 cov.
    c00, c01, c02 = yy * zz - yz * yz, xz * yz - xy * zz, xy * yz - xz * yy
    c11, c12, c22 = xx * zz - xz * xz, xy * xz - xx * yz, xx * yy - xy * xy
    determinant = xx * c00 + xy * c01 + xz * c02
    u, v, w = np.moveaxis(covariance, -1, 0)
    slope = np.stack([c00 * u + c01 * v + c02 * w, c01 * u + c11 * v + c12 * w,
                      c02 * u + c12 * v + c22 * w], -1) / determinant[..., None]
    offset = mean_mask - _dot3(slope, mean_colour)
    slope = cv2.resize(box(slope), (width, height), interpolation=cv2.INTER_LINEAR)
    offset = cv2.resize(box(offset), (width, height), interpolation=cv2.INTER_LINEAR)
    refined = _dot3(slope, image.astype(np.float32) * np.float32(1 / 255.0)) + offset
    distance = cv2.distanceTransform(1 - undecided, cv2.DIST_L2, 3)
    share = np.clip(1 - distance / reach, 0, 1)
    blended = share * refined * 255.0 + (1 - share) * mask.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _dot3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel dot product of two (H, W, 3) arrays (faster than a sum over the last axis)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


class UserMasks:
    """Masks from a folder, matched to frames by file stem, else by sorted position.

    For a video, the k-th mask (sorted by name) belongs to source frame k; for an image folder the
    mask with the same file stem as the image is used.
    """

    def __init__(self, folder: str):
        if not os.path.isdir(folder):
            raise InputError(f"mask folder not found: {folder}; check the --masks path")
        names = sorted(n for n in os.listdir(folder)
                       if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
        if not names:
            raise InputError(f"no mask images in {folder}; --masks needs one image per frame")
        self.folder = folder
        self.names = names
        self.by_stem = {os.path.splitext(n)[0]: n for n in names}

    def path_for(self, index: int, stem: str = "") -> str:
        if stem and stem in self.by_stem:
            return os.path.join(self.folder, self.by_stem[stem])
        if index < len(self.names):
            return os.path.join(self.folder, self.names[index])
        raise InputError(f"no mask for frame {index}{f' ({stem})' if stem else ''} in "
                         f"{self.folder}: it has {len(self.names)} masks; give one per frame")

    def load(self, index: int, shape: tuple[int, int], stem: str = "") -> np.ndarray:
        """The mask of source frame ``index`` as (H, W) uint8, resized to ``shape`` if needed."""
        from PIL import Image, UnidentifiedImageError

        path = self.path_for(index, stem)
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGBA") if "A" in handle.getbands() else handle.convert("L")
                if image.mode == "RGBA":
                    image = image.getchannel("A")
                if image.size != (shape[1], shape[0]):
                    image = image.resize((shape[1], shape[0]), Image.BILINEAR)
                return np.asarray(image, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read the mask {path}: {exc}") from exc
