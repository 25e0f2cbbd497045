"""Near-frontal frames of a tracking file, for the progressive (3DToonify-style) schedule.

3DToonify adapts geometry on stylized frames seen from the front only, where a 2D stylizer is
most reliable. The head's yaw is read from the root joint's axis-angle rotation (head-model axes:
+X subject's left, +Y up, +Z out of the face): the forward axis +Z, rotated, projected onto the
horizontal X-Z plane, makes the angle yaw = atan2(f_x, f_z) with +Z.

numpy only (usable by the trainer and by tools without torch).
"""

from __future__ import annotations

import os

import numpy as np

from ..formats.animate import rodrigues

DEFAULT_MAX_YAW = 0.2   # radians


def head_yaw(joint_rotations: np.ndarray) -> np.ndarray:
    """Yaw of the head per frame from the root joint rotation.

    Args:
        joint_rotations: (T, J, 3) axis-angle per joint (root first), or (T, 3) root rotations.

    Returns:
        (T,) yaw in radians, positive when the face turns toward +X (the subject's left).
    """
    rotations = np.asarray(joint_rotations)
    root = rotations[:, 0] if rotations.ndim == 3 else rotations
    forward = rodrigues(root)[..., :, 2]      # the rotated +Z axis, (T, 3)
    return np.arctan2(forward[:, 0], forward[:, 2])


def frontal_frame_indices(tracking, max_abs_yaw: float = DEFAULT_MAX_YAW,
                          valid_only: bool = True) -> np.ndarray:
    """Indices of the frames whose head yaw is within ``max_abs_yaw``.

    Args:
        tracking: a ``backend.formats.tracking.Tracking`` or the path of a tracking file.
        max_abs_yaw: the threshold in radians (3DToonify's default 0.2).
        valid_only: leave out frames the tracker filled in (``valid`` False).

    Returns:
        (M,) int64 frame indices (rows of the tracking file, i.e. ``frames/{i:06d}.png``).
    """
    if isinstance(tracking, (str, os.PathLike)):
        from ..formats import tracking as tracking_format

        tracking = tracking_format.read(tracking)
    keep = np.abs(head_yaw(tracking.joint_rotations)) < max_abs_yaw
    if valid_only:
        keep &= np.asarray(tracking.valid, dtype=bool)
    return np.flatnonzero(keep).astype(np.int64)
