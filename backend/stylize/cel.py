"""The built-in ``cel`` style: face-aware cel shading from the regions prepare already found.

Per clip, once (``fit_clip``, on a few frames spread over the clip):

1. Exposure and white balance from the skin (``tone.fit_tone``): one table per colour channel.
2. A colour model of the person (skin, hair, clothes) and a palette: each region's median
   colour in the clip (the *reference*) and its cel colour (the *target*): skin and hair a
   little more saturated, the neck a shade darker than the face, brows darker than the hair,
   white sclera, a dark saturated iris, a dark mouth interior, off-white teeth. Clothes have
   no clip colour: each frame draws them in a strong blur of their own colours
   (``local_colours``), so a black turtleneck under an orange suit stays black.

Per frame:

3. The clip correction, then edge-preserving smoothing (as in ``toon``).
4. Region labels (``regions.region_labels``) from the frame's FaceMesh landmarks, its person
   mask and colour; the teeth score is averaged over time (``SteadyRegions.smooth_teeth``).
5. Each pixel becomes its region's target colour plus a few soft luminance bands: its lightness
   difference to the region's reference, through a soft staircase (``levels`` plateaus
   ``band_step`` apart), and a fraction of its own chroma (``1 - flatness``). The background
   takes a strongly blurred copy of the frame instead, so the backdrop stays plain.
6. The eyes are drawn, not filtered: sclera and iris are flat regions, the pupil a dark disc,
   a catch-light a small white one, all cut to the eye opening.
7. Ink: XDoG lines of the smoothed lightness where the region wants them (face, clothes; not on
   the backdrop or inside the eyes), drawn lines along the upper lids (thick), lower lids,
   iris rims, the lips' inner contour and the jaw, and the silhouette of the person mask.
8. A slight anti-aliasing blur (``softness``; crisp edges that move by a fraction of a pixel
   change more pixel values than soft ones), the ``strength`` blend and the flow-guided
   temporal blend (``temporal.FlowStabilizer``, weight 0.85: the drawn regions and lines move
   with the landmarks, and the blend keeps them from shimmering).

A frame without landmarks (no face found, or a bare ``stylize(frame)`` call) gets the face-blind
``fallback`` style (``toon`` with the same line weight and smoothing) and is counted in
``notes()``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .base import Stylizer, check_range
from .faces import (
    EYES,
    FACE_OVAL,
    LIPS_INNER,
    LOWER_LIDS,
    UPPER_LIDS,
    check_points,
    eye_width,
    iris_circle,
    polygon_mask,
)
from .regions import (
    BACKGROUND,
    BROW,
    CLOTHES,
    HAIR,
    IRIS,
    LIPS,
    MOUTH,
    NECK,
    REGIONS,
    SCLERA,
    SKIN,
    TEETH,
    ColourModel,
    colour_model,
    face_polygons,
    region_labels,
    teeth_score,
)
from .temporal import FlowStabilizer
from .tone import ClipTone, fit_tone
from .toon import REFERENCE_SIDE, blend_strength, edge_preserving_smooth, ink_lines

N_REGIONS = len(REGIONS)
CLIP_SAMPLES = 12          # frames fit_clip looks at
JAW = FACE_OVAL[10:27]     # the face oval from one jaw angle round the chin to the other

# Per region (in REGIONS order): how strongly the luminance bands show, how much of the pixel's
# own chroma survives flattening (times 1 - flatness), how strong the XDoG lines are, and the
# band plateaus allowed below and above the region's colour.
BAND_AMOUNT = np.float32([0.5, 0.8, 0.6, 0.8, 1.0, 0.3, 0.6, 1.0, 0.0, 0.3, 1.2])
CHROMA_KEPT = np.float32([0.3, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 0.3, 0.0, 0.3, 0.0])
LINE_AMOUNT = np.float32([0.0, 0.7, 0.25, 0.6, 1.0, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0])
BAND_RANGE = {BACKGROUND: (-1, 1), CLOTHES: (-1, 3), MOUTH: (-1, 5), SCLERA: (0, 0), BROW: (-1, 0),
              TEETH: (-1, 0)}
SCLERA_LAB = (242.0, 128.0, 131.0)
TEETH_LAB = (232.0, 128.0, 134.0)   # a clean, slightly warm off-white
PUPIL_L = 22.0
CATCHLIGHT_L = 252.0
SILHOUETTE = 0.5           # darkness of the person mask's outline
INK = 0.85                 # darkness of a full ink line (lightness x 1 - INK)
WORK_SIDE = 256            # regions and colours at most this many pixels across (shorter side)
BACKDROP_SIDE = 24         # the backdrop is a blur of the frame at this many pixels across
CLOTHES_SIDE = 32          # the clothes' colours: a blur of them at this many pixels across


@dataclass
class CelParams:
    """Settings of the ``cel`` style (each has a ``--param`` on the command line)."""

    strength: float = 1.0       # 0 = the input unchanged, 1 = the full style
    levels: int = 3             # luminance bands per region: shadow, base, highlight (2..6)
    band_step: float = 16.0     # lightness between two bands, 8-bit CIELAB L units (4..64)
    line_weight: float = 1.0    # ink line width, 0 = no lines (0..4)
    smoothing: float = 1.0      # edge-preserving smoothing, 0 = none (0..4)
    saturation: float = 1.05    # chroma gain of the region colours (0..3)
    flatness: float = 0.7       # 1 = one colour per region, 0 = the pixels' own chroma (0..1)
    sharpness: float = 5.0      # steepness of the band edges (1..50)
    exposure: float = 0.7       # how far the clip's skin luminance moves to the reference (0..1)
    white_balance: float = 0.4  # how far the skin's chromaticity moves to the reference (0..1)
    softness: float = 1.5       # anti-aliasing blur of the result, pixels at 512 (0..4)
    temporal: float = 0.85      # weight of the flow-warped previous output, 0 = off (0..0.95)

    def validated(self) -> CelParams:
        for name, low, high in (("strength", 0, 1), ("band_step", 4, 64), ("line_weight", 0, 4),
                                ("softness", 0, 4),
                                ("smoothing", 0, 4), ("saturation", 0, 3), ("flatness", 0, 1),
                                ("sharpness", 1, 50), ("exposure", 0, 1), ("white_balance", 0, 1),
                                ("temporal", 0, 0.95)):
            check_range(name, getattr(self, name), low, high)
        self.levels = int(check_range("levels", self.levels, 2, 6))
        return self


@dataclass
class ClipPalette:
    """Per-region colours, (N_REGIONS, 3) float32 CIELAB (8-bit OpenCV scale) each.

    ``reference``: the region's median colour in the clip (what a pixel is compared with);
    ``target``: the colour it is drawn in.
    """

    reference: np.ndarray
    target: np.ndarray

    @property
    def reference_table(self) -> np.ndarray:
        """(1, 256, 3) uint8 ``cv2.LUT`` table: label -> reference colour."""
        return _label_table(self.reference)

    @property
    def target_table(self) -> np.ndarray:
        return _label_table(self.target)

    def report(self) -> dict[str, Any]:
        return {"target_rgb": {name: _lab_to_rgb(self.target[i]) for i, name in enumerate(REGIONS)}}


class CelStylizer(Stylizer):
    """The ``cel`` style. See the module docstring for the steps.

    Args:
        params: the style settings.
        targets: region name -> (3,) CIELAB colour that replaces the cel palette's target for
            that region (the ``exemplar`` style's per-region palette); None for the own palette.
        fallback: the style for frames without landmarks (default: ``toon``).
        name: the style's name in reports.
    """

    name = "cel"
    uses_context = True

    def __init__(self, params: CelParams | None = None, targets: dict[str, np.ndarray] | None = None,
                 fallback: Stylizer | None = None, name: str = "cel"):
        self.params = (params or CelParams()).validated()
        self.targets = targets or {}
        self.name = name
        if fallback is None:
            from .toon import ToonParams, ToonStylizer

            fallback = ToonStylizer(ToonParams(line_weight=self.params.line_weight,
                                               smoothing=self.params.smoothing,
                                               strength=self.params.strength))
        self.fallback = fallback
        self.band_table = band_table(self.params)
        self.stabilizer = FlowStabilizer(self.params.temporal)
        self.tone: ClipTone | None = None
        self.colours: ColourModel | None = None
        self.palette: ClipPalette | None = None
        self.fitted_on = 0
        self.extra_parameters: dict[str, Any] = {}   # the exemplar style's (its image, regions)
        self.reset()

    def reset(self) -> None:
        self.stabilizer.reset()
        self.fallback.reset()
        self.steady = SteadyRegions()
        self.fallback_frames = 0
        self.frames = 0

    def parameters(self) -> dict[str, Any]:
        return {**asdict(self.params), "fallback": self.fallback.name, **self.extra_parameters}

    def notes(self) -> dict[str, Any]:
        notes: dict[str, Any] = {"frames": self.frames, "fallback_frames": self.fallback_frames,
                                 "clip_samples": self.fitted_on}
        if self.tone is not None:
            notes["tone"] = self.tone.report()
        if self.palette is not None:
            notes["palette"] = self.palette.report()
        if self.fallback_frames:
            notes["warning"] = (f"{self.fallback_frames} of {self.frames} frames had no face "
                                f"landmarks and got the {self.fallback.name} style instead")
        return notes

    # -- per clip -------------------------------------------------------------------------

    def fit_clip(self, samples) -> None:
        """Exposure, white balance, colour model and palette from (frame, context) samples;
        samples without landmarks are skipped (nothing is fitted when none has them, or when
        the faces show no skin: all outside the frames)."""
        usable = [(frame, check_points(context.landmarks), context.mask)
                  for frame, context in samples
                  if context is not None and context.landmarks is not None]
        skin = _skin_median(usable) if usable else None
        if skin is None:
            return
        import cv2

        p = self.params
        self.tone = fit_tone(skin, p.exposure, p.white_balance)
        smoothed = [(cv2.cvtColor(self._smooth(self.tone.apply(frame)), cv2.COLOR_RGB2Lab),
                     points, mask) for frame, points, mask in usable]
        self.colours = colour_model(smoothed)
        reference = clip_reference(smoothed, self.colours)
        self.palette = ClipPalette(reference, cel_targets(reference, p.saturation, self.targets))
        self.fitted_on = len(usable)

    # -- per frame ------------------------------------------------------------------------

    def _stylize(self, frame: np.ndarray, context=None) -> np.ndarray:
        self.frames += 1
        points = None if context is None or context.landmarks is None else context.landmarks
        if points is not None and self.palette is None:
            self.fit_clip([(frame, context)])   # a bare call: lock the statistics on this frame
        if points is None or self.palette is None or min(frame.shape[:2]) < 32:
            self.fallback_frames += 1
            self.stabilizer.reset()
            return self.fallback.stylize(frame)
        points = check_points(points)
        mask = context.mask if context.mask is not None and context.mask.shape == frame.shape[:2] \
            else None
        points, mask = self.steady(points, mask, min(frame.shape[:2]) / REFERENCE_SIDE)
        styled = self.shade(frame, points, mask)
        styled = blend_strength(frame, styled, self.params.strength)
        return self.stabilizer(frame, styled)

    def shade(self, frame: np.ndarray, points: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Steps 3-7 on one frame (no temporal blending). (H, W, 3) uint8 RGB.

        Tone, smoothing, regions, colours, XDoG lines and the mask outline are worked out with
        the shorter side at most ``WORK_SIDE`` pixels (half size for a 512 frame, like
        ``toon``'s smoothing); eyes and the drawn lines are drawn at full size.
        """
        import cv2

        p = self.params
        height, width = frame.shape[:2]
        factor = min(1.0, WORK_SIDE / min(height, width))
        work, work_points, work_mask = frame, points, mask
        if factor < 1:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            work = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            work_points = points * np.float32([size[0] / width, size[1] / height])
            work_mask = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
        work = self.tone.apply(work)
        lab = cv2.cvtColor(self._smooth(work), cv2.COLOR_RGB2Lab)
        teeth = self.steady.smooth_teeth(teeth_score(lab, work_points, self.colours))
        labels = region_labels(work_points, work_mask, lab, self.colours, teeth)
        source = lab.astype(np.float32)
        background = labels == BACKGROUND
        np.copyto(source, _backdrop(work, background), where=background[..., None])
        local = None
        if "clothes" not in self.targets:          # clothes in their own colours, flattened
            local = local_colours(source, labels == CLOTHES, p.saturation)
        out = flat_bands(source, labels, self.palette, self.band_table, 1.0 - p.flatness, local)
        work_scale = min(labels.shape) / REFERENCE_SIDE
        if p.line_weight > 0:
            xdog = ink_lines(lab[..., 0], p.line_weight, work_scale) \
                * _soft(np.take(LINE_AMOUNT, labels), work_scale)
            if work_mask is not None:
                xdog = np.maximum(xdog, SILHOUETTE * silhouette(work_mask, p.line_weight,
                                                                work_scale))
        if factor < 1:
            out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
            if p.line_weight > 0:
                xdog = cv2.resize(xdog, (width, height), interpolation=cv2.INTER_LINEAR)
        draw_eyes(out, points)
        if p.line_weight > 0:
            scale = min(height, width) / REFERENCE_SIDE
            ink = np.maximum(xdog, drawn_lines(points, (height, width), p.line_weight, scale))
            out[..., 0] *= 1.0 - INK * ink
        rgb = cv2.cvtColor(cv2.convertScaleAbs(out), cv2.COLOR_Lab2RGB)
        if p.softness > 0:
            rgb = cv2.GaussianBlur(rgb, (0, 0), p.softness * min(height, width) / REFERENCE_SIDE)
        return rgb

    def _smooth(self, frame: np.ndarray) -> np.ndarray:
        return edge_preserving_smooth(frame, self.params.smoothing,
                                      min(frame.shape[:2]) / REFERENCE_SIDE)


class SteadyRegions:
    """Causal smoothing of the landmarks and the person mask from frame to frame.

    The landmarks of ``prepare`` are already smoothed without lag; what sub-pixel jitter is
    left would make crisp drawn lines (lids, iris, brows) shimmer. Each point moves toward its
    new position by a fraction that grows with its speed (a one-euro-like filter: still points
    are averaged over a few frames, moving ones follow at once). The mask and the teeth score
    are averaged with the previous ones where they agree and follow the new ones where they do
    not (motion).
    """

    def __init__(self, still: float = 0.3, speed_px: float = 2.0, mask_weight: float = 0.5):
        self.still, self.speed_px, self.mask_weight = still, speed_px, mask_weight
        self.points: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.teeth: np.ndarray | None = None

    def smooth_teeth(self, score: np.ndarray) -> np.ndarray:
        """The (H, W) float32 teeth score in [0, 1] (``regions.teeth_score``), averaged with the
        previous frame's where the two agree (differ by less than a half)."""
        if self.teeth is None or self.teeth.shape != score.shape:
            self.teeth = score
        else:
            self.teeth = _agreeing_average(self.teeth, score, 0.5, self.mask_weight)
        return self.teeth

    def __call__(self, points: np.ndarray, mask: np.ndarray | None, scale: float):
        if self.points is None or self.points.shape != points.shape:
            self.points = points.copy()
        else:
            step = points - self.points
            speed = np.linalg.norm(step, axis=1, keepdims=True) / max(scale, 1e-3)
            rate = np.clip(self.still + (1 - self.still) * speed / self.speed_px, self.still, 1.0)
            self.points = self.points + rate.astype(np.float32) * step
        if mask is None:
            self.mask = None
        elif self.mask is None or self.mask.shape != mask.shape:
            self.mask = mask.astype(np.float32)
        else:
            self.mask = _agreeing_average(self.mask, mask.astype(np.float32), 128.0,
                                          self.mask_weight)
        steady_mask = None if self.mask is None else (self.mask + 0.5).astype(np.uint8)
        return self.points.astype(np.float32), steady_mask


def _agreeing_average(previous: np.ndarray, new: np.ndarray, agree: float,
                      weight: float) -> np.ndarray:
    """(H, W) float32: ``weight`` of ``previous`` and the rest of ``new`` where they differ by
    less than ``agree``, ``new`` elsewhere."""
    import cv2

    blended = cv2.addWeighted(previous, weight, new, 1 - weight, 0.0)
    return np.where(np.abs(new - previous) < agree, blended, new)


# -- palette ----------------------------------------------------------------------------------


def clip_reference(samples, colours: ColourModel) -> np.ndarray:
    """(N_REGIONS, 3) float32: each region's median CIELAB over the (lab, points, mask) samples
    (the backdrop's from its blurred copy); plain defaults for regions never seen."""
    import cv2

    found: list[list[np.ndarray]] = [[] for _ in REGIONS]
    for lab, points, mask in samples:
        labels = region_labels(points, mask, lab, colours)
        backdrop = _backdrop(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), labels == BACKGROUND)
        for region in range(N_REGIONS):
            source = backdrop if region == BACKGROUND else lab
            found[region].append(source[labels == region].reshape(-1, 3))
    defaults = {BACKGROUND: (200, 128, 128), CLOTHES: colours.clothes, HAIR: colours.hair,
                NECK: colours.skin_mean, SKIN: colours.skin_mean, BROW: colours.hair,
                LIPS: (140, 160, 145), MOUTH: (60, 150, 140), SCLERA: (200, 128, 130),
                IRIS: (80, 128, 135), TEETH: (200, 130, 136)}
    reference = np.zeros((N_REGIONS, 3), np.float32)
    for region in range(N_REGIONS):
        pixels = np.concatenate(found[region]).astype(np.float32)
        reference[region] = np.median(pixels, axis=0) if len(pixels) >= 8 else defaults[region]
    return reference


