"""The precomputed lookup grid of 3DGB section 3.4.

Gaussians move and are created during training; their LBS weights and the displacement
magnitudes d_{i,k} of their nearest surface point are read from a grid around the neutral mesh
by trilinear interpolation of the eight surrounding nodes. Each node stores its closest point on
the mesh (triangle index and barycentric coordinates), so the per-node values are computed from
the mesh's own per-vertex data at lookup time and the grid stays small (10 bytes per node, 168 MB
at 256^3). Nodes farther than ``band`` from the mesh use their nearest vertex instead of an exact
closest-triangle search, which keeps building a 256^3 grid to seconds; Gaussians live near the
surface, so those nodes matter little.
"""

from __future__ import annotations

import torch

from ..geometry.triangles import incident_faces, nearest_triangles


class SurfaceGrid:
    """Closest-surface-point grid over the box around a mesh.

    Attributes:
        origin: (3,) corner of the box; cell: edge length of a cell; resolution: nodes per axis.
        face_ids: (R, R, R) int32; bary: (R, R, R, 3) float16.
    """

    def __init__(self, origin: torch.Tensor, cell: float, face_ids: torch.Tensor, bary: torch.Tensor):
        self.origin, self.cell = origin, float(cell)
        self.face_ids, self.bary = face_ids, bary
        self.resolution = int(face_ids.shape[0])

    @classmethod
    def build(cls, vertices: torch.Tensor, faces: torch.Tensor, resolution: int = 64,
              padding: float = 0.15, band_cells: float = 3.0) -> SurfaceGrid:
        """Build the grid for mesh (V, 3), (F, 3) at ``resolution`` nodes per axis."""
        from scipy.spatial import cKDTree

        verts = vertices.detach().cpu().float()
        low, high = verts.min(dim=0).values, verts.max(dim=0).values
        size = float((high - low).max()) * (1 + 2 * padding)
        center = 0.5 * (low + high)
        origin = center - size / 2
        cell = size / (resolution - 1)
        axis = torch.arange(resolution, dtype=torch.float32) * cell
        nodes = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3) + origin
        distance, nearest = cKDTree(verts.numpy()).query(nodes.numpy(), k=1, workers=-1)
        distance, nearest = torch.from_numpy(distance), torch.from_numpy(nearest).long()
        # Far nodes: the nearest vertex as a corner of one of its triangles.
        incident = incident_faces(faces.cpu(), len(verts))
        face_ids = incident[nearest, 0].clamp_min(0)
        corner = (faces.cpu()[face_ids] == nearest[:, None]).float()
        bary = corner / corner.sum(dim=1, keepdim=True).clamp_min(1)
        near = (distance < band_cells * cell).nonzero().squeeze(1)
        if len(near):
            near_faces, near_bary = nearest_triangles(nodes[near], verts, faces.cpu())
            face_ids[near], bary[near] = near_faces, near_bary
        shape = (resolution,) * 3
        return cls(origin.to(vertices.device), cell,
                   face_ids.reshape(shape).int().to(vertices.device),
                   bary.reshape(shape + (3,)).half().to(vertices.device))

    def corners(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The 8 surrounding nodes of each point: face ids (P, 8), bary (P, 8, 3), weights (P, 8)."""
        r = self.resolution
        local = ((points - self.origin) / self.cell).clamp(0, r - 1 - 1e-4)
        base = local.floor().long()
        frac = local - base
        faces_out, bary_out, weights = [], [], []
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    i, j, k = base[:, 0] + dx, base[:, 1] + dy, base[:, 2] + dz
                    faces_out.append(self.face_ids[i, j, k].long())
                    bary_out.append(self.bary[i, j, k].float())
                    wx = frac[:, 0] if dx else 1 - frac[:, 0]
                    wy = frac[:, 1] if dy else 1 - frac[:, 1]
                    wz = frac[:, 2] if dz else 1 - frac[:, 2]
                    weights.append(wx * wy * wz)
        return torch.stack(faces_out, 1), torch.stack(bary_out, 1), torch.stack(weights, 1)

    def lookup(self, points: torch.Tensor, faces: torch.Tensor, vertex_values: torch.Tensor,
               vertex_vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Trilinearly interpolated surface values at ``points``.

        Args:
            points: (P, 3).
            faces: (F, 3) int64 mesh triangles.
            vertex_values: (V, D) per-vertex values (e.g. LBS weights), interpolated linearly.
            vertex_vectors: (V, 3, K) per-vertex vectors (expression directions) whose length at
                the closest surface point is interpolated (the d_{i,k} of Eq. 2).

        Returns:
            values (P, D) and lengths (P, K) (None without ``vertex_vectors``).
        """
        face_ids, bary, weights = self.corners(points)
        corner_ids = faces[face_ids]  # (P, 8, 3)
        values = (vertex_values[corner_ids] * bary[..., None]).sum(dim=2)  # (P, 8, D)
        values = (values * weights[..., None]).sum(dim=1)
        lengths = None
        if vertex_vectors is not None:
            vectors = (vertex_vectors[corner_ids] * bary[..., None, None]).sum(dim=2)  # (P, 8, 3, K)
            lengths = (vectors.norm(dim=2) * weights[..., None]).sum(dim=1)
        return values, lengths

    def state_dict(self) -> dict:
        return {"origin": self.origin, "cell": torch.tensor(self.cell), "face_ids": self.face_ids,
                "bary": self.bary}

    @classmethod
    def from_state_dict(cls, state: dict) -> SurfaceGrid:
        return cls(state["origin"], float(state["cell"]), state["face_ids"], state["bary"])
