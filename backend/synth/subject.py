"""The synthetic subject: the built-in head with a procedural appearance and a mouth interior.

The appearance is a function of the *rest-space* surface point (skin with soft shading baked
from a head-fixed light, a cap, brows, lips, eyes with iris and pupil, teeth and a dark mouth
cavity), so it follows the surface exactly under expressions, jaw, head and eye motion, and the
ground truth is known everywhere. The head mesh has an open mouth; the subject adds two teeth
rows (upper skinned with the skull, lower with the jaw) and a cavity behind them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry.triangles import vertex_normals
from ..tracking import regions
from ..train.mouth import back_of_head_weights, mouth_landmarks

# Part labels of the vertices.
HEAD, EYE, TEETH, CAVITY = 0, 1, 2, 3


@dataclass
class Subject:
    """Rest-space geometry with part labels and skinning weights (head mesh + mouth interior)."""

    vertices: torch.Tensor      # (V', 3) rest positions (neutral, identity applied)
    faces: torch.Tensor         # (F', 3)
    parts: torch.Tensor         # (V',) int64 part labels
    lbs_weights: torch.Tensor   # (V', J)
    n_head: int                 # the first n_head vertices are the head model's
    n_head_faces: int           # and the first n_head_faces faces (closed: back faces culled)
    mouth_center: torch.Tensor  # (3,)
    mouth_width: float
    eye_centers: torch.Tensor   # (2, 3) rest centres of eye_L, eye_R
    normals: torch.Tensor       # (V', 3) rest normals (for the baked shading)
    outlines: dict              # {name: (M, 3) rest-space contour} of the drawn features (albedo)


def build_subject(head, neutral: torch.Tensor, rest_joints: torch.Tensor) -> Subject:
    """The head mesh plus teeth rows and mouth cavity, in rest space.

    Args:
        head: HeadModel; neutral: (V, 3) neutral vertices of the subject; rest_joints: (5, 3).
    """
    weights = head.lbs_weights.float()
    parts = torch.where(weights[:, 3:].max(dim=1).values > 0.5, EYE, HEAD)
    center, width = mouth_landmarks(_with_vertices(head, neutral))
    blocks = [(neutral, head.faces.long(), parts, weights)]
    upper_w = back_of_head_weights(_with_vertices(head, neutral))
    lower_w = weights[int(weights[:, 2].argmax())]
    n = len(neutral)
    for sign, w in ((1.0, upper_w), (-1.0, lower_w)):
        verts, faces = _teeth_row(center, width, sign)
        blocks.append((verts, faces + n, torch.full((len(verts),), TEETH), w.expand(len(verts), -1)))
        n += len(verts)
    verts, faces, frac = _cavity(center, width)
    cavity_w = frac[:, None] * upper_w + (1 - frac[:, None]) * lower_w
    blocks.append((verts, faces + n, torch.full((len(verts),), CAVITY), cavity_w))
    vertices = torch.cat([b[0] for b in blocks])
    faces = torch.cat([b[1] for b in blocks])
    normals = vertex_normals(vertices, faces)
    return Subject(vertices, faces, torch.cat([b[2] for b in blocks]).long(),
                   torch.cat([b[3] for b in blocks]), len(neutral), len(head.faces), center, width,
                   rest_joints[3:5].clone(), normals, feature_outlines(head, neutral))


# Drawn features follow the landmark contours, so a detector sees lips, brows and the face outline
# where the model's landmark points are (as on a real face, where the landmarks are defined by
# those features). Polygons are in the rest-space x, y plane (the face looks along +z).
OUTLINES = {"lips": regions.LIPS_OUTER_RING, "brow_right": regions.BROW_RIGHT_RING,
            "brow_left": regions.BROW_LEFT_RING, "face": regions.FACE_OVAL_RING}


def feature_outlines(head, neutral: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rest-space contours of the features the appearance draws. {name: (M, 3)}."""
    points = head.landmarks_from(neutral[None])[0]
    index = {int(i): k for k, i in enumerate(head.landmark_ids.tolist())}
    return {name: points[[index[i] for i in ring]] for name, ring in OUTLINES.items()}


