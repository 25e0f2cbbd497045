"""The head region an avatar learns: the head model above a cut across the neck, below the chin.

The rule: in the rest pose (+Y up), the cut is the plane ``y = y_chin - NECK_CUT_BELOW_CHIN_M``,
where ``y_chin`` is the height of MediaPipe landmark 152 (the lowest point of the chin; the
lowest landmark when the model has no such landmark). Vertices above the plane are the head;
the rest of the neck, the shoulders and the torso are not. Posed, the cut moves with the mesh:
in an image it is the line through the projected cut ring (the vertices next to the plane),
perpendicular to the head's projected down direction. Beside the neck the shoulders can rise
above that line (a camera below the head, raised shoulders): below a line a third of the way from
the chin to the cut, whatever lies farther from the neck's axis than 1.5 times the projected
neck's half-width is shoulder, not head.
"""

from __future__ import annotations

import torch

CHIN_LANDMARK = 152            # MediaPipe FaceMesh id of the chin's lowest point
NECK_CUT_BELOW_CHIN_M = 0.03   # the cut lies this far below the chin (metres, rest pose)
RING_HALF_WIDTH_M = 0.004      # vertices this close to the plane make the cut ring
SHOULDER_CLEARANCE = 1.5       # x the neck's projected half-width: farther from the neck's axis,
#                                and lower than a third of the way from the chin to the cut, is
#                                shoulder (torso), whatever side of the cut line it lies on


def cut_height(model, rest_vertices: torch.Tensor) -> float:
    """The rest-pose height (y, metres) of the neck cut for ``rest_vertices`` (V, 3)."""
    landmarks = model.landmarks_from(rest_vertices[None])[0]
    ids = model.landmark_ids
    chin = (ids == CHIN_LANDMARK).nonzero()
    y_chin = landmarks[chin[0, 0], 1] if len(chin) else landmarks[:, 1].min()
    return float(y_chin) - NECK_CUT_BELOW_CHIN_M


def head_vertices(model, rest_vertices: torch.Tensor) -> torch.Tensor:
    """(V,) bool: the vertices above the neck cut."""
    return rest_vertices[:, 1] > cut_height(model, rest_vertices)


def head_faces(model, rest_vertices: torch.Tensor) -> torch.Tensor:
    """(F,) bool: the triangles whose three corners lie above the neck cut."""
    return head_vertices(model, rest_vertices)[model.faces].all(dim=1)


def cut_ring(model, rest_vertices: torch.Tensor) -> torch.Tensor:
    """(R,) int64 indices of the vertices within RING_HALF_WIDTH_M of the cut plane."""
    distance = (rest_vertices[:, 1] - cut_height(model, rest_vertices)).abs()
    ring = (distance < RING_HALF_WIDTH_M).nonzero()[:, 0]
    if len(ring) < 3:  # a coarse mesh: the closest vertices to the plane
        ring = distance.argsort()[:16]
    return ring


def image_cut_lines(ring_pixels: torch.Tensor, up_pixels: torch.Tensor) -> torch.Tensor:
    """The cut in each image as a line ``n . p = d`` with ``n`` pointing down the head.

    Args:
        ring_pixels: (T, R, 2) the cut ring projected into each frame (pixels).
        up_pixels: (T, 2) the head's up direction projected into each frame (any length).

    Returns:
        (T, 3): n_x, n_y, d; a pixel p is below the cut (torso side) where n . p > d.
    """
    down = -up_pixels / up_pixels.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    centre = ring_pixels.mean(dim=1)
    return torch.cat([down, (down * centre).sum(dim=-1, keepdim=True)], dim=-1)


def chin_vertex(model, rest_vertices: torch.Tensor) -> int:
    """Index of the vertex closest to the chin landmark (the lowest landmark if there is none)."""
    landmarks = model.landmarks_from(rest_vertices[None])[0]
    chin = (model.landmark_ids == CHIN_LANDMARK).nonzero()
    point = landmarks[chin[0, 0]] if len(chin) else landmarks[landmarks[:, 1].argmin()]
    return int((rest_vertices - point).norm(dim=1).argmin())


def image_shoulder_zones(ring_pixels: torch.Tensor, chin_pixels: torch.Tensor,
                         lines: torch.Tensor) -> torch.Tensor:
    """Where the shoulders begin in each image, beside the neck.

    Args:
        ring_pixels: (T, R, 2) the cut ring projected into each frame (pixels).
        chin_pixels: (T, 2) the chin vertex projected.
        lines: (T, 3) the cut lines (``image_cut_lines``).

    Returns:
        (T, 3): centre, reach, start. With ``down = (n_x, n_y)`` of the line and ``side =
        (-n_y, n_x)``, a pixel p is shoulder where ``down . p > start`` and
        ``|side . p - centre| > reach``.
    """
    down = lines[:, :2]
    side = torch.stack([-down[:, 1], down[:, 0]], dim=-1)
    across = (ring_pixels * side[:, None]).sum(dim=-1)  # (T, R)
    high, low = across.max(dim=1).values, across.min(dim=1).values
    chin = (chin_pixels * down).sum(dim=-1)
    start = chin + (lines[:, 2] - chin) / 3
    return torch.stack([(high + low) / 2, SHOULDER_CLEARANCE * (high - low) / 2, start], dim=-1)
