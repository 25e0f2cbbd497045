"""Flow-guided temporal blending: keeps a stylized video from flickering.

Each stylized frame is blended with the previous *output*, warped into the current frame along
the optical flow of the input (OpenCV DIS flow, computed at a reduced size). The blend weight is
high where the warp explains the input well (static or tracked areas) and falls to zero where it
does not (occlusions, fast motion, flow errors), so the recursion removes flicker without
ghosting. On a static head this is a recursive average over about (1 + w) / (1 - w) frames.
"""

from __future__ import annotations

import numpy as np

FLOW_MAX_SIDE = 256   # the flow is computed with the longer image side scaled to at most this
MIN_FLOW_SIDE = 32    # no stabilization when the flow image's shorter side would be below this


class FlowStabilizer:
    """Recursive, flow-warped blend of the previous output into the current one.

    Args:
        weight: blend weight of the warped previous output where the warp is trusted, 0..0.95
            (0 turns stabilization off).
        sigma: input difference (8-bit gray levels) at which the trust falls to exp(-1).
    """

    def __init__(self, weight: float = 0.6, sigma: float = 10.0):
        import cv2

        self.weight = float(weight)
        self.sigma = float(sigma)
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        differences = np.arange(256, dtype=np.float32)
        self._trust_table = (self.weight * np.exp(-np.square(differences / max(self.sigma, 1e-3)))
                             ).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        self._previous_small: np.ndarray | None = None
        self._previous_rgb: np.ndarray | None = None
        self._previous_output: np.ndarray | None = None

    def __call__(self, frame: np.ndarray, stylized: np.ndarray) -> np.ndarray:
        """Blend ``stylized`` (the current frame's style) with the warped previous output.

        Args:
            frame: (H, W, 3) uint8 RGB input frame (the flow is measured on it).
            stylized: (H, W, 3) uint8 stylized frame.

        Returns:
            (H, W, 3) uint8 stabilized frame; it becomes the "previous output" of the next call.
        """
        import cv2

        if self.weight <= 0:
            return stylized
        small_rgb = _downscale(frame)
        if min(small_rgb.shape[:2]) < MIN_FLOW_SIDE:
            self.reset()
            return stylized   # too small for DIS flow (which crashes on thin images)
        small = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY)
        if self._previous_output is None or self._previous_output.shape != stylized.shape:
            output = stylized
        else:
            # 1. Flow from the current frame back to the previous one (reduced size).
            flow = self._flow.calc(small, self._previous_small, None)
            # 2. Trust the flow where the warped previous input reproduces the current input,
            #    in every colour channel (equal gray levels can hide a change of hue).
            warped_rgb = cv2.remap(self._previous_rgb, self._coords(small.shape) + flow, None,
                                   cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            difference = cv2.absdiff(small_rgb, warped_rgb).max(axis=2)
            difference = cv2.GaussianBlur(difference, (3, 3), 0)
            trust = cv2.LUT(difference, self._trust_table)
            # 3. Warp the previous output to full size along the flow and blend.
            height, width = stylized.shape[:2]
            coords = self._coords((height, width)) + _upscale_flow(flow, (height, width))
            map_xy, map_fraction = cv2.convertMaps(coords, None, cv2.CV_16SC2)
            warped_output = cv2.remap(self._previous_output, map_xy, map_fraction, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
            if trust.shape != (height, width):
                trust = cv2.resize(trust, (width, height), interpolation=cv2.INTER_LINEAR)
            output = cv2.blendLinear(warped_output, stylized, trust, 1.0 - trust)
        self._previous_small, self._previous_rgb, self._previous_output = small, small_rgb, output
        return output

    def _coords(self, shape: tuple[int, int]) -> np.ndarray:
        """(H, W, 2) float32 pixel coordinates x, y (cached per size)."""
        if shape not in self._grids:
            xs, ys = np.meshgrid(np.arange(shape[1], dtype=np.float32),
                                 np.arange(shape[0], dtype=np.float32))
            self._grids[shape] = np.stack([xs, ys], axis=-1)
        return self._grids[shape]


def _downscale(image: np.ndarray) -> np.ndarray:
    """``image`` (H, W[, C]) with its longer side scaled down to at most FLOW_MAX_SIDE."""
    import cv2

    height, width = image.shape[:2]
    factor = FLOW_MAX_SIDE / max(height, width)
    if factor >= 1.0:
        return image
    size = (max(8, int(round(width * factor))), max(8, int(round(height * factor))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _upscale_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an (h, w, 2) flow field to ``shape`` and scale its vectors to match."""
    import cv2

    height, width = shape
    if flow.shape[:2] == (height, width):
        return flow
    scale = np.array([width / flow.shape[1], height / flow.shape[0]], np.float32)
    return cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * scale
