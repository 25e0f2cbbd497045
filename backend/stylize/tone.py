"""Per-clip exposure and white balance from the skin, as one lookup table per colour channel.

A dim webcam clip and a lit studio clip should get the same cel look. Skin is the one surface
every clip shows, so its median colour (measured once per clip on a few frames) decides: in
linear RGB, one gain brings the skin's luminance toward a reference skin's (exposure) and
per-channel gains move its chromaticity part of the way toward the reference's (white balance,
von Kries). Partial, clamped corrections keep skin tones apart (a darker complexion stays
darker) while a colour cast or a dark exposure is removed. A soft shoulder keeps brightened
highlights from clipping. The result is a 256-entry table per channel: one ``cv2.LUT`` a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REFERENCE_SKIN_SRGB = (205, 156, 128)   # a medium-light skin under white light, well exposed
MAX_EXPOSURE_GAIN = 2.5
MAX_CHANNEL_GAIN = 1.4
SHOULDER = 0.75                         # linear value where the highlight roll-off starts
LUMA = np.array([0.2126, 0.7152, 0.0722])


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(values, np.float64), 0.0, 1.0)
    return 255.0 * np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


@dataclass
class ClipTone:
    """The clip's colour correction.

    Attributes:
        gains: (3,) linear-RGB gains (exposure x white balance).
        skin_rgb: (3,) the measured skin median (sRGB), or None when nothing was measured.
        table: (1, 256, 3) uint8 per-channel lookup table for ``cv2.LUT``.
    """

    gains: np.ndarray = field(default_factory=lambda: np.ones(3))
    skin_rgb: np.ndarray | None = None
    table: np.ndarray = field(default_factory=lambda: tone_table(np.ones(3)))

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> corrected (H, W, 3) uint8 RGB."""
        import cv2

        if np.allclose(self.gains, 1.0):
            return frame
        return cv2.LUT(frame, self.table)

    def report(self) -> dict:
        return {"gains": np.round(self.gains, 3).tolist(),
                "skin_rgb": None if self.skin_rgb is None else np.round(self.skin_rgb, 1).tolist()}


def fit_tone(skin_rgb: np.ndarray, exposure: float = 1.0, white_balance: float = 0.6) -> ClipTone:
    """The correction that moves a clip's skin colour toward the reference skin.

    Args:
        skin_rgb: (3,) the clip's median skin colour, sRGB 0..255.
        exposure: 0 = keep the exposure, 1 = bring the skin's luminance to the reference's.
        white_balance: 0 = keep the colours, 1 = give the skin the reference's chromaticity.

    Returns:
        The ClipTone (gains within [1/2.5, 2.5] for exposure and [1/1.4, 1.4] per channel).
    """
    measured = np.maximum(srgb_to_linear(skin_rgb), 1e-4)
    reference = srgb_to_linear(np.asarray(REFERENCE_SKIN_SRGB))
    y_measured, y_reference = float(LUMA @ measured), float(LUMA @ reference)
    gain = np.clip((y_reference / y_measured) ** exposure, 1 / MAX_EXPOSURE_GAIN, MAX_EXPOSURE_GAIN)
    chroma = ((reference / y_reference) / (measured / y_measured)) ** white_balance
    chroma /= float(LUMA @ (measured * chroma)) / y_measured          # keep the luminance
    chroma = np.clip(chroma, 1 / MAX_CHANNEL_GAIN, MAX_CHANNEL_GAIN)
    gains = gain * chroma
    return ClipTone(gains=gains, skin_rgb=np.asarray(skin_rgb, np.float64), table=tone_table(gains))


def tone_table(gains: np.ndarray) -> np.ndarray:
    """(1, 256, 3) uint8: sRGB value -> sRGB of (linear value x gain) with a soft shoulder."""
    linear = srgb_to_linear(np.arange(256))[:, None] * np.asarray(gains, np.float64)[None]
    over = np.maximum(linear - SHOULDER, 0.0)
    rolled = np.where(linear > SHOULDER,
                      SHOULDER + (1 - SHOULDER) * np.tanh(over / (1 - SHOULDER)), linear)
    return np.clip(np.round(linear_to_srgb(rolled)), 0, 255).astype(np.uint8)[None]
