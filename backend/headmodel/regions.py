"""The head region an avatar learns: the head model above a cut across the neck, below the chin.

The rule: in the rest pose (+Y up), the cut is the plane ``y = y_chin - NECK_CUT_BELOW_CHIN_M``,
where ``y_chin`` is the height of MediaPipe landmark 152 (the lowest point of the chin; the
lowest landmark when the model has no such landmark). Vertices above the plane are the head;
the rest of the neck, the shoulders and the torso are not. Posed, the cut moves with the mesh:
in an image it is the line through the projected cut ring (the vertices next to the plane),
perpendicular to the head's projected down direction.
"""

from __future__ import annotations

import torch

CHIN_LANDMARK = 152            # MediaPipe FaceMesh id of the chin's lowest point
NECK_CUT_BELOW_CHIN_M = 0.03   # the cut lies this far below the chin (metres, rest pose)
RING_HALF_WIDTH_M = 0.004      # vertices this close to the plane make the cut ring


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
