"""Linear blend skinning as small, batched, pure functions (tensors in, tensors out).

The equations of FLAME/SMPL: a rest mesh is built from the template plus linear shape, expression
and pose-corrective blend shapes; joints are regressed from the shaped rest mesh; each joint's
rotation is chained down the kinematic tree into a rigid transform; every vertex moves with the
weighted sum of the transforms of its joints. ``backend/formats/animate.py`` is the numpy,
one-frame twin of these functions (the tests check that both agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InputError


def batch_rodrigues(axis_angle: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula).

    Args:
        axis_angle: (N, 3) rotation vectors; direction = axis, length = angle in radians.
        eps: added inside the norm so that a zero rotation has a finite gradient.

    Returns:
        (N, 3, 3) rotation matrices.
    """
    angle = torch.sqrt((axis_angle * axis_angle).sum(dim=1, keepdim=True) + eps * eps)  # (N, 1)
    axis = axis_angle / angle
    sin, cos = torch.sin(angle)[:, :, None], torch.cos(angle)[:, :, None]
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)[None]
    return eye + sin * skew + (1.0 - cos) * torch.bmm(skew, skew)


def blend_shapes(coefficients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Weighted sum of blend-shape directions.

    Args:
        coefficients: (B, S) shape or expression coefficients.
        directions: (V, 3, S) one displacement field per coefficient.

    Returns:
        (B, V, 3) displacements.
    """
    n_vertices = directions.shape[0]
    flat = directions.reshape(n_vertices * 3, -1)  # (V*3, S)
    return (coefficients @ flat.T).view(-1, n_vertices, 3)


def vertices2joints(joint_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Joint positions as fixed linear combinations of vertices.

    Args:
        joint_regressor: (J, V) regressor; each row sums to one.
        vertices: (B, V, 3).

    Returns:
        (B, J, 3) joint positions.
    """
    return torch.einsum("jv,bvc->bjc", joint_regressor, vertices)


def batch_rigid_transform(rotations: torch.Tensor, joints: torch.Tensor,
                          parents: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain local joint rotations down the kinematic tree.

    Args:
        rotations: (B, J, 3, 3) rotation of each joint relative to its parent.
        joints: (B, J, 3) rest joint positions.
        parents: J parent indices, -1 for the root, every parent before its children.

    Returns:
        posed_joints: (B, J, 3) joint positions after posing.
        skinning: (B, J, 4, 4) transforms A_j with posed = A_j @ rest for a point bound to joint j.
    """
    batch, n_joints = joints.shape[:2]
    # 1. Local transforms: rotate about the joint, offset from the parent joint.
    has_parent = torch.tensor([p >= 0 for p in parents], device=joints.device)[None, :, None]
    parent_joints = joints[:, [max(p, 0) for p in parents]]
    offsets = torch.where(has_parent, joints - parent_joints, joints)
    local = torch.zeros(batch, n_joints, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rotations
    local[:, :, :3, 3] = offsets
    local[:, :, 3, 3] = 1.0
    # 2. World transforms: parent's world transform times the local one.
    chain = []
    for j, parent in enumerate(parents):
        chain.append(local[:, j] if parent < 0 else chain[parent] @ local[:, j])
    world = torch.stack(chain, dim=1)  # (B, J, 4, 4)
    posed_joints = world[:, :, :3, 3]
    # 3. Skinning transforms: undo the rest position of the joint before applying the world one.
    correction = torch.einsum("bjac,bjc->bja", world[:, :, :3, :3], joints)
    skinning = torch.cat([world[:, :, :3, :3], (posed_joints - correction)[..., None]], dim=3)
    bottom = world[:, :, 3:, :]
    return posed_joints, torch.cat([skinning, bottom], dim=2)


def pose_features(rotations: torch.Tensor) -> torch.Tensor:
    """Pose-corrective features: (R - I) of every joint but the root, flattened.

    Args:
        rotations: (B, J, 3, 3).

    Returns:
        (B, (J - 1) * 9) features, 36 for FLAME's five joints.
    """
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).flatten(1)


def skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of rest-space points.

    Args:
        points: (B, N, 3) rest points.
        weights: (N, J) skinning weights, rows summing to one.
        transforms: (B, J, 4, 4) skinning transforms.

    Returns:
        (B, N, 3) posed points.
    """
    batch, n_joints = transforms.shape[:2]
    blended = (weights @ transforms[:, :, :3, :].reshape(batch, n_joints, 12)).view(batch, -1, 3, 4)
    return (blended[..., :3] @ points[..., None])[..., 0] + blended[..., 3]


def lbs(coefficients: torch.Tensor, joint_rotations: torch.Tensor, v_template: torch.Tensor,
        directions: torch.Tensor, posedirs: torch.Tensor, joint_regressor: torch.Tensor,
        parents: Sequence[int], lbs_weights: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shape, pose-correct and skin a mesh (FLAME/SMPL forward).

    Args:
        coefficients: (B, S) shape and expression coefficients, concatenated.
        joint_rotations: (B, J, 3) axis-angle rotation of each joint relative to its parent.
        v_template: (V, 3) or (B, V, 3) rest template (per-subject offsets already added).
        directions: (V, 3, S) shape and expression directions, in the order of ``coefficients``.
        posedirs: ((J - 1) * 9, V * 3) pose-corrective directions.
        joint_regressor: (J, V).
        parents: J parent indices.
        lbs_weights: (V, J).

    Returns:
        vertices (B, V, 3) posed; posed_joints (B, J, 3); transforms (B, J, 4, 4); rest_joints (B, J, 3).
    """
    batch, n_joints = joint_rotations.shape[:2]
    if n_joints != len(parents) or joint_regressor.shape[0] != n_joints:
        raise InputError(f"expected rotations for {len(parents)} joints, got shape "
                         f"{tuple(joint_rotations.shape)}")
    # 1. Identity and expression blend shapes, then joints from the shaped rest mesh.
    shaped = v_template + blend_shapes(coefficients, directions)
    rest_joints = vertices2joints(joint_regressor, shaped)
    # 2. Pose correctives from the joint rotations.
    rotations = batch_rodrigues(joint_rotations.reshape(-1, 3)).view(batch, n_joints, 3, 3)
    corrected = shaped + (pose_features(rotations) @ posedirs).view(batch, -1, 3)
    # 3. Rigid chain and skinning.
    posed_joints, transforms = batch_rigid_transform(rotations, rest_joints, parents)
    vertices = skin_points(corrected, lbs_weights, transforms)
    return vertices, posed_joints, transforms, rest_joints
