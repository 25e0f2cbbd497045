"""Initialization of the avatar (3DGB section 3.2, "Initialization").

1. Neutral mesh M0 of the subject (template + identity shape + per-subject offsets).
2. B0: Poisson-disk samples on M0; LBS weights interpolated from the nearest triangle.
3. dB_init: deformation-gradient rotations from M0 to each unit expression mesh Mk.
4. Eq. 2 scales max(f(d), 0) from the displacement of each Gaussian's closest surface point.
5. B_m: teeth billboards, skinned only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import ModelConfig
from .deform import consistency_scale, deformation_rotations, displacement_magnitudes, initial_deltas
from .grid import SurfaceGrid
from .model import GaussianBlendshapes
from .mouth import MouthVolume, teeth_billboards
from .sampling import poisson_disk_on_mesh
from .sh import rgb_to_sh0


@dataclass
class SubjectMesh:
    """The subject's neutral head mesh and what the trainer needs from the head model."""

    vertices: torch.Tensor         # (V, 3) neutral mesh M0
    faces: torch.Tensor            # (F, 3) int64
    expression_dirs: torch.Tensor  # (V, 3, K)
    lbs_weights: torch.Tensor      # (V, J)
    rest_joints: torch.Tensor      # (J, 3)
    max_distances: torch.Tensor    # (K,) d~_k: largest vertex displacement of each blendshape


def subject_mesh(head, shape: torch.Tensor | None, vertex_offsets: torch.Tensor | None) -> SubjectMesh:
    """Neutral mesh and rest joints of a subject from the head model (``backend.headmodel``)."""
    device = head.v_template.device
    k = head.exprdirs.shape[-1]
    with torch.no_grad():
        out = head(shape=None if shape is None else shape[None].to(device),
                   expression=torch.zeros(1, k, device=device),
                   joint_rotations=torch.zeros(1, 5, 3, device=device),
                   translation=torch.zeros(1, 3, device=device),
                   vertex_offsets=None if vertex_offsets is None else vertex_offsets.to(device))
    dirs = head.exprdirs.float()
    return SubjectMesh(vertices=out.vertices[0].float(), faces=head.faces.long(), expression_dirs=dirs,
                       lbs_weights=head.lbs_weights.float(), rest_joints=out.rest_joints[0].float(),
                       max_distances=dirs.norm(dim=1).max(dim=0).values)


def initialize_avatar(mesh: SubjectMesh, head, config: ModelConfig, joint_parents: tuple[int, ...],
                      color: tuple[float, float, float] | None = None,
                      seed: int = 0) -> tuple[GaussianBlendshapes, SurfaceGrid, MouthVolume]:
    """Build the initial avatar, its lookup grid and the mouth volume.

    Args:
        mesh: the subject's neutral mesh (``subject_mesh``).
        head: the HeadModel (for landmarks and weights of the teeth billboards).
        config: sizes and SH degree.
        joint_parents: kinematic tree of the joints.
        color: initial RGB of every Gaussian (e.g. the mean colour of the frames).
        seed: sampling seed.
    """
    faces = _sampled_faces(mesh, head, config.neck_margin)
    face_ids, bary = poisson_disk_on_mesh(mesh.vertices, mesh.faces[faces], config.n_face_gaussians,
                                          seed=seed)
    face_ids = faces[face_ids]
    corners = mesh.faces[face_ids]
    means = (mesh.vertices[corners] * bary[..., None]).sum(dim=1)
    face_weights = (mesh.lbs_weights[corners] * bary[..., None]).sum(dim=1)
    n_face = len(means)
    quats = torch.zeros(n_face, 4, device=means.device)
    quats[:, 0] = 1
    if config.flat_init > 0:
        quats = _triangle_frames(mesh.vertices, mesh.faces[face_ids])
    rotations = deformation_rotations(mesh.vertices, mesh.faces, mesh.expression_dirs)
    init = initial_deltas(means, quats, face_ids, bary, mesh.vertices, mesh.faces,
                          mesh.expression_dirs, rotations)
    distances = displacement_magnitudes(mesh.expression_dirs, mesh.faces, face_ids, bary)
    consistency = consistency_scale(distances, mesh.max_distances, config.epsilon)
    teeth = teeth_billboards(head, config.n_mouth_gaussians, seed=seed)
    tensors = _assemble(means, quats, face_weights, init, consistency, teeth, config, color)
    if config.flat_init > 0:  # the third axis is the triangle's (the billboard's) normal
        tensors["log_scales"][:, 2] += math.log(config.flat_init)
    model = GaussianBlendshapes(tensors, joint_parents, config.sh_degree)
    grid = SurfaceGrid.build(mesh.vertices, mesh.faces, resolution=config.grid_resolution)
    return model, grid, teeth["volume"]


