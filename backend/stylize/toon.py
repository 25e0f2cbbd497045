"""The built-in ``toon`` style: no weights, fast on a CPU, steady on video.

Per frame, in numbered steps (after Winnemoeller et al.'s real-time video abstraction):

1. Edge-preserving smoothing: a small bilateral filter against sensor noise, then a domain
   transform filter (recursive, cost independent of its radius) that flattens skin and cloth
   into cartoon regions while keeping edges.
2. Soft luminance quantization in CIELAB: L is mapped through a smooth staircase with ``levels``
   plateaus; the steps are tanh ramps rather than hard thresholds, and the thresholds are fixed
   (not taken from each frame's statistics), so a pixel near a threshold cannot flip back and
   forth between frames. Chroma is kept (optionally more saturated).
3. Ink lines: an XDoG (difference of Gaussians with a soft tanh threshold) of the smoothed
   luminance darkens the image along edges; ``line_weight`` scales the line width.
4. ``strength`` blends the result with the input; a flow-guided temporal blend
   (``temporal.FlowStabilizer``) removes what flicker is left.

Sizes (filter radii, line widths) scale with the shorter image side relative to 512 pixels, so a
style looks the same on a 512 crop and on a full-resolution frame of the same framing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .base import Stylizer, check_range
from .temporal import FlowStabilizer

REFERENCE_SIDE = 512.0
SMOOTH_MIN_SIDE = 192   # smooth at half size when the shorter side is at least twice this


@dataclass
class ToonParams:
    """Settings of the ``toon`` style (each has a ``--param`` on the command line)."""

    strength: float = 1.0      # 0 = the input unchanged, 1 = the full style
    levels: int = 5            # number of luminance bands (2..16)
    line_weight: float = 1.0   # ink line width, 0 = no lines (0..4)
    smoothing: float = 1.0     # edge-preserving smoothing, 0 = none (0..4)
    saturation: float = 1.15   # chroma gain (0..3)
    sharpness: float = 8.0     # steepness of the band edges, higher = harder bands (1..50)
    temporal: float = 0.6      # weight of the flow-warped previous output, 0 = off (0..0.95)

    def validated(self) -> ToonParams:
        check_range("strength", self.strength, 0, 1)
        self.levels = int(check_range("levels", self.levels, 2, 16))
        check_range("line_weight", self.line_weight, 0, 4)
        check_range("smoothing", self.smoothing, 0, 4)
        check_range("saturation", self.saturation, 0, 3)
        check_range("sharpness", self.sharpness, 1, 50)
        check_range("temporal", self.temporal, 0, 0.95)
        return self


class ToonStylizer(Stylizer):
    """The ``toon`` style. See the module docstring for the steps."""

    name = "toon"

    def __init__(self, params: ToonParams | None = None):
        self.params = (params or ToonParams()).validated()
        self.luminance_table = quantization_table(self.params.levels, self.params.sharpness)
        self.chroma_table = chroma_table(self.params.saturation)
        self.stabilizer = FlowStabilizer(self.params.temporal)

    def reset(self) -> None:
        self.stabilizer.reset()

    def parameters(self) -> dict[str, Any]:
        return asdict(self.params)

    def _stylize(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        p = self.params
        scale = min(frame.shape[:2]) / REFERENCE_SIDE
        smooth = edge_preserving_smooth(frame, p.smoothing, scale)
        lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2Lab)
        lightness, a, b = cv2.split(lab)
        shaded = cv2.LUT(lightness, self.luminance_table)
        if p.line_weight > 0:
            shaded = apply_lines(shaded, ink_lines(lightness, p.line_weight, scale))
        chroma = cv2.LUT(cv2.merge([a, b]), self.chroma_table)
        toon = cv2.cvtColor(cv2.merge([shaded, chroma]), cv2.COLOR_Lab2RGB)
        toon = blend_strength(frame, toon, p.strength)
        return self.stabilizer(frame, toon)


def edge_preserving_smooth(frame: np.ndarray, amount: float, scale: float) -> np.ndarray:
    """Denoise and flatten ``frame`` while keeping its edges.

    Frames whose shorter side is at least ``2 * SMOOTH_MIN_SIDE`` are smoothed at half size and
    scaled back up (the flat regions lose nothing; the ink lines, computed at full size, keep the
    outlines crisp). This is what makes ``toon`` real-time at 512 x 512 on two cores.

    Args:
        frame: (H, W, 3) uint8 RGB.
        amount: 0 = unchanged; 1 = the default cartoon flattening.
        scale: shorter image side / 512 (the spatial radius grows with it).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import cv2

    if amount <= 0:
        return frame
    height, width = frame.shape[:2]
    half = min(height, width) >= 2 * SMOOTH_MIN_SIDE
    work = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA) if half else frame
    pixel_scale = scale * (0.5 if half else 1.0)
    denoised = cv2.bilateralFilter(work, 5, 20.0 + 10.0 * amount, 3.0)
    sigma_spatial = max(1.0, 10.0 * amount * pixel_scale)
    sigma_color = 20.0 + 15.0 * amount
    smooth = cv2.ximgproc.dtFilter(denoised, denoised, sigma_spatial, sigma_color, cv2.ximgproc.DTF_RF, 2)
    if half:
        smooth = cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR)
    return smooth


