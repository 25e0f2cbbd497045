"""Blend and skin an avatar with numpy: the reference the Blender import is checked against.

The same equations as the trainer (3DGB Eq. 1, then linear blend skinning), in float64 numpy,
for one frame at a time. Positions only; rotations of the Gaussians follow the same transforms.
"""

from __future__ import annotations

import numpy as np

from .avatar import Avatar


def rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """Rotation matrices from axis-angle vectors. (..., 3) -> (..., 3, 3)."""
    axis_angle = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
    axis = axis_angle / np.maximum(angle, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    skew = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(axis.shape[:-1] + (3, 3))
    sin, cos = np.sin(angle)[..., None], np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), skew.shape)
    return eye + sin * skew + (1.0 - cos) * (skew @ skew)


def joint_transforms(joint_positions: np.ndarray, parents: np.ndarray,
                     rotations: np.ndarray, translation: np.ndarray | None = None) -> np.ndarray:
    """Per-joint skinning transforms (rest space -> posed space).

    Args:
        joint_positions: (J, 3) rest positions.
        parents: (J,) parent indices, -1 for the root, parents before children.
        rotations: (J, 3) axis-angle rotation of each joint relative to its parent.
        translation: (3,) global translation added after skinning.

    Returns:
        (J, 4, 4) transforms A_j with posed = A_j @ rest for points fully bound to joint j.
    """
    joints = np.asarray(joint_positions, dtype=np.float64)
    local_rotations = rodrigues(rotations)
    world = np.zeros((len(joints), 4, 4))
    for j, parent in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = local_rotations[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0.0)
        world[j] = local if parent < 0 else world[parent] @ local
    skinning = world.copy()
    skinning[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)
    if translation is not None:
        skinning[:, :3, 3] += np.asarray(translation, dtype=np.float64)
    return skinning


def skin(points: np.ndarray, weights: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Linear blend skinning. points (N, 3), weights (N, J), transforms (J, 4, 4) -> (N, 3)."""
    blended = np.einsum("nj,jab->nab", weights.astype(np.float64), transforms)
    return np.einsum("nab,nb->na", blended[:, :3, :3], points) + blended[:, :3, 3]


def blend_means(avatar: Avatar, expressions: np.ndarray) -> np.ndarray:
    """Neutral means plus the weighted expression deltas (mouth Gaussians are not blended)."""
    expressions = np.asarray(expressions, dtype=np.float64)
    if expressions.shape != (avatar.n_expressions,):
        raise ValueError(f"expected {avatar.n_expressions} expression coefficients, "
                         f"got shape {expressions.shape}")
    offsets = np.einsum("k,knc->nc", expressions, avatar.delta_means.astype(np.float64))
    offsets[avatar.mouth] = 0.0
    return avatar.means.astype(np.float64) + offsets


def posed_means(avatar: Avatar, expressions: np.ndarray, rotations: np.ndarray,
                translation: np.ndarray | None = None) -> np.ndarray:
    """Gaussian centres for one frame: blend (3DGB Eq. 1), then LBS. Returns (N, 3) float64."""
    transforms = joint_transforms(avatar.joint_positions, avatar.joint_parents, rotations, translation)
    return skin(blend_means(avatar, expressions), avatar.lbs_weights, transforms)


def posed_mesh(avatar: Avatar, expressions: np.ndarray, rotations: np.ndarray,
               translation: np.ndarray | None = None) -> np.ndarray:
    """The reference head mesh for one frame. Returns (V, 3) float64."""
    vertices = avatar.mesh_vertices.astype(np.float64) + np.einsum(
        "k,kvc->vc", np.asarray(expressions, dtype=np.float64), avatar.mesh_expression_dirs)
    transforms = joint_transforms(avatar.joint_positions, avatar.joint_parents, rotations, translation)
    return skin(vertices, avatar.mesh_lbs_weights, transforms)
