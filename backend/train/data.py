"""The prepared-data folder as the trainer sees it: frames, masks, tracking, train/test split.

Frame i of tracking.npz is frames/{i:06d}.png (docs/DEVELOPING.md). Images are read lazily and
cached as uint8 tensors; targets are composited on the training background with the mask.

What the avatar learns is the head region (docs/TRAINING.md): the person's mask above the neck
cut (``headmodel.regions``, one image line per frame that the trainer sets) and inside the
source frame. A frame's pixels split three ways: the head region (a target, opaque), the
background (a target, transparent) and the rest, which no loss or metric sees: the torso below
the cut, clothing on the lower neck (a collar, ``clothing``), hands in front of the person
(``occluders/``, docs/TRAINING.md) and crop pixels past the source frame's edge (``weight`` is 0
there). Colours at the mask's soft edge are the person's, not the backdrop's
(``foreground_colours``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import InputError
from ..formats import tracking as tracking_format
from ..formats.prepared import FRAMES, MASKS, OCCLUDERS, STYLIZED, PreparedData, frame_name, inside_source

TEST_FRAMES = 350  # 3DGB/INSTA hold out the last 350 frames


def split_frames(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test frame indices: the last 350 frames, or the last 10% of short videos.

    A single frame (one-shot mode) has no held-out split: it is both the training and the
    evaluation frame (``FrameData.held_out`` is False then).
    """
    if n_frames < 1:
        raise InputError("the tracking file has no frames; re-run `python -m backend prepare`")
    if n_frames == 1:
        return np.zeros(1, np.int64), np.zeros(1, np.int64)
    n_test = min(TEST_FRAMES, max(1, math.ceil(0.1 * n_frames)))
    return np.arange(n_frames - n_test), np.arange(n_frames - n_test, n_frames)


