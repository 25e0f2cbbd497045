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
        self._grid: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self._previous_gray: np.ndarray | None = None
        self._previous_small: np.ndarray | None = None
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
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        small = _downscale(gray)
        if self._previous_output is None or self._previous_output.shape != stylized.shape:
            output = stylized
        else:
            # 1. Flow from the current frame back to the previous one, at full size.
            flow = self._flow.calc(small, self._previous_small, None)
            coords = self._coords(gray.shape) + _upscale_flow(flow, gray.shape)
            # 2. Warp the previous input and output along it.
            warped_gray = cv2.remap(self._previous_gray, coords, None, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
            warped_output = cv2.remap(self._previous_output, coords, None, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
            # 3. Trust the warp where it reproduces the current input.
            difference = cv2.absdiff(gray, warped_gray).astype(np.float32)
            difference = cv2.GaussianBlur(difference, (0, 0), 1.5)
            trust = self.weight * np.exp(-np.square(difference * (1.0 / self.sigma)))
            blend = trust[..., None]
            output = stylized + blend * (warped_output.astype(np.float32) - stylized)
            output = np.clip(output + 0.5, 0, 255).astype(np.uint8)
        self._previous_gray, self._previous_small, self._previous_output = gray, small, output
        return output

    def _coords(self, shape: tuple[int, int]) -> np.ndarray:
        height, width = shape
        if self._grid is None or self._grid.shape[:2] != (height, width):
            xs, ys = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
            self._grid = np.stack([xs, ys], axis=-1)
        return self._grid


def _downscale(gray: np.ndarray) -> np.ndarray:
    import cv2

    height, width = gray.shape
    factor = FLOW_MAX_SIDE / max(height, width)
    if factor >= 1.0:
        return gray
    size = (max(8, int(round(width * factor))), max(8, int(round(height * factor))))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def _upscale_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an (h, w, 2) flow field to ``shape`` and scale its vectors to match."""
    import cv2

    height, width = shape
    if flow.shape[:2] == (height, width):
        return flow
    scale = np.array([width / flow.shape[1], height / flow.shape[0]], np.float32)
    return cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR) * scale