def quantization_table(levels: int, sharpness: float) -> np.ndarray:
    """256-entry lookup table of the soft luminance staircase (8-bit CIELAB L, 0..255).

    Plateaus sit at ``levels`` evenly spaced values; between two plateaus the curve rises along
    a tanh ramp of steepness ``sharpness`` centred half way. The curve is continuous and
    monotonic, so small input noise gives small output changes.

    Returns:
        (256,) uint8.
    """
    step = 255.0 / (levels - 1)
    position = np.arange(256, dtype=np.float64) / step
    index = np.floor(position)
    fraction = position - index
    ramp = 0.5 + 0.5 * np.tanh(sharpness * (fraction - 0.5)) / np.tanh(sharpness * 0.5)
    return np.clip(np.round(step * (index + ramp)), 0, 255).astype(np.uint8)


def chroma_table(saturation: float) -> np.ndarray:
    """256-entry table scaling 8-bit CIELAB a, b (offset 128) by ``saturation``. (256,) uint8."""
    values = 128.0 + saturation * (np.arange(256, dtype=np.float64) - 128.0)
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def ink_lines(lightness: np.ndarray, line_weight: float, scale: float) -> np.ndarray:
    """XDoG line darkness of a luminance image.

    Args:
        lightness: (H, W) uint8 (8-bit CIELAB L of the smoothed frame).
        line_weight: line width factor (> 0).
        scale: shorter image side / 512.

    Returns:
        (H, W) float32 in [0, 1]: 1 on a full ink line, 0 away from lines.
    """
    import cv2

    sigma = max(0.5, 1.0 * line_weight * scale)
    image = lightness.astype(np.float32) * (1.0 / 255.0)
    narrow = cv2.GaussianBlur(image, (0, 0), sigma)
    wide = cv2.GaussianBlur(image, (0, 0), 1.6 * sigma)
    difference = narrow - 0.98 * wide          # negative on the dark side of an edge
    darkness = np.tanh(np.maximum(0.0, -difference) * 60.0)
    return darkness.astype(np.float32)


def apply_lines(lightness: np.ndarray, darkness: np.ndarray, ink: float = 0.1) -> np.ndarray:
    """Darken a lightness channel towards ``ink`` x its value where ``darkness`` is 1.

    Args:
        lightness: (H, W) uint8.
        darkness: (H, W) float32 in [0, 1], from :func:`ink_lines`.

    Returns:
        (H, W) uint8.
    """
    import cv2

    factor = 1.0 - (1.0 - ink) * darkness
    return cv2.multiply(lightness, factor, dtype=cv2.CV_8U)


def blend_strength(frame: np.ndarray, stylized: np.ndarray, strength: float) -> np.ndarray:
    """(1 - strength) * frame + strength * stylized, uint8."""
    import cv2

    if strength >= 1.0:
        return stylized
    return cv2.addWeighted(stylized, strength, frame, 1.0 - strength, 0.0)
