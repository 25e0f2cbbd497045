"""Foreground masks: mediapipe selfie segmentation on the crop, or the user's own mask files."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .sources import IMAGE_EXTENSIONS


class SelfieSegmenter:
    """mediapipe's selfie segmentation (the model ships inside the wheel)."""

    def __init__(self, landscape: bool = False):
        import mediapipe as mp

        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=1 if landscape else 0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W) uint8 mask, 255 = person."""
        result = self._model.process(np.ascontiguousarray(image))
        mask = result.segmentation_mask
        if mask is None:
            return np.zeros(image.shape[:2], np.uint8)
        return np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def close(self) -> None:
        self._model.close()


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
