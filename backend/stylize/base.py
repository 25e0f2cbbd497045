"""The stylizer interface: full frames in, stylized frames of the same size out, in video order.

A ``Stylizer`` takes frames of any resolution (whole video frames, not only aligned face crops)
one at a time, so a video streams through it without ever being held in memory. Stylizers may
keep temporal state (the previous output, running colour statistics) to avoid flicker; ``reset``
clears it before a new sequence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..errors import InputError


class Stylizer:
    """Base class: ``stylize(frame) -> frame``, ``reset()``, ``parameters()``.

    Subclasses implement ``_stylize``; ``stylize`` checks the frame and the result.
    """

    name = "stylizer"

    def stylize(self, frame: np.ndarray) -> np.ndarray:
        """Stylize the next frame of the sequence.

        Args:
            frame: (H, W, 3) uint8 RGB, any H and W.

        Returns:
            (H, W, 3) uint8 RGB, the same size as ``frame``.
        """
        check_frame(frame)
        result = self._stylize(frame)
        if result.shape != frame.shape or result.dtype != np.uint8:
            raise RuntimeError(f"stylizer {self.name} returned {result.dtype} {result.shape} for a "
                               f"uint8 {frame.shape} frame")
        return result

    def reset(self) -> None:
        """Forget the temporal state: the next frame starts a new sequence."""

    def parameters(self) -> dict[str, Any]:
        """The settings that define the style, for the stage report (JSON-able)."""
        return {}

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Reset, then stylize ``frames`` one by one, yielding each result as it is made."""
        self.reset()
        for frame in frames:
            yield self.stylize(frame)

    def _stylize(self, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def check_frame(frame: np.ndarray, what: str = "frame") -> None:
    """Raise InputError unless ``frame`` is an (H, W, 3) uint8 array."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 \
            or frame.shape[2] != 3 or min(frame.shape[:2]) < 1:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InputError(f"a {what} must be an (H, W, 3) uint8 RGB image, got {dtype} {shape}")


def check_range(name: str, value: float, low: float, high: float) -> float:
    """Return ``value`` as float if low <= value <= high, else raise InputError naming it."""
    value = float(value)
    if not (low <= value <= high):
        raise InputError(f"style parameter {name}={value:g} is out of range; use {low:g}..{high:g}")
    return value