def inside(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Even-odd test of points against a closed polygon in x, y. (P, 2+), (M, 2+) -> (P,) bool."""
    x, y = points[:, :1], points[:, 1:2]
    xi, yi = polygon[None, :, 0], polygon[None, :, 1]
    xj, yj = polygon.roll(1, dims=0)[None, :, 0], polygon.roll(1, dims=0)[None, :, 1]
    straddles = (yi > y) != (yj > y)
    crossing = x < (xj - xi) * (y - yi) / torch.where(yj == yi, torch.ones_like(yj), yj - yi) + xi
    return ((straddles & crossing).sum(dim=1) % 2) == 1


class _with_vertices:
    """A view of a head model with other template vertices (the subject's neutral mesh)."""

    def __init__(self, head, vertices):
        self._head, self.v_template = head, vertices

    def __getattr__(self, name):
        return getattr(self._head, name)


def _grid(nu: int, nv: int) -> torch.Tensor:
    """Faces of an nu x nv vertex grid (row-major)."""
    i, j = torch.meshgrid(torch.arange(nu - 1), torch.arange(nv - 1), indexing="ij")
    a = (i * nv + j).reshape(-1)
    return torch.cat([torch.stack([a, a + nv, a + 1], 1), torch.stack([a + 1, a + nv, a + nv + 1], 1)])


def _teeth_row(center: torch.Tensor, width: float, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A curved strip for one row of teeth, matching the trainer's billboards (train/mouth.py)."""
    nu, nv = 17, 4
    u = torch.linspace(-1, 1, nu)[:, None].expand(nu, nv)
    v = torch.linspace(0, 1, nv)[None, :].expand(nu, nv)
    angle = u * 1.1
    radius = 0.45 * width
    x = radius * torch.sin(angle)
    z = radius * (torch.cos(angle) - 1) - 0.25 * width
    y = sign * (0.1 * 0.22 * width + v * 0.22 * width)
    verts = torch.stack([x, y, z], dim=-1).reshape(-1, 3) + center
    faces = _grid(nu, nv)
    if sign < 0:
        faces = faces.flip(1)
    return verts, faces


def _cavity(center: torch.Tensor, width: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A dark wall behind the teeth; returns vertices, faces and the upper-weight fraction."""
    nu, nv = 6, 6
    u = torch.linspace(-0.7, 0.7, nu)[:, None].expand(nu, nv) * width
    v = torch.linspace(0.5, -0.7, nv)[None, :].expand(nu, nv) * width
    z = torch.full_like(u, -0.55 * width)
    verts = torch.stack([u, v, z], dim=-1).reshape(-1, 3) + center
    frac = ((v.reshape(-1) / width + 0.7) / 1.2).clamp(0, 1)
    return verts, _grid(nu, nv), frac


def albedo(points: torch.Tensor, parts: torch.Tensor, subject: Subject) -> torch.Tensor:
    """Procedural colour of rest-space surface points. (P, 3), (P,) -> (P, 3) RGB in [0, 1]."""
    center, width = subject.mouth_center, subject.mouth_width
    rel = points - center
    skin = torch.tensor([0.86, 0.64, 0.52]) + 0.04 * torch.sin(points[:, :1] * 180) * torch.cos(
        points[:, 1:2] * 150)
    color = skin.clone()
    outlines = subject.outlines
    face = outlines["face"]
    # Hair frames the face above the cheekbones; below the jaw line the neck is in shadow.
    front = points[:, 2] > face[:, 2].min() - 0.01
    in_face = inside(points, face) & front
    cheek_y = float(face[:, 1][face[:, 0].abs().argmax()])
    stripes = 0.5 + 0.5 * torch.sin(points[:, 0] * 250 + points[:, 2] * 120)
    hair = ~in_face & (points[:, 1] > cheek_y)
    color[hair] = torch.stack([0.16 + 0.10 * stripes[hair], 0.11 + 0.06 * stripes[hair],
                               0.08 + 0.04 * stripes[hair]], dim=1)
    neck = ~in_face & ~hair
    color[neck] = color[neck] * 0.62
    # Lips (the outer lip contour) and brows (between their upper and lower landmark lines).
    lips = inside(points, outlines["lips"]) & (points[:, 2] > outlines["lips"][:, 2].min() - 0.01)
    color[lips] = torch.tensor([0.72, 0.28, 0.30])
    for name in ("brow_right", "brow_left"):
        brow = inside(points, outlines[name]) & (points[:, 2] > outlines[name][:, 2].min() - 0.01)
        color[brow] = torch.tensor([0.25, 0.16, 0.10])
    color[parts == EYE] = _eye_color(points[parts == EYE], subject.eye_centers)
    color[parts == TEETH] = torch.tensor([0.93, 0.91, 0.84])
    cavity = parts == CAVITY
    tongue = cavity & (rel[:, 1] < -0.25 * width)
    color[cavity] = torch.tensor([0.30, 0.06, 0.08])
    color[tongue] = torch.tensor([0.62, 0.25, 0.28])
    return color.clamp(0, 1)


def _eye_color(points: torch.Tensor, eye_centers: torch.Tensor) -> torch.Tensor:
    """Sclera, a blue-green iris and a pupil around each eyeball's +z axis."""
    distance = torch.cdist(points, eye_centers)
    centre = eye_centers[distance.argmin(dim=1)]
    direction = points - centre
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-9)
    cos = direction[:, 2]
    color = torch.tensor([0.95, 0.94, 0.92]).expand(len(points), 3).clone()
    color[cos > 0.88] = torch.tensor([0.20, 0.45, 0.42])
    color[cos > 0.975] = torch.tensor([0.04, 0.04, 0.05])
    return color


def shading(normals: torch.Tensor) -> torch.Tensor:
    """Baked diffuse shading from a head-fixed key light plus ambient. (P, 3) -> (P, 1)."""
    light = torch.tensor([0.35, 0.45, 0.82])
    light = light / light.norm()
    return 0.45 + 0.55 * (normals @ light).clamp_min(0)[:, None]