def cel_targets(reference: np.ndarray, saturation: float,
                overrides: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(N_REGIONS, 3) float32 cel colours from the clip's reference colours (module docstring),
    with ``overrides`` (region name -> CIELAB) replacing single regions; the eyes stay legible
    whatever the override (sclera light, iris dark), and so do the teeth (light)."""
    target = reference.copy()

    def saturate(colour, gain):
        return np.float32([colour[0], 128 + gain * (colour[1] - 128), 128 + gain * (colour[2] - 128)])

    for region in (BACKGROUND, CLOTHES, HAIR, SKIN):
        target[region] = saturate(reference[region], saturation)
    target[NECK] = target[SKIN] - np.float32([18, -2, -2])
    target[BROW] = saturate(reference[HAIR], saturation)
    target[BROW, 0] = min(0.75 * reference[HAIR, 0], 90.0)
    target[LIPS] = saturate(reference[LIPS], 1.25 * saturation)
    target[LIPS, 0] = min(reference[LIPS, 0], target[SKIN, 0] - 25)
    target[MOUTH] = (55, 150, 140)
    target[SCLERA] = SCLERA_LAB
    target[TEETH] = TEETH_LAB
    iris = reference[IRIS].copy()
    iris[1:] -= 0.5 * (reference[SCLERA, 1:] - 128)    # the sclera's tint is the light's: not the iris's
    iris = saturate(iris, 1.8)
    chroma = np.hypot(iris[1] - 128, iris[2] - 128)
    if chroma > 35:
        iris[1:] = 128 + (iris[1:] - 128) * 35 / chroma
    target[IRIS] = (70.0, iris[1], iris[2])
    for name, colour in (overrides or {}).items():
        target[REGIONS.index(name)] = colour
    target[SCLERA, 0] = max(target[SCLERA, 0], 215.0)
    target[IRIS, 0] = min(target[IRIS, 0], 100.0)
    target[TEETH, 0] = max(target[TEETH, 0], 200.0)
    return np.clip(target, 0, 255).astype(np.float32)


# -- shading ----------------------------------------------------------------------------------


def band_table(params: CelParams) -> np.ndarray:
    """(N_REGIONS, 256) float32: lightness offset of a pixel given its difference to its region's
    reference (index = difference + 128): a soft staircase with plateaus ``band_step`` apart,
    tanh ramps of steepness ``sharpness`` between them, ``levels`` plateaus (more of them below
    the region colour than above), scaled per region by ``BAND_AMOUNT``."""
    difference = np.arange(256, dtype=np.float64) - 128.0
    x = difference / params.band_step
    index = np.floor(x)
    ramp = 0.5 + 0.5 * np.tanh(params.sharpness * (x - index - 0.5)) / np.tanh(params.sharpness / 2)
    stair = index + ramp
    above = (params.levels - 1) // 2
    below = params.levels - 1 - above
    table = np.zeros((N_REGIONS, 256), np.float32)
    for region in range(N_REGIONS):
        low, high = BAND_RANGE.get(region, (-below, above))
        table[region] = np.clip(stair, low, high) * params.band_step * BAND_AMOUNT[region]
    return table


def flat_bands(source: np.ndarray, labels: np.ndarray, palette: ClipPalette, table: np.ndarray,
               chroma_kept: float, local=None) -> np.ndarray:
    """Region colours with luminance bands (step 5).

    Args:
        source: (H, W, 3) float32 CIELAB of the smoothed frame (backdrop: its blurred copy).
        labels: (H, W) uint8 regions.
        palette: the clip's reference and target colours.
        table: ``band_table``.
        chroma_kept: 1 - flatness.
        local: None, or ``local_colours``' (weight, reference, target): where the weight is 1,
            these replace the palette's colours.

    Returns:
        (H, W, 3) float32 CIELAB.
    """
    import cv2

    scale = min(labels.shape) / REFERENCE_SIDE
    labels3 = cv2.merge([labels, labels, labels])
    reference = cv2.LUT(labels3, palette.reference_table).astype(np.float32)
    out = cv2.LUT(labels3, palette.target_table).astype(np.float32)
    if local is not None:
        weight, local_reference, local_target = local
        reference += weight[..., None] * (local_reference - reference)
        out += weight[..., None] * (local_target - out)
    reference, out = _soft(reference, scale), _soft(out, scale)
    difference = np.clip(source[..., 0] - reference[..., 0] + 128.5, 0, 255).astype(np.int32)
    out[..., 0] += np.take(table.ravel(), labels.astype(np.int32) * 256 + difference)
    kept = np.take(chroma_kept * CHROMA_KEPT, labels)[..., None]
    out[..., 1:] += kept * (source[..., 1:] - reference[..., 1:])
    return out


def local_colours(source: np.ndarray, region: np.ndarray, saturation: float):
    """(weight, reference, target) for ``flat_bands``: the region's own colours, strongly
    blurred (normalized convolution over the region only, at ``CLOTHES_SIDE`` pixels across):
    a black turtleneck under an orange suit stays black, each garment is flat in its colour.

    Args:
        source: (H, W, 3) float32 CIELAB.
        region: (H, W) bool.
        saturation: chroma gain of the target.

    Returns:
        (H, W) float32 weight (the region, 0/1), (H, W, 3) float32 reference and target.
    """
    import cv2

    height, width = region.shape
    factor = CLOTHES_SIDE / max(height, width)
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    weight = region.astype(np.float32)
    small = cv2.resize(source * weight[..., None], size, interpolation=cv2.INTER_AREA)
    small_weight = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small, (0, 0), 1.0) / np.maximum(
        cv2.GaussianBlur(small_weight, (0, 0), 1.0), 1e-3)[..., None]
    reference = cv2.resize(blurred, (width, height), interpolation=cv2.INTER_LINEAR)
    target = reference.copy()
    target[..., 1:] = 128 + saturation * (target[..., 1:] - 128)
    return weight, reference, target


def draw_eyes(lab: np.ndarray, points: np.ndarray) -> None:
    """Pupils and catch-lights into a float32 CIELAB image, in place, cut to the eye openings."""
    import cv2

    height, width = lab.shape[:2]
    for eye in range(2):
        centre, radius = iris_circle(points, eye)
        outline = points[list(EYES[eye])]
        x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(outline.max(axis=0)).astype(int) + 2, (width, height))
        if x1 - x0 < 2 or y1 - y0 < 2 or radius < 0.8:
            continue
        window = (slice(y0, y1), slice(x0, x1))
        origin = np.float32([x0, y0])
        opening = polygon_mask(points - origin, EYES[eye], (y1 - y0, x1 - x0))
        for offset, size, colour in (((0.0, 0.0), 0.45 * radius, (PUPIL_L, 128, 128)),
                                     ((-0.35, -0.4), max(0.7, 0.22 * radius),
                                      (CATCHLIGHT_L, 128, 128))):
            disc = np.zeros_like(opening)
            cv2.circle(disc, _fixed(centre - origin + np.float32(offset) * radius),
                       _fixed_radius(size), 255, -1, cv2.LINE_AA, shift=4)
            weight = (np.minimum(disc, opening).astype(np.float32) / 255.0)[..., None]
            lab[window] += weight * (np.float32(colour) - lab[window])


def drawn_lines(points: np.ndarray, shape: tuple[int, int], line_weight: float,
                scale: float) -> np.ndarray:
    """(H, W) float32 ink in [0, 1]: upper lids (thick), lower lids, iris rims, the lips' inner
    contour and the jaw, anti-aliased."""
    import cv2

    canvas = np.zeros(shape, np.uint8)

    def line(indices, value, thickness, closed=False):
        polygon = np.round(points[list(indices)] * 16).astype(np.int32)
        cv2.polylines(canvas, [polygon], closed, value, max(1, int(round(thickness))), cv2.LINE_AA,
                      shift=4)

    base = max(1.0, line_weight * scale * 2.0)
    for eye in range(2):
        width = eye_width(points, eye)
        line(UPPER_LIDS[eye], 255, max(base, 0.09 * width * line_weight))
        line(LOWER_LIDS[eye], 110, base)
        centre, radius = iris_circle(points, eye)
        rim = np.zeros(shape, np.uint8)
        cv2.circle(rim, _fixed(centre), _fixed_radius(radius), 170, 1, cv2.LINE_AA, shift=4)
        canvas = np.maximum(canvas, np.minimum(rim, polygon_mask(points, EYES[eye], shape)))
    line(LIPS_INNER, 170, base, closed=True)
    line(JAW, 140, base)
    return canvas.astype(np.float32) / 255.0


def silhouette(mask: np.ndarray, line_weight: float, scale: float) -> np.ndarray:
    """(H, W) float32 ink along the edge of a person mask (0.75 at its middle)."""
    import cv2

    sigma = max(0.7, 1.2 * line_weight * scale)
    soft = cv2.GaussianBlur((mask >= 128).astype(np.float32), (0, 0), sigma)
    return (3.0 * soft * (1.0 - soft)).astype(np.float32)


def _backdrop(frame_rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 CIELAB (8-bit scale) of a strongly blurred copy of the frame's
    background pixels (normalized convolution: the person's colours do not bleed into it)."""
    import cv2

    height, width = frame_rgb.shape[:2]
    factor = BACKDROP_SIDE / max(height, width)
    size = (max(2, round(width * factor)), max(2, round(height * factor)))
    small = cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = cv2.resize(background.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.999
    if not weight.any():
        weight[:] = True
    weight = weight.astype(np.float32)
    blurred = cv2.GaussianBlur(small * weight[..., None], (0, 0), 1.5) / np.maximum(
        cv2.GaussianBlur(weight, (0, 0), 1.5), 1e-3)[..., None]
    lab = cv2.cvtColor(np.clip(blurred * (1 / 255.0), 0, 1), cv2.COLOR_RGB2Lab) \
        * np.float32([255 / 100, 1, 1]) + np.float32([0, 128, 128])
    return cv2.resize(lab, (width, height), interpolation=cv2.INTER_LINEAR)


def _soft(image: np.ndarray, scale: float) -> np.ndarray:
    """A small blur that anti-aliases region edges (same dtype out)."""
    import cv2

    return cv2.GaussianBlur(np.ascontiguousarray(image), (0, 0), max(0.6, 0.8 * scale))


def _skin_median(usable) -> np.ndarray | None:
    """(3,) median sRGB of the face-oval skin (less eyes, brows, lips; middle 60% of luma), or
    None when the faces show too little of it."""
    pixels = []
    for frame, points, _ in usable:
        parts = face_polygons(points, frame.shape[:2])
        features = np.maximum.reduce([parts["eyes"], parts["brows"], parts["lips"]])
        inside = frame[(parts["face"] >= 128) & (features < 128)].astype(np.float32)
        if len(inside) > 20:
            luma = inside @ np.float32([0.299, 0.587, 0.114])
            low, high = np.percentile(luma, [20, 80])
            pixels.append(inside[(luma >= low) & (luma <= high)])
    return np.median(np.concatenate(pixels), axis=0) if pixels else None


def _label_table(colours: np.ndarray) -> np.ndarray:
    table = np.zeros((1, 256, 3), np.uint8)
    table[0, :len(colours)] = np.clip(np.round(colours), 0, 255)
    return table


def _fixed(point) -> tuple[int, int]:
    return tuple(int(v) for v in np.round(np.asarray(point) * 16))


def _fixed_radius(radius: float) -> int:
    return max(1, int(round(radius * 16)))


def _lab_to_rgb(colour) -> list[int]:
    import cv2

    pixel = np.clip(np.round(colour), 0, 255).astype(np.uint8).reshape(1, 1, 3)
    return cv2.cvtColor(pixel, cv2.COLOR_Lab2RGB).reshape(3).tolist()