def _triangle_frames(vertices: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Quaternions (wxyz) of the frames [edge, normal x edge, normal] of triangles (N, 3)."""
    from ..geometry.rotations import matrix_to_quat

    a, b, c = (vertices[corners[:, i]] for i in range(3))
    normal = torch.linalg.cross(b - a, c - a)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    edge = (b - a) / (b - a).norm(dim=-1, keepdim=True).clamp_min(1e-12)
    third = torch.linalg.cross(normal, edge)
    return matrix_to_quat(torch.stack([edge, third, normal], dim=-1))


def _sampled_faces(mesh: SubjectMesh, head, margin: float | None) -> torch.Tensor:
    """Indices of the triangles B0 is sampled on: those reaching above ``margin`` metres below the
    neck cut (headmodel/regions.py; the head region and a little more, so the neck ends below
    the region's edge), or all of them when ``margin`` is None."""
    everything = torch.arange(len(mesh.faces), device=mesh.faces.device)
    if margin is None:
        return everything
    from ..headmodel.regions import cut_height

    floor = cut_height(head, mesh.vertices) - margin
    keep = (mesh.vertices[mesh.faces][..., 1] > floor).any(dim=1)
    return everything[keep] if int(keep.sum()) > 0 else everything


def _assemble(means, quats, weights, init, consistency, teeth, config: ModelConfig,
              color) -> dict[str, torch.Tensor]:
    """Concatenate face and mouth Gaussians into the per-Gaussian tensors of the model."""
    n_face, k = consistency.shape
    n_mouth = len(teeth["means"])
    n = n_face + n_mouth
    device = means.device
    all_means = torch.cat([means, teeth["means"]])
    rgb = torch.tensor(color if color is not None else config.init_color, device=device)
    sh_dc = rgb_to_sh0(rgb).expand(n, 1, 3).clone()
    sh_dc[n_face:] = rgb_to_sh0(torch.tensor([0.9, 0.88, 0.82], device=device))  # teeth: ivory
    n_coeffs = (config.sh_degree + 1) ** 2
    zeros = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
    return {
        "means": all_means,
        "log_scales": _initial_log_scales(all_means).expand(n, 3).clone(),
        "quats": torch.cat([quats, teeth["quats"]]),
        "opacity_logits": torch.full((n,), math.log(config.init_opacity / (1 - config.init_opacity)),
                                     device=device),
        "sh_dc": sh_dc,
        "sh_rest": zeros(n, n_coeffs - 1, 3),
        "delta_means": zeros(n, k, 3), "delta_log_scales": zeros(n, k, 3),
        "delta_quats": zeros(n, k, 4), "delta_opacity_logits": zeros(n, k), "delta_sh": zeros(n, k, 1, 3),
        "init_means": torch.cat([init["means"], zeros(n_mouth, k, 3)]),
        "init_quats": torch.cat([init["quats"], zeros(n_mouth, k, 4)]),
        "consistency": torch.cat([consistency, zeros(n_mouth, k)]),
        "lbs_weights": torch.cat([weights, teeth["lbs_weights"]]),
        "mouth": torch.cat([torch.zeros(n_face, dtype=torch.bool, device=device),
                            torch.ones(n_mouth, dtype=torch.bool, device=device)]),
    }


def _initial_log_scales(points: torch.Tensor) -> torch.Tensor:
    """log of the RMS distance to the 3 nearest neighbours (as 3DGS), (N, 3) -> (N, 1)."""
    from scipy.spatial import cKDTree

    pts = points.detach().cpu().numpy()
    distances, _ = cKDTree(pts).query(pts, k=4)
    mean_sq = torch.from_numpy((distances[:, 1:] ** 2).mean(axis=1)).float().clamp_min(1e-10)
    return (0.5 * mean_sq.log())[:, None].to(points.device)
