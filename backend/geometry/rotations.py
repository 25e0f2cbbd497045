"""Rotations as batched pure functions: quaternion product, quaternion <-> matrix, polar rotation.

Quaternions are (w, x, y, z), matching the rasterizer and the avatar file. Everything is pure
torch, works on any device and is differentiable.
"""

from __future__ import annotations

import torch


def quat_multiply(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Hamilton product a * b, wxyz along ``dim``. (..., 4), (..., 4) -> (..., 4) for dim=-1;
    dim=0 takes channel-major (4, N) quaternions and returns (4, N)."""
    aw, ax, ay, az = a.unbind(dim)
    bw, bx, by, bz = b.unbind(dim)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=dim)


def quat_to_matrix(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of (not necessarily unit) quaternions. (..., 4) -> (..., 3, 3)."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(matrices: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w >= 0) of rotation matrices. (..., 3, 3) -> (..., 4).

    Computes the four candidate forms and keeps, per matrix, the numerically best one (the one
    whose leading component is largest), so it is stable for every rotation angle.
    """
    m = matrices
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    trace_terms = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                               1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    roots = trace_terms.clamp_min(1e-12).sqrt()  # 2 * |component|
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s21, s02, s10 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]
    candidates = torch.stack([
        torch.stack([roots[..., 0] ** 2, d21, d02, d10], dim=-1) / (2 * roots[..., 0:1]),
        torch.stack([d21, roots[..., 1] ** 2, s10, s02], dim=-1) / (2 * roots[..., 1:2]),
        torch.stack([d02, s10, roots[..., 2] ** 2, s21], dim=-1) / (2 * roots[..., 2:3]),
        torch.stack([d10, s02, s21, roots[..., 3] ** 2], dim=-1) / (2 * roots[..., 3:4]),
    ], dim=-2)  # (..., 4 candidates, 4)
    best = trace_terms.argmax(dim=-1)
    quats = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(quats[..., :1] < 0, -quats, quats)


def polar_rotation(matrices: torch.Tensor) -> torch.Tensor:
    """Rotation part R of the polar decomposition M = R S, via SVD (Shoemake and Duff).

    Args:
        matrices: (..., 3, 3) affine parts (e.g. deformation gradients).

    Returns:
        (..., 3, 3) proper rotations (det +1): the closest rotation to each matrix.
    """
    u, _, vh = torch.linalg.svd(matrices)
    det = torch.det(u @ vh)
    flip = torch.ones_like(u[..., 0, :])
    flip[..., 2] = torch.where(det < 0, -1.0, 1.0)
    return (u * flip[..., None, :]) @ vh
