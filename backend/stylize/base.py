"""The stylizer interface: full frames in, stylized frames of the same size out, in video order.

A ``Stylizer`` takes frames of any resolution (whole video frames, not only aligned face crops)
one at a time, so a video streams through it without ever being held in memory. Stylizers may
keep temporal state (the previous output, running colour statistics) to avoid flicker; ``reset``
clears it before a new sequence.

Face-aware styles also take a per-frame :class:`~backend.stylize.context.FrameContext` (the
frame's landmarks and person mask) and may look at a few frames of the clip before the first
one (``fit_clip``) to fix per-clip statistics; the others ignore both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .context import FrameContext


class Stylizer:
    """Base class: ``stylize(frame) -> frame``, ``reset()``, ``parameters()``.

    Subclasses implement ``_stylize(frame)``, or ``_stylize(frame, context)`` with
    ``uses_context = True``; ``stylize`` checks the frame and the result.
    """

    name = "stylizer"
    uses_context = False   # True: _stylize takes the frame's FrameContext (or None) as well

    def stylize(self, frame: np.ndarray, context: FrameContext | None = None) -> np.ndarray:
        """Stylize the next frame of the sequence.

        Args:
            frame: (H, W, 3) uint8 RGB, any H and W.
            context: the frame's landmarks and mask, for face-aware styles (others ignore it);
                None where nothing is known (they fall back to a face-blind look).

        Returns:
            (H, W, 3) uint8 RGB, the same size as ``frame``.
        """
        check_frame(frame)
        result = self._stylize(frame, context) if self.uses_context else self._stylize(frame)
        if result.shape != frame.shape or result.dtype != np.uint8:
            raise RuntimeError(f"stylizer {self.name} returned {result.dtype} {result.shape} for a "
                               f"uint8 {frame.shape} frame")
        return result

    def reset(self) -> None:
        """Forget the temporal state: the next frame starts a new sequence."""

    def fit_clip(self, samples: list[tuple[np.ndarray, FrameContext | None]]) -> None:
        """Fix per-clip statistics from a few frames of the clip (and their contexts), before
        the first ``stylize``; kept across ``reset``. Most styles need none."""

    def parameters(self) -> dict[str, Any]:
        """The settings that define the style, for the stage report (JSON-able)."""
        return {}

    def notes(self) -> dict[str, Any]:
        """What happened while stylizing (fallbacks, warnings), for the stage report."""
        return {}

    def stream(self, frames: Iterable[np.ndarray],
               contexts: Iterable[FrameContext | None] | None = None) -> Iterator[np.ndarray]:
        """Reset, then stylize ``frames`` one by one (with ``contexts`` when given), yielding
        each result as it is made."""
        self.reset()
        contexts = iter(contexts) if contexts is not None else None
        for frame in frames:
            yield self.stylize(frame, next(contexts) if contexts is not None else None)

    def _stylize(self, frame: np.ndarray, *context) -> np.ndarray:
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
