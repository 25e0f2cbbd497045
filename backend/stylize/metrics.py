"""Jitter metrics of a video: ITF (inter-frame PSNR) and ISI (inter-frame SSIM).

ToonifyGB (seed 000) measures how much a stylized video jitters by how similar adjacent frames
are: ITF is the mean PSNR (dB) between consecutive frames, ISI the mean SSIM between consecutive
frames. Both are higher for steadier videos. SSIM follows Wang et al. 2004 with the usual
11 x 11 Gaussian window (sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 255, population
(co)variances, averaged over the channels and over the image less a 5-pixel border (the same
conventions as ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
use_sample_covariance=False, data_range=255)``, which the tests compare against).

numpy + OpenCV (for the separable filtering); frames are streamed, two at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_PSNR_DB = 100.0   # PSNR of identical frames (MSE 0) is reported as this, not infinity
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
DATA_RANGE = 255.0


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio in dB of two images of the same shape.

    Args:
        a, b: (H, W) or (H, W, C) arrays, values in [0, data_range].

    Returns:
        10 log10(data_range^2 / MSE), at most ``MAX_PSNR_DB`` (identical images).
    """
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse <= 0.0:
        return MAX_PSNR_DB
    return float(min(MAX_PSNR_DB, 10.0 * np.log10(data_range ** 2 / mse)))


def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalized 1D Gaussian window, shape (size,), float64."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def ssim_map(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """Per-pixel SSIM of two images, each channel on its own.

    Args:
        a, b: (H, W) or (H, W, C) arrays (C <= 4), values in [0, data_range].

    Returns:
        float32 SSIM map of the inputs' shape; values within 5 pixels of the border see the
        reflected image. Computed in float32: within 1e-5 of a float64 computation for 8-bit data.
    """
    import cv2

    _check_pair(a, b)
    kernel = gaussian_kernel().astype(np.float32)
    x = a.astype(np.float32)
    y = b.astype(np.float32)

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)

    # 1. Local means, variances and covariance (population statistics) under the window.
    mu_x, mu_y = blur(x), blur(y)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = blur(x * x) - mu_xx
    var_y = blur(y * y) - mu_yy
    cov_xy = blur(x * y) - mu_xy
    # 2. The SSIM formula with the standard stabilizing constants.
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    numerator = (2 * mu_xy + c1) * (2 * cov_xy + c2)
    denominator = (mu_xx + mu_yy + c1) * (var_x + var_y + c2)
    return (numerator / denominator).reshape(a.shape)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean SSIM of two images, averaged over channels, ignoring a 5-pixel border.

    Args:
        a, b: (H, W) or (H, W, C) arrays of the same shape, H and W at least 11.

    Returns:
        The mean structural similarity, 1.0 for identical images.
    """
    _check_pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, "
                         f"got {a.shape[1]} x {a.shape[0]}")
    pad = (SSIM_WINDOW - 1) // 2
    values = ssim_map(a, b, data_range)[pad:-pad, pad:-pad]
    return float(values.mean(dtype=np.float64))


@dataclass
class FrameStatistics:
    """What SSIM needs of one frame alone: float32 pixels, Gaussian local mean and mean square.

    A video's frame t is the second image of pair (t-1, t) and the first of (t, t+1); keeping
    its statistics saves two of the five window filters per pair (the same numbers).
    """

    pixels: np.ndarray
    mean: np.ndarray
    mean_square: np.ndarray

    @classmethod
    def of(cls, image: np.ndarray) -> FrameStatistics:
        pixels = image.astype(np.float32)
        return cls(pixels, _blur(pixels), _blur(pixels * pixels))


def ssim_from_statistics(a: FrameStatistics, b: FrameStatistics,
                         data_range: float = DATA_RANGE) -> float:
    """Mean SSIM (as :func:`ssim`) of two frames from their statistics: one more filter."""
    if min(a.pixels.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")
    mu_xy = a.mean * b.mean
    mu_xx, mu_yy = a.mean * a.mean, b.mean * b.mean
    cov_xy = _blur(a.pixels * b.pixels) - mu_xy
    var_sum = (a.mean_square - mu_xx) + (b.mean_square - mu_yy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    values = ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_xx + mu_yy + c1) * (var_sum + c2))
    pad = (SSIM_WINDOW - 1) // 2
    return float(values[pad:-pad, pad:-pad].mean(dtype=np.float64))


