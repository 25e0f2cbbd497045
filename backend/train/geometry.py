"""Small batched geometry functions: quaternions, polar decomposition, closest points on triangles.

Quaternions are (w, x, y, z), matching the rasterizer and the avatar file. Everything is pure
torch and works on any device.
"""

from __future__ import annotations

import torch


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b. (..., 4), (..., 4) -> (..., 4), wxyz."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


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


def closest_point_on_triangles(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                               c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest point of each triangle to each point (Ericson, Real-Time Collision Detection 5.1.5).

    Args:
        points, a, b, c: broadcastable (..., 3): query points and triangle corners.

    Returns:
        barycentric (..., 3) weights of the closest point (on a, b, c) and its squared distance (...).
    """
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = points - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = points - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    eps = 1e-20
    # Interior first, then overwrite with the edge and vertex regions, lowest priority first.
    denom = (va + vb + vc)
    denom = torch.where(denom.abs() < eps, torch.full_like(denom, eps), denom)
    v, w = vb / denom, vc / denom
    bary = torch.stack([1 - v - w, v, w], dim=-1)

    def put(mask, values):
        return torch.where(mask[..., None], values, bary)

    t_bc = ((d4 - d3) / ((d4 - d3) + (d5 - d6)).clamp_min(eps)).clamp(0, 1)
    zero = torch.zeros_like(d1)
    bary = put((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), torch.stack([zero, 1 - t_bc, t_bc], -1))
    t_ac = (d2 / (d2 - d6).clamp_min(eps)).clamp(0, 1)
    bary = put((vb <= 0) & (d2 >= 0) & (d6 <= 0), torch.stack([1 - t_ac, zero, t_ac], -1))
    one = torch.ones_like(d1)
    bary = put((d6 >= 0) & (d5 <= d6), torch.stack([zero, zero, one], -1))
    t_ab = (d1 / (d1 - d3).clamp_min(eps)).clamp(0, 1)
    bary = put((vc <= 0) & (d1 >= 0) & (d3 <= 0), torch.stack([1 - t_ab, t_ab, zero], -1))
    bary = put((d3 >= 0) & (d4 <= d3), torch.stack([zero, one, zero], -1))
    bary = put((d1 <= 0) & (d2 <= 0), torch.stack([one, zero, zero], -1))
    closest = bary[..., 0:1] * a + bary[..., 1:2] * b + bary[..., 2:3] * c
    return bary, ((points - closest) ** 2).sum(-1)


def nearest_triangles(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                      n_candidates: int = 8, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle and barycentric coordinates of its closest point, for many points.

    Candidate triangles are those incident to the ``n_candidates`` nearest vertices (found with a
    k-d tree), which is exact for points near a reasonably even mesh, the only ones that matter.

    Args:
        points: (P, 3) query points.
        vertices: (V, 3) mesh vertices.
        faces: (F, 3) int64 triangles.

    Returns:
        face index (P,) int64 and barycentric coordinates (P, 3) of the closest surface point.
    """
    from scipy.spatial import cKDTree

    device = points.device
    verts_np = vertices.detach().cpu().double().numpy()
    faces_cpu = faces.cpu()
    incident = incident_faces(faces_cpu, len(verts_np))  # (V, M) padded with -1
    tree = cKDTree(verts_np)
    k = min(n_candidates, len(verts_np))
    out_face = torch.empty(len(points), dtype=torch.long)
    out_bary = torch.empty(len(points), 3)
    pts_cpu = points.detach().cpu().double()
    v64, f64 = vertices.detach().cpu().double(), faces_cpu
    for start in range(0, len(points), chunk):
        p = pts_cpu[start:start + chunk]
        _, near = tree.query(p.numpy(), k=k)
        near = torch.from_numpy(near.reshape(len(p), k))
        cand = incident[near].reshape(len(p), -1)  # (p, k*M)
        valid = cand >= 0
        safe = cand.clamp_min(0)
        tri = v64[f64[safe]]  # (p, C, 3, 3)
        bary, dist = closest_point_on_triangles(p[:, None, :], tri[..., 0, :], tri[..., 1, :],
                                                tri[..., 2, :])
        dist = torch.where(valid, dist, torch.full_like(dist, float("inf")))
        best = dist.argmin(dim=1)
        rows = torch.arange(len(p))
        out_face[start:start + len(p)] = safe[rows, best]
        out_bary[start:start + len(p)] = bary[rows, best].float()
    return out_face.to(device), out_bary.to(device)


def incident_faces(faces: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(V, M) indices of the faces around each vertex, padded with -1."""
    flat = faces.reshape(-1)
    face_ids = torch.arange(len(faces)).repeat_interleave(3)
    order = torch.argsort(flat, stable=True)
    flat, face_ids = flat[order], face_ids[order]
    counts = torch.bincount(flat, minlength=n_vertices)
    width = int(counts.max()) if len(counts) else 1
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(flat)) - starts[flat]
    table = torch.full((n_vertices, max(width, 1)), -1, dtype=torch.long)
    table[flat, slot] = face_ids
    return table


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalized face normals (cross products), (..., V, 3), (F, 3) -> (..., F, 3)."""
    tri = vertices[..., faces, :]
    return torch.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :], dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals. (..., V, 3), (F, 3) -> (..., V, 3)."""
    normals = face_normals(vertices, faces)
    out = torch.zeros_like(vertices)
    for corner in range(3):
        out.index_add_(-2, faces[:, corner], normals)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
