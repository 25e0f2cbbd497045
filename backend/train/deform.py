"""Initial Gaussian blendshapes from mesh deformation gradients (3DGB section 3.2).

For each triangle of the neutral mesh M0 and each expression mesh Mk = M0 + exprdirs[..., k],
the deformation gradient (Sumner and Popovic 2004, with a fourth vertex along the normal) is
the affine map between the two triangles; its rotation (polar decomposition) is applied to the
position (about the closest surface point), rotation and SH of each Gaussian bound to the
triangle. Scale and opacity deltas start at zero, as in the paper.
"""

from __future__ import annotations

import torch

from ..geometry.rotations import matrix_to_quat, polar_rotation, quat_multiply


def _frames(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Edge frames [v2-v1, v3-v1, n/sqrt|n|] as columns. (..., V, 3) -> (..., F, 3, 3)."""
    tri = vertices[..., faces, :]  # (..., F, 3, 3)
    e1, e2 = tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :]
    normal = torch.cross(e1, e2, dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-20).sqrt()
    return torch.stack([e1, e2, normal], dim=-1)


def deformation_rotations(vertices: torch.Tensor, faces: torch.Tensor,
                          expression_dirs: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Per-triangle rotation from M0 to each unit expression mesh Mk.

    Args:
        vertices: (V, 3) neutral mesh M0.
        faces: (F, 3) int64.
        expression_dirs: (V, 3, K) vertex offsets of expression k at coefficient 1.

    Returns:
        (K, F, 3, 3) rotations.
    """
    rest = _frames(vertices.double(), faces)
    rest_inv = torch.linalg.pinv(rest)
    out = []
    dirs = expression_dirs.double()
    for start in range(0, dirs.shape[-1], chunk):
        meshes = vertices.double()[None] + dirs[..., start:start + chunk].permute(2, 0, 1)
        gradients = _frames(meshes, faces) @ rest_inv[None]
        out.append(polar_rotation(gradients).float())
    return torch.cat(out, dim=0)


def initial_deltas(means: torch.Tensor, quats: torch.Tensor, face_ids: torch.Tensor,
                   bary: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                   expression_dirs: torch.Tensor, rotations: torch.Tensor) -> dict[str, torch.Tensor]:
    """Delta_B_init for position and rotation of each Gaussian (N Gaussians, K expressions).

    Position: x_k = p_k + R_k (x0 - p0), with p the closest surface point (face, barycentric).
    Rotation: q_k = q(R_k) * q0. SH: degree-0 deltas only are stored, and rotating the
    DC band changes nothing, so the SH delta starts at zero.

    Args:
        means: (N, 3); quats: (N, 4) normalized wxyz; face_ids: (N,); bary: (N, 3).
        vertices: (V, 3); faces: (F, 3); expression_dirs: (V, 3, K).
        rotations: (K, F, 3, 3) from ``deformation_rotations``.

    Returns:
        {"means": (N, K, 3), "quats": (N, K, 4)}.
    """
    corner_ids = faces[face_ids]  # (N, 3)
    surface0 = (vertices[corner_ids] * bary[..., None]).sum(dim=1)  # (N, 3)
    # Displacement of the closest surface point in each unit expression: (N, K, 3).
    point_dirs = (expression_dirs[corner_ids] * bary[:, :, None, None]).sum(dim=1).permute(0, 2, 1)
    rot = rotations[:, face_ids].permute(1, 0, 2, 3)  # (N, K, 3, 3)
    offset = (means - surface0)[:, None, :, None]  # (N, 1, 3, 1)
    moved = surface0[:, None] + point_dirs + (rot @ offset).squeeze(-1)
    delta_means = moved - means[:, None]
    unit = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    rotated = quat_multiply(matrix_to_quat(rot), unit[:, None].expand(-1, rot.shape[1], -1))
    # Keep the delta small: choose the sign of q_k closest to q0 (q and -q are the same rotation).
    sign = torch.where((rotated * unit[:, None]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    delta_quats = rotated * sign - unit[:, None]
    return {"means": delta_means, "quats": delta_quats}


def displacement_magnitudes(expression_dirs: torch.Tensor, faces: torch.Tensor,
                            face_ids: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """d_{i,k}: length of the displacement of each point's closest surface point in expression k.

    Args:
        expression_dirs: (V, 3, K); faces: (F, 3); face_ids: (N,); bary: (N, 3).

    Returns:
        (N, K) magnitudes in metres per unit coefficient.
    """
    corner_ids = faces[face_ids]
    point_dirs = (expression_dirs[corner_ids] * bary[:, :, None, None]).sum(dim=1)  # (N, 3, K)
    return point_dirs.norm(dim=1)


def consistency_scale(distances: torch.Tensor, max_distances: torch.Tensor,
                      epsilon: float = 1e-5) -> torch.Tensor:
    """max(f(d), 0) of Eq. 2 with f(x) = (x - eps) / (d_max - eps).

    Args:
        distances: (N, K) d_{i,k}.
        max_distances: (K,) d~_k, the largest vertex displacement of mesh blendshape k.

    Returns:
        (N, K) scales: 0 where the surface does not move, 1 where it moves the most.
    """
    denom = (max_distances - epsilon).clamp_min(1e-12)
    return ((distances - epsilon) / denom).clamp_min(0.0)
