"""The built-in ``exemplar:IMG`` style: palette and tone transfer toward one style image.

Per frame, in numbered steps:

1. Edge-preserving smoothing (as in ``toon``).
2. Tone transfer in CIELAB (Reinhard et al. 2001): each channel is shifted and scaled so its
   mean and standard deviation match the exemplar's. The video's statistics are *locked*: taken
   from the first frame and then followed by a slow exponential moving average, so the colours
   cannot pump from frame to frame as the subject moves.
3. Soft luminance quantization and ink lines (toon shading, as in ``toon``).
4. Palette snapping: each colour is pulled toward a soft (softmax-weighted) mix of the
   exemplar's k-means palette. The palette is computed once from the exemplar; the mapping is a
   precomputed 3D lookup table over 8-bit CIELAB, so a frame costs one table look-up per pixel.
5. ``strength`` blend with the input and the flow-guided temporal blend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .base import Stylizer, check_frame, check_range
from .temporal import FlowStabilizer
from .toon import (
    REFERENCE_SIDE,
    apply_lines,
    blend_strength,
    edge_preserving_smooth,
    ink_lines,
    quantization_table,
)

log = logging.getLogger("toonsplat")

LUT_BITS = 6                 # the palette table has 2**LUT_BITS cells per CIELAB axis
PALETTE_SAMPLES = 20_000     # exemplar pixels used for k-means


@dataclass
class ExemplarParams:
    """Settings of the ``exemplar`` style (each has a ``--param`` on the command line)."""

    strength: float = 1.0      # 0 = the input unchanged, 1 = the full style
    tone: float = 0.8          # how far the colour statistics move toward the exemplar (0..1)
    palette: float = 0.6       # how far colours snap to the exemplar palette (0..1)
    colors: int = 8            # palette size, k of k-means (2..32)
    levels: int = 5            # luminance bands of the toon shading (2..16)
    line_weight: float = 1.0   # ink line width, 0 = no lines (0..4)
    smoothing: float = 1.0     # edge-preserving smoothing (0..4)
    sharpness: float = 8.0     # steepness of the band edges (1..50)
    statistics_momentum: float = 0.02  # EMA rate of the locked video colour statistics (0..1)
    temporal: float = 0.6      # weight of the flow-warped previous output, 0 = off (0..0.95)

    def validated(self) -> ExemplarParams:
        for name, low, high in (("strength", 0, 1), ("tone", 0, 1), ("palette", 0, 1),
                                ("line_weight", 0, 4), ("smoothing", 0, 4), ("sharpness", 1, 50),
                                ("statistics_momentum", 0, 1), ("temporal", 0, 0.95)):
            check_range(name, getattr(self, name), low, high)
        self.colors = int(check_range("colors", self.colors, 2, 32))
        self.levels = int(check_range("levels", self.levels, 2, 16))
        return self


class ExemplarStylizer(Stylizer):
    """Palette and tone transfer toward ``exemplar`` with toon shading.

    Args:
        exemplar: (H, W, 3) uint8 RGB style image, any size.
        params: the style settings.
        source: where the exemplar came from (a path), for the report.
    """

    name = "exemplar"
    warning = ""   # set when this global style stands in for the per-region one

    def __init__(self, exemplar: np.ndarray, params: ExemplarParams | None = None, source: str = ""):
        import cv2

        check_frame(exemplar, "style exemplar")
        self.params = (params or ExemplarParams()).validated()
        self.source = source
        lab = cv2.cvtColor(exemplar, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float32)
        self.exemplar_mean = lab.mean(axis=0)
        self.exemplar_std = np.maximum(lab.std(axis=0), 1.0)
        self.palette_lab = kmeans_palette(lab, self.params.colors)
        self.palette_table = palette_table(self.palette_lab, self.params.palette)
        self.luminance_table = quantization_table(self.params.levels, self.params.sharpness)
        self.stabilizer = FlowStabilizer(self.params.temporal)
        self.reset()

    def reset(self) -> None:
        self.video_mean: np.ndarray | None = None
        self.video_std: np.ndarray | None = None
        self.stabilizer.reset()

    def parameters(self) -> dict[str, Any]:
        palette_rgb = _lab_to_rgb(self.palette_lab)
        return {**asdict(self.params), "exemplar": self.source,
                "palette_rgb": palette_rgb.tolist()}

    def notes(self) -> dict[str, Any]:
        return {"warning": self.warning} if self.warning else {}

    def _stylize(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        p = self.params
        scale = min(frame.shape[:2]) / REFERENCE_SIDE
        smooth = edge_preserving_smooth(frame, p.smoothing, scale)
        lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2Lab)
        lab = self._transfer_tone(lab)
        lightness, a, b = cv2.split(lab)
        shaded = cv2.LUT(lightness, self.luminance_table)
        if p.line_weight > 0:
            lines = ink_lines(lightness, p.line_weight, scale)
        index = ((shaded.astype(np.int32) >> (8 - LUT_BITS)) << (2 * LUT_BITS)) \
            | ((a.astype(np.int32) >> (8 - LUT_BITS)) << LUT_BITS) | (b >> (8 - LUT_BITS))
        snapped = self.palette_table[index]                   # (H, W, 3) uint8 CIELAB
        if p.line_weight > 0:
            snapped[..., 0] = apply_lines(np.ascontiguousarray(snapped[..., 0]), lines)
        styled = cv2.cvtColor(snapped, cv2.COLOR_Lab2RGB)
        styled = blend_strength(frame, styled, p.strength)
        return self.stabilizer(frame, styled)

    def _transfer_tone(self, lab: np.ndarray) -> np.ndarray:
        """Reinhard transfer with EMA-locked video statistics. (H, W, 3) uint8 -> uint8."""
        import cv2

        mean, std = cv2.meanStdDev(lab)
        mean, std = mean.reshape(3).astype(np.float32), np.maximum(std.reshape(3), 1.0).astype(np.float32)
        if self.video_mean is None:
            self.video_mean, self.video_std = mean, std
        else:
            m = self.params.statistics_momentum
            self.video_mean = (1 - m) * self.video_mean + m * mean
            self.video_std = (1 - m) * self.video_std + m * std
        gain = 1.0 + self.params.tone * (self.exemplar_std / self.video_std - 1.0)
        target_mean = self.video_mean + self.params.tone * (self.exemplar_mean - self.video_mean)
        offset = target_mean - gain * self.video_mean
        # Per-channel affine map as one 3x3 diagonal transform (fast, saturating to uint8).
        matrix = np.concatenate([np.diag(gain), offset[:, None]], axis=1).astype(np.float32)
        return cv2.transform(lab, matrix)


def kmeans_palette(lab_pixels: np.ndarray, colors: int, seed: int = 0) -> np.ndarray:
    """k-means palette of CIELAB pixels (deterministic for a seed).

    Args:
        lab_pixels: (N, 3) float32 8-bit CIELAB.
        colors: k.

    Returns:
        (k', 3) float32 palette, k' <= k (fewer when the exemplar has fewer distinct colours),
        sorted by lightness.
    """
    import cv2

    rng = np.random.default_rng(seed)
    if len(lab_pixels) > PALETTE_SAMPLES:
        lab_pixels = lab_pixels[rng.choice(len(lab_pixels), PALETTE_SAMPLES, replace=False)]
    distinct = np.unique(lab_pixels.round(), axis=0)
    colors = min(colors, len(distinct))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.5)
    _, _, centers = cv2.kmeans(np.ascontiguousarray(lab_pixels, np.float32), colors, None, criteria,
                               3, cv2.KMEANS_PP_CENTERS)
    return centers[np.argsort(centers[:, 0])].astype(np.float32)


def palette_table(palette: np.ndarray, amount: float, temperature: float = 12.0) -> np.ndarray:
    """3D lookup table: 8-bit CIELAB cell -> colour pulled toward a soft palette mix.

    Distances weigh lightness by half, so shading bands survive the snapping; the softmax
    temperature (CIELAB units) keeps the mapping continuous, which keeps it steady on video.

    Args:
        palette: (k, 3) float32 CIELAB colours.
        amount: 0 = the cell colour, 1 = the soft palette colour.

    Returns:
        (2**(3*LUT_BITS), 3) uint8, indexed by (L >> s) << 2b | (a >> s) << b | (b >> s).
    """
    cells = 2 ** LUT_BITS
    centres = (np.arange(cells, dtype=np.float32) + 0.5) * (256.0 / cells)
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(-1, 3)
    weights = np.array([0.5, 1.0, 1.0], np.float32)
    distance = np.sqrt((((grid[:, None, :] - palette[None]) * weights) ** 2).sum(-1))   # (cells^3, k)
    logits = -(distance - distance.min(axis=1, keepdims=True)) / temperature
    soft = np.exp(logits)
    soft /= soft.sum(axis=1, keepdims=True)
    mix = soft @ palette
    # Keep the cell's own lightness partly, so the toon bands stay readable.
    mix[:, 0] = 0.5 * mix[:, 0] + 0.5 * grid[:, 0]
    table = grid + amount * (mix - grid)
    return np.clip(np.round(table), 0, 255).astype(np.uint8)


def load_exemplar(path: str) -> np.ndarray:
    """Read a style image as (H, W, 3) uint8 RGB; InputError naming the file if it cannot."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError(f"style exemplar image not found: {path}; pass --style exemplar:IMAGE "
                         "with the path of a PNG or JPEG")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read the style exemplar {path} as an image ({exc}); "
                         "use a PNG or JPEG file") from exc


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    import cv2

    pixels = np.clip(np.round(lab), 0, 255).astype(np.uint8).reshape(1, -1, 3)
    return cv2.cvtColor(pixels, cv2.COLOR_Lab2RGB).reshape(-1, 3)


