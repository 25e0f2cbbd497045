"""Mouth-interior Gaussians (3DGB section 3.1): teeth billboards and the cylinder of Eq. 5.

Two curved billboards behind the lips stand for the upper and lower teeth. Upper-teeth
Gaussians take the skinning weights of the back of the head (they move rigidly with the
skull); lower-teeth Gaussians take those of the vertex most bound to the jaw. They are never
blended, only skinned. A cylinder across the mouth bounds where they may go (L_reg).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# mediapipe FaceMesh ids: inner upper lip, inner lower lip, left and right mouth corners.
_UPPER_LIP, _LOWER_LIP, _CORNERS = 13, 14, (78, 308)


@dataclass
class MouthVolume:
    """A cylinder along x (left-right) in rest space: centre (3,), radius, half length (metres)."""

    center: torch.Tensor
    radius: float
    half_length: float

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """Signed distance to the cylinder surface (negative inside). (P, 3) -> (P,)."""
        local = points - self.center
        radial = local[:, 1:].norm(dim=1) - self.radius
        axial = local[:, 0].abs() - self.half_length
        outside = torch.stack([radial.clamp_min(0), axial.clamp_min(0)], 1).norm(dim=1)
        inside = torch.maximum(radial, axial).clamp_max(0)
        return outside + inside


def mouth_landmarks(head) -> tuple[torch.Tensor, float]:
    """Rest-space mouth centre (3,) and width of the head model's neutral mesh.

    Uses the model's mediapipe landmark correspondence when it has the lip ids, otherwise the
    front-most vertices half bound to the jaw (the lips).
    """
    verts, faces = head.v_template, head.faces
    ids = [int(i) for i in head.landmark_ids.tolist()] if hasattr(head, "landmark_ids") else []
    wanted = [_UPPER_LIP, _LOWER_LIP, *_CORNERS]
    if all(i in ids for i in wanted):
        points = (verts[faces[head.landmark_faces]] * head.landmark_bary[..., None]).sum(dim=1)
        pick = {i: points[ids.index(i)] for i in wanted}
        center = 0.5 * (pick[_UPPER_LIP] + pick[_LOWER_LIP])
        width = float((pick[_CORNERS[0]] - pick[_CORNERS[1]]).norm())
        return center, max(width, 0.02)
    jaw = head.lbs_weights[:, 2]
    lips = (jaw > 0.2) & (jaw < 0.8)
    if int(lips.sum()) < 4:
        lips = jaw > 0.05
    candidates = verts[lips]
    front = candidates[candidates[:, 2] >= torch.quantile(candidates[:, 2], 0.8)]
    center = front.mean(dim=0)
    width = float(front[:, 0].max() - front[:, 0].min())
    return center, min(max(width, 0.02), 0.08)


def teeth_billboards(head, n_points: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Gaussian centres and skinning weights on the upper and lower teeth billboards.

    Args:
        head: a HeadModel (v_template, faces, lbs_weights, landmarks).
        n_points: total mouth Gaussians (half per billboard).

    Returns:
        {"means": (M, 3), "quats": (M, 4) wxyz whose third axis is the billboard's normal,
        "lbs_weights": (M, 5), "upper": (M,) bool, "volume": MouthVolume}.
    """
    center, width = mouth_landmarks(head)
    generator = torch.Generator().manual_seed(seed)
    half = max(n_points // 2, 1)
    depth = 0.25 * width   # teeth sit this far behind the lips
    height = 0.22 * width  # of each row of teeth
    blocks, angles = [], []
    for sign in (1.0, -1.0):  # upper row above the lip line, lower below
        u = torch.rand(half, generator=generator) * 2 - 1  # across the mouth
        v = torch.rand(half, generator=generator)          # up/down within the row
        angle = u * 1.1  # the arc of the dental arch, about +-63 degrees
        radius = 0.45 * width
        x = radius * torch.sin(angle)
        z = radius * (torch.cos(angle) - 1) - depth
        y = sign * (0.1 * height + v * height)
        blocks.append(torch.stack([x, y, z], dim=1) + center.cpu())
        angles.append(angle)
    means = torch.cat(blocks).to(head.v_template.device)
    half_angles = torch.cat(angles).to(means.device) / 2  # the arc's normal: +Z turned about +Y
    zeros = torch.zeros_like(half_angles)
    quats = torch.stack([half_angles.cos(), zeros, half_angles.sin(), zeros], dim=1)
    upper = torch.zeros(len(means), dtype=torch.bool, device=means.device)
    upper[:half] = True
    weights = torch.empty(len(means), head.lbs_weights.shape[1], device=means.device)
    weights[upper] = back_of_head_weights(head)
    weights[~upper] = head.lbs_weights[int(head.lbs_weights[:, 2].argmax())]
    volume = MouthVolume(center=(center + torch.tensor([0.0, 0.0, -depth - 0.2 * width],
                                                       device=center.device)),
                         radius=0.6 * width, half_length=0.6 * width)
    return {"means": means, "quats": quats, "lbs_weights": weights, "upper": upper, "volume": volume}


def back_of_head_weights(head) -> torch.Tensor:
    """Skinning weights of the back-most vertex above the mouth (rigid with the skull)."""
    verts = head.v_template
    above = verts[:, 1] > verts[:, 1].median()
    candidates = torch.where(above, verts[:, 2], torch.full_like(verts[:, 2], float("inf")))
    return head.lbs_weights[int(candidates.argmin())]