class FrameData:
    """Frames, masks and per-frame parameters of one prepared-data folder.

    Attributes:
        tracking: the tracking file; n_frames; width, height; train, test: index arrays.
        held_out: False when the test frames are training frames (one frame only).
        region_fn: None, or ``index -> (H, W, 1)`` map in [0, 1] that limits the frame's mask
            (one-shot mode: the head's silhouette, so the torso of a portrait is not a target).
    """

    def __init__(self, folder: str, images: str | tuple[str, ...] = FRAMES,
                 device: str | torch.device = "cpu"):
        self.folder = folder
        self.data = PreparedData(folder)
        self.device = torch.device(device)
        if not os.path.exists(self.data.tracking):
            raise InputError(f"{folder} has no tracking.npz; run `python -m backend prepare` (or "
                             "`synth`) to make a prepared-data folder first")
        self.tracking = tracking_format.read(self.data.tracking)
        self.n_frames = self.tracking.n_frames
        self.width, self.height = (int(v) for v in self.tracking.image_size)
        self.train, self.test = split_frames(self.n_frames)
        self.held_out = self.n_frames > 1
        self.region_fn = None
        self.cut_lines: torch.Tensor | None = None
        self.shoulder_zones: torch.Tensor | None = None
        self._crops = _crop_boxes(self.data, self.n_frames)
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self._occluded = set(self.data.names(OCCLUDERS))  # most frames have no occluder file
        kinds = (images,) if isinstance(images, str) else tuple(images)
        self.images = kinds[0]
        self._kinds = tuple(dict.fromkeys(kinds))
        for kind in dict.fromkeys(kinds + (MASKS,)):
            self._check_folder(kind)

    def use_first_frame_only(self) -> None:
        """One-shot training on frame 0; the other frames (if any) are held out."""
        self.train = np.zeros(1, np.int64)
        if self.n_frames > 1:
            self.test = np.arange(1, self.n_frames)

    def _check_folder(self, name: str) -> None:
        first = self.image_path(name, 0)
        if not os.path.exists(first):
            hint = "run `python -m backend stylize` first" if name == STYLIZED else \
                "re-run `python -m backend prepare`"
            raise InputError(f"{first} is missing: the prepared-data folder has no {name}/; {hint}")

    def image_path(self, kind: str, index: int) -> str:
        return self.data.image_path(kind, index)

    def _load(self, kind: str, index: int) -> torch.Tensor:
        key = (kind, index)
        if key not in self._cache:
            path = self.image_path(kind, index)
            array = self.data.read_mask(index) if kind == MASKS else \
                self.data.read_occluder(index) if kind == OCCLUDERS else \
                self.data.read_image(kind, index)
            if array is None:
                raise InputError(f"{path} is missing; re-run `python -m backend prepare`")
            if array.shape[:2] != (self.height, self.width):
                raise InputError(f"{path} is {array.shape[1]}x{array.shape[0]}, the tracking file says "
                                 f"{self.width}x{self.height}; re-run prepare")
            self._cache[key] = torch.from_numpy(array.copy())
        return self._cache[key]

    def _foreground(self, kind: str, index: int) -> torch.Tensor:
        """The frame's colours with the backdrop taken out of the mask's soft edge (cached in
        place of the frame as read: a clip's frames are held once)."""
        key = ("foreground:" + kind, index)
        if key not in self._cache:
            raw = self._load(kind, index).numpy()
            self._cache[key] = torch.from_numpy(foreground_colours(
                raw, self._load(MASKS, index).numpy()))
            self._cache.pop((kind, index), None)
        return self._cache[key]

    def set_cut_lines(self, lines: np.ndarray | torch.Tensor | None,
                      shoulders: np.ndarray | torch.Tensor | None = None) -> None:
        """The neck cut of every frame, (T, 3) lines n . p = d in pixels with n pointing down the
        head (``headmodel.regions.image_cut_lines``), and optionally where the shoulders begin
        beside the neck, (T, 3) (``headmodel.regions.image_shoulder_zones``); None: no cut."""
        self.cut_lines = None if lines is None else torch.as_tensor(lines, dtype=torch.float32)
        self.shoulder_zones = None if shoulders is None else torch.as_tensor(shoulders,
                                                                             dtype=torch.float32)

    def below_cut(self, index: int, margin: float = 0.0) -> torch.Tensor:
        """(H, W, 1) in [0, 1]: 1 on the torso side of frame ``index``'s neck cut and on the
        shoulders beside the neck (feathered over ~2 px at 512), every edge moved ``margin``
        feather widths towards the head."""
        if self.cut_lines is None:
            return torch.zeros(self.height, self.width, 1, device=self.device)
        down, side = self._cut_axes(index)
        feather = max(self.width, self.height) / 256
        ramp = lambda distance: (distance / feather + 0.5 + margin).clamp(0, 1)  # noqa: E731
        torso = ramp(down - float(self.cut_lines[index][2]))
        if self.shoulder_zones is not None:
            centre, reach, start = self.shoulder_zones[index].tolist()
            torso = torch.maximum(torso, ramp(down - start) * ramp((side - centre).abs() - reach))
        return torso[..., None]

    def _cut_axes(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, W) each: every pixel centre's position along frame ``index``'s cut normal n (down
        the head, ``n . p``) and across it (``(-n_y, n_x) . p``)."""
        nx, ny, _ = self.cut_lines[index].tolist()
        xs = torch.arange(self.width, device=self.device) + 0.5
        ys = torch.arange(self.height, device=self.device) + 0.5
        return ys[:, None] * ny + xs[None, :] * nx, ys[:, None] * nx - xs[None, :] * ny

    def inside(self, index: int) -> torch.Tensor:
        """(H, W, 1): 1 where the crop shows the source frame, 0 past its edge."""
        if self._crops is None:
            return torch.ones(self.height, self.width, 1, device=self.device)
        box, width, height = self._crops[0][index], *self._crops[1:]
        inside = inside_source(box, self.width, width, height)
        return torch.from_numpy(inside).to(self.device).float()[..., None]

    def occluder(self, index: int) -> torch.Tensor:
        """(H, W, 1) in [0, 1]: 1 where a hand covers frame ``index`` (``occluders/``), 0 on a
        frame without an occluder file."""
        if frame_name(index) not in self._occluded:
            return torch.zeros(self.height, self.width, 1, device=self.device)
        return self._load(OCCLUDERS, index).to(self.device).float()[..., None] / 255

    def clothing(self, index: int) -> torch.Tensor:
        """(H, W, 1), 0 or 1: a collar or shirt on the lower neck of frame ``index``: person
        pixels between a third of the way from the chin to the cut and the cut whose chroma is
        far from the frame's skin (``clothing_mask``) in any of the images trained on (a stylizer
        may paint a shadowed neck as clothes where the real frame shows skin); all 0 without the
        shoulder zones."""
        if self.cut_lines is None or self.shoulder_zones is None:
            return torch.zeros(self.height, self.width, 1, device=self.device)
        key = ("clothing", index)
        if key not in self._cache:
            mask = self._load(MASKS, index).numpy()
            cut, start = float(self.cut_lines[index][2]), float(self.shoulder_zones[index][2])
            down = self._cut_axes(index)[0].cpu().numpy()
            found = np.zeros(mask.shape, np.uint8)
            for kind in self._kinds:  # read again, not cached: the cache holds the targets' colours
                found |= clothing_mask(self.data.read_image(kind, index), mask, down, start, cut)
            self._cache[key] = torch.from_numpy(found)
        return self._cache[key].to(self.device).float()[..., None]

    def weight(self, index: int) -> torch.Tensor:
        """(H, W, 1): 1 where frame ``index`` is a target (head region or background), 0 on the
        torso below the neck cut, on the cut's own feathered edge (the avatar's neck goes on
        below it), on clothing at the neck, under a hand and past the source frame's edge."""
        person = self._load(MASKS, index).to(self.device).float()[..., None] / 255
        return self.inside(index) * (1 - person * self.below_cut(index, margin=2.0)) \
            * (1 - self.occluder(index)) * (1 - self.clothing(index))

    def target(self, index: int, background: torch.Tensor,
               images: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground truth of frame ``index``: RGB (H, W, 3) on ``background`` and the head region's
        alpha (H, W, 1): the person's mask above the neck cut, inside the source frame, not on
        clothing and not under a hand."""
        rgb = self._foreground(images or self.images, index).to(self.device).float() / 255
        mask = self._load(MASKS, index).to(self.device).float()[..., None] / 255
        mask = mask * (1 - self.below_cut(index)) * self.inside(index) * (1 - self.occluder(index)) \
            * (1 - self.clothing(index))
        if self.region_fn is not None:
            mask = mask * self.region_fn(index)
        return rgb * mask + background * (1 - mask), mask

    def photo(self, index: int, images: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``index`` as it is: RGB (H, W, 3) in [0, 1] and the full mask (H, W, 1)."""
        rgb = self._load(images or self.images, index).to(self.device).float() / 255
        return rgb, self._load(MASKS, index).to(self.device).float()[..., None] / 255

    def camera(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """viewmat (4, 4) world-to-camera and K (3, 3) of frame ``index``."""
        t = self.tracking
        return (torch.as_tensor(t.extrinsics[index], device=self.device).float(),
                torch.as_tensor(t.intrinsics[index], device=self.device).float())

    def head_yaw(self) -> np.ndarray:
        """(T,) yaw of the head relative to the camera, radians (0 = frontal)."""
        from scipy.spatial.transform import Rotation

        t = self.tracking
        rot = t.extrinsics[:, :3, :3] @ Rotation.from_rotvec(t.joint_rotations[:, 0]).as_matrix() \
            @ Rotation.from_rotvec(t.joint_rotations[:, 1]).as_matrix()
        # Camera looks along +z; the face looks along head +z, i.e. -z in a frontal OpenCV view.
        forward = rot[:, :, 2]
        return np.arctan2(forward[:, 0], -forward[:, 2])


def _crop_boxes(data: PreparedData, n_frames: int):
    """(crop boxes (T, 3), source width, height) from prepare.json, or None (synthetic or
    converted data: every crop pixel shows the source)."""
    from ..fileio import read_json

    if not os.path.exists(data.prepare_report):
        return None
    try:
        report = read_json(data.prepare_report, "prepare report")
        boxes = np.asarray(report["crop_boxes"], np.float64)
        width, height = int(report["source"]["width"]), int(report["source"]["height"])
    except (InputError, KeyError, TypeError, ValueError):
        return None
    return (boxes, width, height) if boxes.shape == (n_frames, 3) else None


def foreground_colours(rgb: np.ndarray, mask: np.ndarray, solid: int = 250) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with every pixel of the mask's soft edge (0 < mask < ``solid``)
    given the colour of the nearest solid foreground pixel: a soft edge mixes the person with
    the backdrop, and a target composited from it would teach the avatar the backdrop's colour."""
    import cv2

    fully = mask >= solid
    edge = (mask > 0) & ~fully
    if not edge.any() or not fully.any():
        return rgb
    _, labels = cv2.distanceTransformWithLabels((~fully).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    # Labels number the zero (solid) pixels from 1 in row-major order.
    colours = rgb[fully]
    out = rgb.copy()
    out[edge] = colours[labels[edge] - 1]
    return out


CLOTHING_CHROMA = 28.0  # CbCr distance (0-255) from the skin's median that marks clothing


def clothing_mask(rgb: np.ndarray, mask: np.ndarray, down: np.ndarray, start: float,
                  cut: float) -> np.ndarray:
    """(H, W) uint8, 1 on clothing at the lower neck.

    ``down`` (H, W) is each pixel's position along the head's down axis (``n . p`` of the cut
    line); the band is ``start < down < cut``. The skin's chroma is the median (Cb, Cr) of the
    person above the band (face, hair and upper neck, luma above 60: not the dark hair); a band
    pixel of the person whose chroma lies more than ``CLOTHING_CHROMA`` from it is clothing,
    grown by a pixel to take the collar's anti-aliased edge. On cap12 and cap13 the face's own
    pixels stay within 16-22 of their median (99th percentile), a light-blue or grey collar
    lies 40-45 away.
    """
    import cv2

    person = mask >= 128
    band = person & (down > start) & (down < cut)
    if not band.any():
        return np.zeros(mask.shape, np.uint8)
    colour = rgb.astype(np.float32)
    luma = colour @ np.float32([0.299, 0.587, 0.114])
    cb = (colour[..., 2] - luma) * 0.564
    cr = (colour[..., 0] - luma) * 0.713
    skin = person & (down <= start) & (luma > 60)
    if skin.sum() < 20:
        return np.zeros(mask.shape, np.uint8)
    distance = np.hypot(cb - np.median(cb[skin]), cr - np.median(cr[skin]))
    found = (band & (distance > CLOTHING_CHROMA)).astype(np.uint8)
    return cv2.dilate(found, np.ones((3, 3), np.uint8)) & band.astype(np.uint8)
