"""Triangle-mesh geometry: closest points on triangles, nearest triangles, incident faces, normals.

Pure torch (scipy's k-d tree for the nearest-triangle candidates); works on any device.
"""

from __future__ import annotations

import torch


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


def uniform_barycentric(n: int, generator: torch.Generator,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 3) barycentric coordinates uniform over a triangle: two uniform numbers, folded back
    into the triangle when their sum passes 1."""
    u = torch.rand(n, 2, generator=generator, dtype=dtype)
    flip = u.sum(dim=1) > 1
    u[flip] = 1 - u[flip]
    return torch.stack([1 - u[:, 0] - u[:, 1], u[:, 0], u[:, 1]], dim=1)
