"""A prior for the views the video never shows: the head model's silhouette must be opaque.

A webcam clip sees the face from the front and the cheeks at grazing angles only. Photometric
losses then leave the cheeks as stacks of faint Gaussians that add up to an opaque surface along
a grazing ray and are see-through from the side: at 45 deg of yaw a turntable looks through the
near cheek at the inside of the far one. Every ``every`` steps the trainer renders the step's
frame once more from a camera swung about the head's vertical axis by a random yaw
(``min_yaw``..``max_yaw`` degrees, either side) and asks the alpha inside the posed head
model's silhouette above the neck cut (headmodel/regions.py, eroded by a pixel) to be 1, and
the alpha farther than ``margin`` metres from the whole head model's silhouette to be 0:

    L_novel = mean over the head silhouette of (1 - alpha) + mean over the far pixels of alpha

(the render covers only a box around the head model; far pixels outside it count as clear, with
alpha 0, in the mean).

Between the two (hair and ears reach past the head model; the neck below the cut) nothing is
asked, and no colour is asked anywhere. Without the second term the first is met by Gaussians
that grow into long smears across the view.
"""

from __future__ import annotations

import math

import torch


def swung_viewmat(viewmat: torch.Tensor, pivot: torch.Tensor, yaw: float) -> torch.Tensor:
    """The world-to-camera matrix (4, 4) of a camera swung by ``yaw`` radians about the vertical
    image axis through ``pivot`` (3, world): the same camera circling the head."""
    pivot_cam = viewmat[:3, :3] @ pivot + viewmat[:3, 3]
    cos, sin = math.cos(yaw), math.sin(yaw)
    turn = torch.eye(4, dtype=viewmat.dtype, device=viewmat.device)
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = cos, sin, -sin, cos
    turn[:3, 3] = pivot_cam - turn[:3, :3] @ pivot_cam
    return turn @ viewmat


def _grow(region: torch.Tensor, pixels: int) -> torch.Tensor:
    """(H, W) bool ``region`` grown by ``pixels`` (shrunk where negative), square neighbourhoods."""
    if not pixels:
        return region
    sign, radius = (1.0 if pixels > 0 else -1.0), abs(pixels)
    grown = sign * torch.nn.functional.max_pool2d(sign * region.float()[None, None], 2 * radius + 1,
                                                  stride=1, padding=radius)[0, 0]
    return grown > 0.5


def prior_regions(vertices: torch.Tensor, faces: torch.Tensor, head: torch.Tensor,
                  viewmat: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int,
                  margin_px: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """Where the prior asks for what, from one rasterization of the head model.

    Args:
        vertices: (V, 3) the posed head model (world). faces: (F, 3). head: (F,) bool, the
            faces above the neck cut. viewmat, intrinsics: the camera; width, height: its image.
        margin_px: how far past the whole model's silhouette alpha is left free.

    Returns:
        (opaque, clear, box): (H, W) bool maps of the head silhouette shrunk by a pixel and of
        the pixels farther than ``margin_px`` from the model's silhouette, and the pixel box
        (x0, y0, x1, y1) that holds the free band with a few clear pixels around it (the
        render need not cover more).
    """
    from ..geometry.raster import project, rasterize

    screen = project(vertices.cpu(), viewmat.cpu(), intrinsics.cpu())
    face, _ = rasterize(screen, faces.cpu(), width, height,
                        cull=torch.ones(len(faces), dtype=torch.bool))
    seen = face >= 0
    opaque = _grow(seen & head.cpu()[face.clamp_min(0)], -1)
    allowed = _grow(seen, margin_px)
    box = (0, 0, width, height)
    if bool(allowed.any()):
        ys, xs = allowed.nonzero(as_tuple=True)
        pad = 4
        box = (max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0),
               min(int(xs.max()) + 1 + pad, width), min(int(ys.max()) + 1 + pad, height))
    device = vertices.device
    return opaque.to(device), (~allowed).to(device), box


def random_yaw(generator: torch.Generator, min_degrees: float, max_degrees: float) -> float:
    """A yaw in radians, uniform in [min, max] degrees, on either side with equal chance."""
    u = torch.rand(2, generator=generator)
    degrees = min_degrees + float(u[0]) * (max_degrees - min_degrees)
    return math.radians(degrees if float(u[1]) < 0.5 else -degrees)


def coverage_loss(alpha: torch.Tensor, opaque: torch.Tensor, clear: torch.Tensor,
                  n_clear: int | None = None) -> torch.Tensor:
    """Mean (1 - alpha) over the ``opaque`` pixels plus alpha summed over the ``clear`` ones and
    divided by ``n_clear`` (default: their count; a render cropped to a box passes the count of
    the whole image's, so the crop does not make the term stronger). A mean over no pixels
    counts 0. alpha, opaque, clear: (H, W)."""
    loss = alpha.new_zeros(())
    if bool(opaque.any()):
        loss = loss + (1 - alpha[opaque]).mean()
    count = int(clear.sum()) if n_clear is None else n_clear
    if count > 0 and bool(clear.any()):
        loss = loss + alpha[clear].sum() / count
    return loss