# -- the face-aware variant: a palette per face region ------------------------------------------


def exemplar_stylizer(exemplar: np.ndarray, params: dict[str, Any] | None = None,
                      source: str = "") -> Stylizer:
    """The ``exemplar:IMAGE`` style: per-region palettes when the exemplar shows a face.

    FaceMesh runs once on the exemplar. With a face, its regions (skin, hair, eyes, lips, ...,
    as the ``cel`` style finds them in the frames) give one colour each, and the ``cel`` shading
    draws every frame region in the exemplar's colour of that region; frames without landmarks
    get the global style. Without a face (or without mediapipe) the global palette style is
    used for every frame, and its report says why.

    Args:
        exemplar: (H, W, 3) uint8 RGB style image.
        params: parameter name -> value; ``ExemplarParams`` fields and ``CelParams`` fields.
        source: the exemplar's path, for the report.
    """
    from .cel import CelParams, CelStylizer
    from .faces import detect_landmarks
    from .styles import build_params

    check_frame(exemplar, "style exemplar")
    params = dict(params or {})
    own = {f for f in ExemplarParams.__dataclass_fields__}
    cel_fields = {f for f in CelParams.__dataclass_fields__}
    unknown = sorted(set(params) - own - cel_fields)
    if unknown:
        raise InputError(f"unknown parameter(s) {unknown} for the exemplar style; known: "
                         f"{', '.join(sorted(own | cel_fields))}")
    global_style = ExemplarStylizer(
        exemplar, build_params(ExemplarParams, {k: v for k, v in params.items() if k in own},
                               "exemplar"), source=source)
    points = detect_landmarks(exemplar)
    if points is None:
        global_style.warning = (f"no face was found in the style exemplar {source or 'image'}: "
                                "its global palette is used, not one per face region")
        log.warning("%s", global_style.warning)
        return global_style
    cel_params = build_params(CelParams, {k: v for k, v in params.items() if k in cel_fields},
                              "exemplar")
    targets = region_colours(exemplar, points)
    stylizer = CelStylizer(cel_params, targets=targets, fallback=global_style, name="exemplar")
    stylizer.extra_parameters = {"exemplar": source, "exemplar_regions": sorted(targets)}
    return stylizer


