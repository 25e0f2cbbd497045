"""Blue-noise (Poisson-disk) sampling of points on a triangle mesh.

3DGB distributes the neutral Gaussians on the neutral mesh with Poisson-disk sampling. Here:
draw many area-weighted random points, then keep a maximal subset whose pairwise distances
exceed a radius (greedy dart throwing on a hash grid, vectorized in rounds), with the radius
chosen by bisection so that about ``n_points`` survive. Deterministic for a given generator.
"""

from __future__ import annotations

import math

import torch

from ..geometry.triangles import uniform_barycentric


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n_points: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted uniform random points on a mesh.

    Args:
        vertices: (V, 3); faces: (F, 3) int64; n_points: how many; generator: CPU torch RNG.

    Returns:
        face indices (n,) int64 and barycentric coordinates (n, 3).
    """
    tri = vertices[faces].cpu().double()
    areas = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    face_ids = torch.multinomial(areas / areas.sum(), n_points, replacement=True, generator=generator)
    return face_ids, uniform_barycentric(n_points, generator, torch.float64).float()


def poisson_disk_on_mesh(vertices: torch.Tensor, faces: torch.Tensor, n_points: int,
                         seed: int = 0, oversample: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``n_points`` blue-noise samples on a mesh (within a few percent).

    Args:
        vertices: (V, 3); faces: (F, 3) int64.
        n_points: target count.
        seed: RNG seed; the result is deterministic.
        oversample: candidates per target point.

    Returns:
        face indices (n,) int64 and barycentric coordinates (n, 3), on ``vertices``' device.
    """
    generator = torch.Generator().manual_seed(seed)
    verts = vertices.detach().cpu().float()
    face_ids, bary = sample_surface(verts, faces.cpu(), n_points * oversample, generator)
    points = (verts[faces.cpu()[face_ids]] * bary[..., None]).sum(dim=1)
    tri = verts[faces.cpu()]
    area = float(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1).sum() / 2)
    # Maximal Poisson-disk packings reach density ~0.7 of hexagonal packing: r ~ sqrt(A / n).
    low, high = 0.3 * math.sqrt(area / n_points), 1.5 * math.sqrt(area / n_points)
    keep = torch.arange(len(points))
    for _ in range(12):
        radius = 0.5 * (low + high)
        keep = _dart_throw(points, radius, generator)
        if abs(len(keep) - n_points) <= 0.02 * n_points:
            break
        low, high = (radius, high) if len(keep) > n_points else (low, radius)
    keep = keep[:n_points]
    return face_ids[keep].to(vertices.device), bary[keep].to(vertices.device)


def _dart_throw(points: torch.Tensor, radius: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of a maximal subset of ``points`` with pairwise distances >= radius.

    Candidates are visited in random order; in each round a candidate is accepted when no
    accepted point and no earlier-ranked pending candidate lies within the radius.
    """
    from scipy.spatial import cKDTree

    order = torch.randperm(len(points), generator=generator)
    pts = points[order].numpy()
    tree = cKDTree(pts)
    pairs = tree.query_pairs(radius, output_type="ndarray")  # (P, 2) i < j in visiting rank
    accepted = torch.zeros(len(pts), dtype=torch.bool)
    alive = torch.ones(len(pts), dtype=torch.bool)
    i, j = torch.from_numpy(pairs[:, 0]).long(), torch.from_numpy(pairs[:, 1]).long()
    while bool(alive.any()):
        live = alive[i] & alive[j]
        # A live candidate is blocked if any live neighbour has a smaller rank.
        blocked = torch.zeros(len(pts), dtype=torch.bool)
        blocked[j[live]] = True
        newly = alive & ~blocked
        accepted |= newly
        alive &= ~newly
        # Neighbours of accepted points die.
        kill = torch.zeros(len(pts), dtype=torch.bool)
        kill[j[newly[i]]] = True
        kill[i[newly[j]]] = True
        alive &= ~kill
    return order[accepted.nonzero().squeeze(1)]
