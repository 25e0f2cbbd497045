"""The prepared-data folder: what ``prepare`` writes and the later stages read.

Every path inside the folder is named here, frames and masks are read here, and ``validate``
checks that the folder is complete. The layout (docs/DEVELOPING.md)::

    DATA/frames/000000.png ...   cropped RGB frames; frame i <-> tracking.npz frame i
    DATA/masks/000000.png ...    foreground masks, 8-bit gray, same names and size
    DATA/occluders/000123.png .. optional: hands over the person (255), 8-bit gray, only frames
                                 with one (no file: nothing occludes the frame)
    DATA/stylized/000000.png ... Stage 1's frames, same names and size
    DATA/tracking.npz            the tracking file (docs/FORMAT.md)
    DATA/landmarks.npz           the cleaned landmarks the fit used (crop pixels)
    DATA/prepare.json            what prepare did;  DATA/stylize.json  what stylize did
    DATA/qa/                     pictures for people

Paths and validation need numpy only; reading a PNG imports OpenCV (through ``fileio``) when it
is called, so the Blender add-on can use the rest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

FRAMES, MASKS, STYLIZED, OCCLUDERS = "frames", "masks", "stylized", "occluders"
N_LANDMARKS = 478   # MediaPipe FaceMesh points per frame in landmarks.npz (468 + 2 x 5 iris)
IMAGE_KINDS = (FRAMES, MASKS, STYLIZED, OCCLUDERS)


def inside_source(box, size: int, width: int, height: int) -> np.ndarray:
    """(size, size) bool: the crop pixels whose centres fall inside the source frame.

    ``box`` is the crop (centre x, centre y, side) in source pixels, as prepare.json's
    ``crop_boxes`` hold it; the source spans [0, width] x [0, height] (pixel centres at +0.5).
    Outside, a crop holds no picture: those pixels are never targets.
    """
    cx, cy, side = (float(v) for v in box)
    centres = (np.arange(size) + 0.5) * side / size - side / 2
    x, y = cx + centres, cy + centres
    return ((y >= 0) & (y <= height))[:, None] & ((x >= 0) & (x <= width))[None, :]


def frame_name(index: int) -> str:
    """The file name of frame ``index`` in every image folder."""
    return f"{index:06d}.png"


@dataclass(frozen=True)
class PreparedData:
    """A prepared-data folder at ``root`` (which need not exist yet: writers create it)."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def tracking(self) -> str:
        return self.path("tracking.npz")

    @property
    def landmarks(self) -> str:
        return self.path("landmarks.npz")

    @property
    def prepare_report(self) -> str:
        return self.path("prepare.json")

    @property
    def stylize_report(self) -> str:
        return self.path("stylize.json")

    @property
    def qa(self) -> str:
        return self.path("qa")

    @property
    def occluders(self) -> str:
        """The optional folder of occluder masks (hands over the person): a PNG only for the
        frames that have one."""
        return self.folder(OCCLUDERS)

    def folder(self, kind: str) -> str:
        """The folder of an image kind: ``frames``, ``masks``, ``stylized`` or ``occluders``."""
        if kind not in IMAGE_KINDS:
            raise ValueError(f"unknown image kind {kind!r}; one of {IMAGE_KINDS}")
        return self.path(kind)

    def image_path(self, kind: str, index: int) -> str:
        return os.path.join(self.folder(kind), frame_name(index))

    def names(self, kind: str = FRAMES) -> list[str]:
        """The PNG names of an image folder, sorted (empty when the folder does not exist)."""
        folder = self.folder(kind)
        if not os.path.isdir(folder):
            return []
        return sorted(n for n in os.listdir(folder)
                      if n.lower().endswith(".png") and not n.startswith("."))

    def count(self, kind: str = FRAMES) -> int:
        return len(self.names(kind))

    def read_image(self, kind: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``frames`` or ``stylized`` as (H, W, 3) uint8 RGB.

        Raises:
            InputError: the file is missing or unreadable (names it and what to re-run).
        """
        return _read(self.image_path(kind, index), gray=False)

    def read_frame(self, index: int) -> np.ndarray:
        return self.read_image(FRAMES, index)

    def read_mask(self, index: int) -> np.ndarray | None:
        """Mask ``index`` as (H, W) uint8, or None when the folder has no mask for it."""
        path = self.image_path(MASKS, index)
        return _read(path, gray=True) if os.path.exists(path) else None

    def read_occluder(self, index: int) -> np.ndarray | None:
        """Occluder mask ``index`` as (H, W) uint8 (255 = a hand covers the pixel), or None when
        nothing occludes the frame (no file: most frames, every frame of a folder without
        ``occluders/``)."""
        path = self.image_path(OCCLUDERS, index)
        return _read(path, gray=True) if os.path.exists(path) else None

    def clear_occluders(self) -> None:
        """Remove the occluder PNGs (and the folder, when that leaves it empty): a writer of new
        frames calls it first, since an earlier run's occluders need not fit them."""
        folder = self.occluders
        if not os.path.isdir(folder):
            return
        for name in self.names(OCCLUDERS):
            os.unlink(os.path.join(folder, name))
        if not os.listdir(folder):
            os.rmdir(folder)

    def validate(self, *kinds: str) -> int:
        """Check the tracking file and the image folders ``kinds`` (default frames and masks):
        each holds exactly frames 0..T-1 of the tracking. Returns T.

        Raises:
            InputError: the folder is not a complete prepared-data folder (says what to re-run).
            FormatError: the tracking file is invalid.
        """
        from . import tracking as tracking_format

        if not os.path.exists(self.tracking):
            raise InputError(f"{self.root} has no tracking.npz; run `python -m backend prepare` "
                             "(or `synth`) to make a prepared-data folder first")
        n_frames = tracking_format.read(self.tracking).n_frames
        for kind in kinds or (FRAMES, MASKS):
            names = self.names(kind)
            expected = [frame_name(i) for i in range(n_frames)]
            if names != expected:
                stage = "stylize" if kind == STYLIZED else "prepare"
                missing = sorted(set(expected) - set(names))[:3]
                raise InputError(f"{self.folder(kind)} holds {len(names)} PNGs for the tracking's "
                                 f"{n_frames} frames (missing: {', '.join(missing) or 'none'}); "
                                 f"re-run `python -m backend {stage}`")
        return n_frames


def _read(path: str, gray: bool) -> np.ndarray:
    from ..fileio import read_png

    try:
        return read_png(path, gray=gray)
    except InputError as exc:
        raise InputError(f"{exc} (in the prepared-data folder {os.path.dirname(os.path.dirname(path))}; "
                         "re-run the stage that wrote it)") from exc

