"""The mesh z-buffer: a small vectorized triangle rasterizer in torch.

Independent of the Gaussian rasterizer on purpose. It renders the synthetic subject (a mesh with
a procedural texture, so the avatar has to *learn* it, as with a real video), and gives the
exact visibility of a posed head mesh to one-shot training and photometric tracking.
Output per pixel: the visible triangle and the perspective-correct barycentric coordinates.
"""

from __future__ import annotations

import torch


def project(vertices: torch.Tensor, viewmat: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates and depth. (V, 3), (4, 4), (3, 3) -> (V, 3) as (u, v, z)."""
    cam = vertices @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2].clamp_min(1e-6)
    u = intrinsics[0, 0] * cam[:, 0] / z + intrinsics[0, 2]
    v = intrinsics[1, 1] * cam[:, 1] / z + intrinsics[1, 2]
    return torch.stack([u, v, z], dim=1)


def rasterize(screen: torch.Tensor, faces: torch.Tensor, width: int, height: int,
              cull: torch.Tensor | None = None,
              max_pairs: int = 4_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible triangle per pixel.

    Args:
        screen: (V, 3) projected vertices (u, v in pixels, pixel centres at +0.5; z depth).
        faces: (F, 3) int64.
        width, height: image size.
        cull: (F,) bool, triangles that are dropped when they face away from the camera
            (counter-clockwise = front in image space with y down); None culls none.

    Returns:
        face index (H, W) int64 (-1 for background) and barycentric coordinates (H, W, 3),
        perspective-correct.
    """
    tri = screen[faces]  # (F, 3, 3)
    lo = tri[..., :2].min(dim=1).values.floor().clamp_min(0).long()
    hi = tri[..., :2].max(dim=1).values.ceil().long()
    hi[:, 0].clamp_(max=width - 1)
    hi[:, 1].clamp_(max=height - 1)
    keep = (hi >= lo).all(dim=1) & (tri[..., 2] > 1e-4).all(dim=1)
    if cull is not None:
        area = _edge(tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2])
        keep &= ~cull | (area < 0)
    face_ids = keep.nonzero().squeeze(1)
    sizes = (hi[face_ids] - lo[face_ids] + 1).prod(dim=1)
    best_depth = torch.full((height * width,), float("inf"))
    best_face = torch.full((height * width,), -1, dtype=torch.long)
    best_bary = torch.zeros(height * width, 3)
    # Process triangles in chunks so the (triangle, pixel) pairs stay bounded.
    cumulative = torch.cumsum(sizes, 0)
    start = 0
    while start < len(face_ids):
        base = int(cumulative[start - 1]) if start else 0
        stop = int(torch.searchsorted(cumulative, base + max_pairs, right=True))
        stop = max(stop, start + 1)
        _rasterize_chunk(tri, face_ids[start:stop], lo, hi, sizes[start:stop], width,
                         best_depth, best_face, best_bary)
        start = stop
    return best_face.reshape(height, width), best_bary.reshape(height, width, 3)


def _rasterize_chunk(tri, face_ids, lo, hi, sizes, width, best_depth, best_face, best_bary) -> None:
    """Z-test the pixels covered by ``face_ids`` against the buffers (updated in place)."""
    pair_face = face_ids.repeat_interleave(sizes)
    offsets = torch.arange(len(pair_face)) - (torch.cumsum(sizes, 0) - sizes).repeat_interleave(sizes)
    box_w = (hi[pair_face, 0] - lo[pair_face, 0] + 1)
    px = lo[pair_face, 0] + offsets % box_w
    py = lo[pair_face, 1] + offsets // box_w
    corners = tri[pair_face]  # (P, 3, 3)
    a, b, c = corners[:, 0, :2], corners[:, 1, :2], corners[:, 2, :2]
    p = torch.stack([px.float() + 0.5, py.float() + 0.5], dim=1)
    area = _edge(a, b, c)
    valid = area.abs() > 1e-12
    safe_area = torch.where(valid, area, torch.ones_like(area))
    w0, w1, w2 = _edge(b, c, p) / safe_area, _edge(c, a, p) / safe_area, _edge(a, b, p) / safe_area
    screen_bary = torch.stack([w0, w1, w2], dim=1)
    inside = valid & (screen_bary >= -1e-6).all(dim=1)
    inv_z = (screen_bary / corners[:, :, 2]).sum(dim=1)
    depth = 1 / inv_z.clamp_min(1e-12)
    pixel = py * width + px
    pixel, depth, pair_face = pixel[inside], depth[inside], pair_face[inside]
    bary = (screen_bary[inside] / corners[inside][:, :, 2]) * depth[:, None]
    chunk_best = torch.full_like(best_depth, float("inf")).scatter_reduce(0, pixel, depth, "amin")
    win = (depth <= chunk_best[pixel]) & (depth < best_depth[pixel])
    best_depth[pixel[win]] = depth[win]
    best_face[pixel[win]] = pair_face[win]
    best_bary[pixel[win]] = bary[win]


def _edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0])
