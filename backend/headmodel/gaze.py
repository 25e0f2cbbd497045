"""Eye rotations that aim each eye's optical axis at a point (the camera, for eye contact).

An eye's optical axis is its joint's +Z: at rest both eyes look along the head's +Z, and a posed
eye looks along ``G_parent @ R_eye @ [0, 0, 1]``, with ``G_parent`` the parent joint's global
rotation. The eyeball centre is the eye joint, which the eye's own rotation does not move, so the
rotation that makes an eye look at a point follows from one posing of the head.
"""

from __future__ import annotations

import torch

EYES = (3, 4)  # eye_L, eye_R in JOINT_NAMES


def camera_centres(extrinsics: torch.Tensor) -> torch.Tensor:
    """World positions of the cameras. (T, 4, 4) world-to-camera -> (T, 3)."""
    rotation, translation = extrinsics[:, :3, :3], extrinsics[:, :3, 3]
    return -torch.einsum("tji,tj->ti", rotation, translation)


def rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotation taking unit vectors ``a`` onto unit vectors ``b``, as axis-angle.

    Args:
        a, b: (..., 3) unit vectors.

    Returns:
        (..., 3) axis-angle (the axis a x b, the angle between them).
    """
    cross = torch.linalg.cross(a, b)
    sine = cross.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sine, (a * b).sum(dim=-1, keepdim=True))
    axis = cross / sine.clamp_min(1e-12)
    return axis * angle


def look_directions(transforms: torch.Tensor, joints: torch.Tensor, parents, target: torch.Tensor
                    ) -> torch.Tensor:
    """Unit directions from each eyeball centre to ``target``, in the eye's parent (head) frame.

    Args:
        transforms: (T, 5, 4, 4) the posed head's joint transforms (``HeadOutput.transforms``).
        joints: (T, 5, 3) posed joint positions (``HeadOutput.joints``).
        parents: the model's joint parents.
        target: (T, 3) the point to look at, in the same (world) space.

    Returns:
        (T, 2, 3) for eye_L and eye_R: ``G_parent^T (target - centre) / |target - centre|``.
    """
    directions = []
    for eye in EYES:
        direction = target - joints[:, eye]
        direction = direction / direction.norm(dim=-1, keepdim=True)
        parent_rotation = transforms[:, parents[eye], :3, :3]
        directions.append(torch.einsum("tji,tj->ti", parent_rotation, direction))
    return torch.stack(directions, dim=1)


def look_at_eye_rotations(transforms: torch.Tensor, joints: torch.Tensor, parents, target: torch.Tensor
                          ) -> torch.Tensor:
    """Eye rotations (relative to their parent joint) that point both optical axes at ``target``
    (arguments as ``look_directions``). -> (T, 2, 3) axis-angle, without roll about the axis."""
    local = look_directions(transforms, joints, parents, target)
    rest_axis = torch.tensor([0.0, 0.0, 1.0], dtype=local.dtype)
    return rotation_between(rest_axis.expand_as(local), local)
