"""Fast, atomic PNG writing and reading for frames and masks (OpenCV's encoder, low compression)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) RGB or (H, W) gray uint8 image as PNG, atomically.

    Compression level 1 with run-length strategy: about 40% smaller than raw, several times faster
    to write than the default level, which matters at thousands of frames.
    """
    import cv2

    array = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    ok, buffer = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1,
                                              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
    if not ok:
        raise InputError(f"could not encode {path} as PNG")
    # Temp file + rename (no fsync: thousands of frames; a crash leaves no half-written PNG).
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_png(path: str | os.PathLike, gray: bool = False) -> np.ndarray:
    """Read an image as (H, W, 3) RGB or (H, W) gray uint8."""
    import cv2

    image = cv2.imread(os.fspath(path), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read the image {path}; it is missing or not an image")
    return image if gray else np.ascontiguousarray(image[..., ::-1])
