"""External frames (``--style frames:DIR``): a folder of frames stylized elsewhere.

For example the output of VToonify or StyleGANEX run on the prepared frames. The folder is
checked against ``DATA/frames`` before anything is written: the same number of images, the same
sizes; frames pair up by file name when the names match, otherwise in sorted (natural) order.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..errors import InputError
from .base import Stylizer

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_images(folder: str) -> list[str]:
    """Image file names in ``folder`` in natural order (frame2 before frame10)."""
    names = [n for n in os.listdir(folder)
             if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); replace or remove it") from exc


def pair_external_frames(folder: str, frames_dir: str, frame_names: list[str]) -> list[str]:
    """Match the images of ``folder`` to the prepared frames; return their paths in frame order.

    Raises:
        InputError naming the first frame whose partner is missing or has another size.
    """
    if not os.path.isdir(folder):
        raise InputError(f"the external frames folder {folder} does not exist; pass "
                         "--style frames:DIR with the folder of stylized frames")
    names = list_images(folder)
    if len(names) != len(frame_names):
        first = frame_names[len(names)] if len(names) < len(frame_names) else names[len(frame_names)]
        where = os.path.join(frames_dir, first) if len(names) < len(frame_names) \
            else os.path.join(folder, first)
        raise InputError(f"the external frames folder {folder} has {len(names)} images but "
                         f"{frames_dir} has {len(frame_names)} frames; the first without a partner "
                         f"is {where}. Stylize every prepared frame (same count and order)")
    if set(names) == set(frame_names):
        names = list(frame_names)   # same names: pair by name
    paths = [os.path.join(folder, n) for n in names]
    for frame_name, path in zip(frame_names, paths):
        reference = os.path.join(frames_dir, frame_name)
        size, expected = image_size(path), image_size(reference)
        if size != expected:
            raise InputError(f"{path} is {size[0]} x {size[1]} pixels but {reference} is "
                             f"{expected[0]} x {expected[1]}; external frames must have the size "
                             "of the prepared frames (resize them, or stylize the prepared frames)")
    return paths


class ExternalFrames(Stylizer):
    """A "stylizer" that returns the next image of an already-stylized sequence.

    Args:
        paths: one image path per input frame, in frame order (from ``pair_external_frames``).
        folder: the folder they came from, for the report.
    """

    name = "frames"

    def __init__(self, paths: list[str], folder: str = ""):
        self.paths, self.folder = list(paths), folder
        self.reset()

    def reset(self) -> None:
        self.index = 0

    def parameters(self) -> dict[str, Any]:
        return {"folder": self.folder, "n_frames": len(self.paths)}

    def _stylize(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        if self.index >= len(self.paths):
            raise InputError(f"the external frames folder {self.folder} has only {len(self.paths)} "
                             "images; more frames were asked for")
        path = self.paths[self.index]
        self.index += 1
        with Image.open(path) as image:
            result = np.asarray(image.convert("RGB"))
        if result.shape != frame.shape:
            raise InputError(f"{path} is {result.shape[1]} x {result.shape[0]} pixels but its input "
                             f"frame is {frame.shape[1]} x {frame.shape[0]}")
        return result
