"""Small synthetic inputs for the stylization bench and tests: a drawn face and an exemplar.

The face is shaded (gradients, soft edges) so that smoothing, quantization and ink lines all have
something to do, and it can move slowly or stand still with sensor-like noise, which is what a
jitter metric needs. numpy + OpenCV drawing only; deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np


def draw_face(size: int = 512, t: float = 0.0, motion_px: float = 0.0) -> np.ndarray:
    """A shaded cartoon-like face on a gradient background.

    Args:
        size: width and height in pixels.
        t: time in seconds; with ``motion_px`` > 0 the face drifts sideways by
            ``motion_px * sin(2 pi 0.25 t)`` pixels and nods slightly.
        motion_px: amplitude of the motion in pixels (0: a static head).

    Returns:
        (size, size, 3) uint8 RGB image.
    """
    import cv2

    s = size / 512.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = np.stack([60 + 80 * xx, 90 + 60 * yy, 140 + 50 * (1 - xx)], axis=-1)
    image = background.astype(np.float32)
    shift = motion_px * np.sin(2 * np.pi * 0.25 * t)
    cx, cy = 256 * s + shift, 270 * s + 0.3 * shift

    def ellipse(center, axes, color, shade=0.0):
        mask = np.zeros((size, size), np.float32)
        cv2.ellipse(mask, (int(round(center[0] * 16)), int(round(center[1] * 16))),
                    (int(round(axes[0] * 16)), int(round(axes[1] * 16))), 0, 0, 360, 1.0, -1,
                    cv2.LINE_AA, shift=4)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.2 * s + 0.3)
        light = 1.0 + shade * ((xx * size - center[0]) / max(axes[0], 1) * -0.5
                               + (yy * size - center[1]) / max(axes[1], 1) * -0.3)
        color_image = np.asarray(color, np.float32) * light[..., None]
        nonlocal image
        image = image * (1 - mask[..., None]) + color_image * mask[..., None]

    ellipse((cx, cy - 60 * s), (150 * s, 130 * s), (70, 45, 30))               # hair
    ellipse((cx, cy), (120 * s, 150 * s), (225, 180, 150), shade=0.35)          # face
    for side in (-1, 1):
        ellipse((cx + side * 45 * s, cy - 30 * s), (24 * s, 14 * s), (250, 250, 250))  # eye white
        ellipse((cx + side * 45 * s, cy - 30 * s), (10 * s, 10 * s), (60, 90, 130))    # iris
        ellipse((cx + side * 45 * s, cy - 60 * s), (28 * s, 5 * s), (80, 55, 40))      # brow
        ellipse((cx + side * 80 * s, cy + 30 * s), (20 * s, 12 * s), (235, 150, 140))  # cheek
    ellipse((cx, cy + 20 * s), (10 * s, 25 * s), (205, 155, 125), shade=0.5)   # nose
    ellipse((cx, cy + 75 * s), (38 * s, 12 * s), (170, 70, 80))                # mouth
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def face_clip(n_frames: int, size: int = 128, noise: float = 2.0, motion_px: float = 0.0,
              fps: float = 25.0, seed: int = 0):
    """Yield ``n_frames`` frames of :func:`draw_face` with Gaussian noise of std ``noise``.

    With ``motion_px`` = 0 every frame is the same picture with fresh noise: a static head.

    Yields:
        (size, size, 3) uint8 RGB frames.
    """
    rng = np.random.default_rng(seed)
    still = draw_face(size) if motion_px == 0 else None
    for index in range(n_frames):
        clean = still if still is not None else draw_face(size, index / fps, motion_px)
        noisy = clean.astype(np.float32) + rng.normal(0.0, noise, clean.shape).astype(np.float32)
        yield np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def exemplar_image(size: int = 256) -> np.ndarray:
    """A painterly style exemplar: saturated warm/cool blocks with soft gradients.

    Returns:
        (size, size, 3) uint8 RGB image.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    palette = np.array([[250, 210, 170], [240, 120, 90], [60, 40, 90], [90, 170, 200],
                        [255, 240, 220], [150, 60, 110]], np.float32)
    cell = ((xx * 3).astype(int) + 3 * (yy * 2).astype(int)) % len(palette)
    image = palette[cell] * (0.85 + 0.15 * np.sin(6 * xx + 4 * yy))[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def drawn_face_landmarks(size: int = 512, t: float = 0.0, motion_px: float = 0.0):
    """FaceMesh-style landmarks of :func:`draw_face` (same ``t`` and ``motion_px``), and its
    person mask (hair and face), as a ``FrameContext``.

    Only the points the face-aware styles use are placed on the drawing (face oval, eyes,
    irises, brows, lips); the rest sit at the face centre.
    """
    import cv2

    from .context import FrameContext
    from .faces import BROWS, EYES, FACE_OVAL, IRISES, LIPS_INNER, LIPS_OUTER, N_POINTS

    s = size / 512.0
    shift = motion_px * np.sin(2 * np.pi * 0.25 * t)
    cx, cy = 256 * s + shift, 270 * s + 0.3 * shift
    points = np.tile(np.float32([cx, cy]), (N_POINTS, 1))

    def ellipse(indices, centre, axes, start, end):
        angles = np.linspace(start, end, len(indices))
        points[list(indices)] = np.stack([centre[0] + axes[0] * np.cos(angles),
                                          centre[1] + axes[1] * np.sin(angles)], axis=1)

    # image y points down: angle pi/2 is the bottom; outlines run as FaceMesh orders them
    ellipse(FACE_OVAL, (cx, cy), (120 * s, 150 * s), -np.pi / 2, 1.5 * np.pi - 2 * np.pi / 36)
    for eye, side in ((0, -1), (1, 1)):
        centre = (cx + side * 45 * s, cy - 30 * s)
        outer, inner = (np.pi, 0.0) if side < 0 else (0.0, np.pi)
        ellipse(EYES[eye][:9], centre, (24 * s, 14 * s), outer, inner)        # lower lid
        ellipse(EYES[eye][9:], centre, (24 * s, 14 * s), -np.pi / 8 if side < 0 else -7 * np.pi / 8,
                -7 * np.pi / 8 if side < 0 else -np.pi / 8)                   # upper lid, back
        centre_index, *rim = IRISES[eye]
        points[centre_index] = centre
        ellipse(rim, centre, (10 * s, 10 * s), 0.0, 1.5 * np.pi)
        brow = BROWS[eye]
        brow_centre = (cx + side * 45 * s, cy - 60 * s)
        ellipse(brow[:5], brow_centre, (28 * s, 5 * s), np.pi + 0.1 if side < 0 else -0.1,
                2 * np.pi - 0.1 if side < 0 else -np.pi + 0.1)
        ellipse(brow[5:], brow_centre, (28 * s, 5 * s), 0.1 if side < 0 else np.pi - 0.1,
                np.pi - 0.1 if side < 0 else 0.1)
    ellipse(LIPS_OUTER[:11], (cx, cy + 75 * s), (38 * s, 12 * s), np.pi, 0.0)
    ellipse(LIPS_OUTER[11:], (cx, cy + 75 * s), (38 * s, 12 * s), -0.3, -np.pi + 0.3)
    ellipse(LIPS_INNER[:11], (cx, cy + 75 * s), (30 * s, 3 * s), np.pi, 0.0)
    ellipse(LIPS_INNER[11:], (cx, cy + 75 * s), (30 * s, 3 * s), -0.3, -np.pi + 0.3)
    mask = np.zeros((size, size), np.uint8)
    for centre, axes in (((cx, cy - 60 * s), (150 * s, 130 * s)), ((cx, cy), (120 * s, 150 * s))):
        cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                    (int(round(axes[0])), int(round(axes[1]))), 0, 0, 360, 255, -1)
    return FrameContext(index=int(round(t * 25)), landmarks=points, mask=mask)