def _blur(image: np.ndarray) -> np.ndarray:
    import cv2

    kernel = gaussian_kernel().astype(np.float32)
    return cv2.sepFilter2D(image, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def fast_psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """:func:`psnr` of two uint8 images through OpenCV's norm (the same value, faster)."""
    import cv2

    _check_pair(a, b)
    mse = cv2.norm(a, b, cv2.NORM_L2SQR) / a.size
    if mse <= 0.0:
        return MAX_PSNR_DB
    return float(min(MAX_PSNR_DB, 10.0 * np.log10(data_range ** 2 / mse)))


@dataclass
class JitterMeter:
    """Streams frames and accumulates ITF and ISI over consecutive pairs.

    Only the previous frame (and its SSIM statistics) is kept, so a whole video never sits in
    memory.
    """

    psnr_values: list[float] = field(default_factory=list)
    ssim_values: list[float] = field(default_factory=list)
    _previous: np.ndarray | None = None
    _previous_statistics: FrameStatistics | None = None

    def add(self, frame: np.ndarray) -> None:
        """Add the next frame, (H, W, 3) uint8."""
        measurable = min(frame.shape[:2]) >= SSIM_WINDOW   # no ISI below the window's size
        statistics = FrameStatistics.of(frame) if measurable else None
        if self._previous is not None:
            _check_pair(self._previous, frame)
            self.psnr_values.append(fast_psnr(self._previous, frame) if frame.dtype == np.uint8
                                    else psnr(self._previous, frame))
            if measurable:
                self.ssim_values.append(ssim_from_statistics(self._previous_statistics, statistics))
        self._previous, self._previous_statistics = frame, statistics

    @property
    def itf(self) -> float | None:
        """Mean inter-frame PSNR in dB (None for fewer than two frames)."""
        return float(np.mean(self.psnr_values)) if self.psnr_values else None

    @property
    def isi(self) -> float | None:
        """Mean inter-frame SSIM (None for fewer than two frames)."""
        return float(np.mean(self.ssim_values)) if self.ssim_values else None

    def report(self) -> dict[str, float | int | None]:
        return {"itf_db": _round(self.itf, 3), "isi": _round(self.isi, 5),
                "pairs": len(self.psnr_values)}


def jitter(frames) -> dict[str, float | int | None]:
    """ITF and ISI of an iterable of (H, W, 3) uint8 frames, as ``{"itf_db", "isi", "pairs"}``."""
    meter = JitterMeter()
    for frame in frames:
        meter.add(frame)
    return meter.report()


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"cannot compare frames of shapes {a.shape} and {b.shape}")


# -- eye contrast -----------------------------------------------------------------------------

MIN_EYE_PIXELS = 6        # eye openings smaller than this (a blink) are not measured
MIN_EYE_SPREAD = 1.0      # nor those whose input spread is below this (gray levels): no ratio


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 Rec. 601 luma (0..255) of an (H, W, 3) uint8 RGB image."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return image.astype(np.float32) @ weights


def eye_spreads(image: np.ndarray, points: np.ndarray) -> list[float | None]:
    """Luminance spread (90th minus 10th percentile) inside each eye opening of one frame.

    Args:
        image: (H, W, 3) uint8 RGB.
        points: (478, 2) FaceMesh landmarks in the image's pixels.

    Returns:
        Two values (the subject's right eye, then the left); None for an eye whose contour
        encloses, or whose pixels number, fewer than ``MIN_EYE_PIXELS`` (closed, or outside
        the frame).
    """
    import cv2

    from .faces import EYES, polygon_mask

    height, width = image.shape[:2]
    points = np.asarray(points, np.float32)
    spreads: list[float | None] = []
    for eye in EYES:
        outline = points[list(eye)]
        x0, y0 = np.clip(np.floor(outline.min(axis=0)).astype(int) - 1, 0, (width, height))
        x1, y1 = np.clip(np.ceil(outline.max(axis=0)).astype(int) + 2, 0, (width, height))
        if cv2.contourArea(outline) < MIN_EYE_PIXELS or x1 <= x0 or y1 <= y0:
            spreads.append(None)
            continue
        inside = polygon_mask(points - np.float32([x0, y0]), eye, (y1 - y0, x1 - x0)) >= 128
        if inside.sum() < MIN_EYE_PIXELS:
            spreads.append(None)
            continue
        values = luminance(image[y0:y1, x0:x1][inside][None])[0]
        low, high = np.percentile(values, [10, 90])
        spreads.append(float(high - low))
    return spreads


@dataclass
class EyeContrastMeter:
    """How much of the eyes' contrast a style keeps: per eye and frame, the stylized frame's
    luminance spread (90th - 10th percentile inside the FaceMesh eye contour) over the input
    frame's; ``report`` gives the median over every measured eye of the clip.

    A ratio well below 1 means the eyes went flat (a dark box); about 1 or more, that sclera,
    iris and lid stay apart. Eyes that are closed or have no spread in the input are skipped.
    """

    ratios: list[float] = field(default_factory=list)
    skipped: int = 0

    def add(self, frame: np.ndarray, stylized: np.ndarray, points: np.ndarray | None) -> None:
        """Measure one frame pair; ``points`` (478, 2) landmarks or None (nothing measured)."""
        if points is None:
            return
        for before, after in zip(eye_spreads(frame, points), eye_spreads(stylized, points)):
            if before is None or after is None or before < MIN_EYE_SPREAD:
                self.skipped += 1
                continue
            self.ratios.append(after / before)

    @property
    def median(self) -> float | None:
        return float(np.median(self.ratios)) if self.ratios else None

    def report(self) -> dict[str, float | int | None]:
        return {"eye_contrast_ratio": _round(self.median, 4), "eyes": len(self.ratios),
                "eyes_skipped": self.skipped,
                "p10": _round(float(np.percentile(self.ratios, 10)) if self.ratios else None, 4)}