def region_colours(image: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """Region name -> (3,) float32 CIELAB median colour of that region in a face image.

    The person is what differs from the colour of the image's border (there is no mask); the
    backdrop takes the border's colour. Regions with fewer than a few pixels are left out.
    """
    import cv2

    from .faces import check_points
    from .regions import (
        LAB_WEIGHTS,
        REGIONS,
        colour_distance,
        colour_model,
        face_polygons,
        region_labels,
    )

    points = check_points(points)
    scale = min(image.shape[:2]) / REFERENCE_SIDE
    lab = cv2.cvtColor(edge_preserving_smooth(image, 1.0, scale), cv2.COLOR_RGB2Lab)
    ring = max(2, int(0.04 * min(image.shape[:2])))
    border = np.concatenate([lab[:ring].reshape(-1, 3), lab[-ring:].reshape(-1, 3),
                             lab[:, :ring].reshape(-1, 3), lab[:, -ring:].reshape(-1, 3)])
    backdrop = np.median(border, axis=0).astype(np.float32)
    person = (colour_distance(lab, backdrop, LAB_WEIGHTS) > 20.0).astype(np.uint8) * 255
    person = np.maximum(person, face_polygons(points, image.shape[:2])["face"])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    person = cv2.morphologyEx(cv2.morphologyEx(person, cv2.MORPH_OPEN, kernel),
                              cv2.MORPH_CLOSE, kernel)
    labels = region_labels(points, person, lab, colour_model([(lab, points, person)]))
    colours = {"background": backdrop}
    for index, name in enumerate(REGIONS):
        pixels = lab[labels == index]
        if name != "background" and len(pixels) >= 6:
            colours[name] = np.median(pixels, axis=0).astype(np.float32)
    return colours
