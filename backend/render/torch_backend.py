"""The PyTorch rasterizer: projection, SH colours, tile binning, compositing. Runs on any device."""

from __future__ import annotations

import math

import torch

from .composite import N_FEATURES, CompositeTiles, Layout, pixel_basis
from .projection import Projected, project_gaussians
from .sh import sh_to_rgb
from .tiles import TilePairs, intersect_tiles, make_chunks
from .types import Cameras, Gaussians, RenderOutput

CHUNK_BUDGET = 1 << 20  # (tile, pair, pixel) elements composited at once: 4 MB per fp32 buffer
LOG2E = 1.0 / math.log(2.0)
DEPTH_BLOCK = 16  # pairs per tile per compositing step


def render_torch(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, sh_degree: int,
                 tile_size: int = 16) -> RenderOutput:
    """Render B views of N Gaussians with the torch reference (see ``backend.render.render``).

    Args:
        gaussians: N Gaussians. cameras: B cameras. background: (B, 3).
        sh_degree: SH degree to evaluate (<= the degree of ``gaussians.sh``).
        tile_size: tile side in pixels.

    Returns:
        ``RenderOutput`` with (B, H, W, ...) images and the info dict.
    """
    width, height = int(cameras.width), int(cameras.height)
    projected = project_gaussians(gaussians.means, gaussians.quats, gaussians.scales,
                                  gaussians.opacities, cameras.viewmats, cameras.Ks, width, height)
    if projected.means2d.requires_grad:
        projected.means2d.retain_grad()
    rotation, translation = cameras.viewmats[:, :3, :3], cameras.viewmats[:, :3, 3]
    centres = -torch.einsum("bji,bj->bi", rotation, translation)
    colors = sh_to_rgb(sh_degree, gaussians.sh, gaussians.means, centres)  # (B, N, 3)
    pairs = intersect_tiles(projected.means2d.detach(), projected.extents, projected.depths.detach(),
                            width, height, tile_size)
    coefs, feats = _pair_inputs(projected, gaussians.opacities, colors, pairs, tile_size)
    basis = pixel_basis(tile_size, coefs.dtype, coefs.device)
    chunks = make_chunks(pairs, tile_size, DEPTH_BLOCK, CHUNK_BUDGET)
    layout = Layout(chunks, pairs.tile_starts, pairs.tile_counts, basis, DEPTH_BLOCK)
    tiles = CompositeTiles.apply(coefs, feats, layout)
    image = _untile(tiles, len(cameras), pairs, tile_size, width, height)
    alpha = image[..., 4:5]
    rgb = image[..., :3] + (1.0 - alpha) * background[:, None, None, :]
    depth = image[..., 3:4] / alpha.clamp_min(1e-10)
    info = {"means2d": projected.means2d, "radii": projected.radii, "depths": projected.depths,
            "conics": projected.conics, "width": width, "height": height, "n_cameras": len(cameras),
            "gaussian_ids": None, "camera_ids": None, "packed": False, "tile_size": tile_size,
            "tiles_per_image": (pairs.tiles_x, pairs.tiles_y), "n_pairs": int(pairs.flat_ids.numel()),
            "backend": "torch"}
    return RenderOutput(rgb, alpha, depth, info)


def _pair_inputs(projected: Projected, opacities: torch.Tensor, colors: torch.Tensor,
                 pairs: TilePairs, tile_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair exponent coefficients (P + 1, 6) and features (P + 1, 5), differentiable.

    The exponent log(o) - 0.5 (a dx^2 + 2 b dx dy + c dy^2), dx = x - mx, written as a polynomial in
    the pixel offset (x, y) from the tile centre, with mx, my the mean relative to that centre, in
    log2 units. Row P is a dummy (alpha 0) that padding slots point at.
    """
    b, n = projected.depths.shape
    # Column-major (10, B * N): gathered rows are contiguous, so the per-pair arithmetic is fast.
    log_opacity = torch.log(opacities.clamp_min(1e-30)).expand(b, n).reshape(1, -1)
    per_gaussian = torch.cat([projected.means2d.reshape(-1, 2).T, projected.conics.reshape(-1, 3).T,
                              projected.depths.reshape(1, -1), colors.reshape(-1, 3).T, log_opacity])
    mx, my, a, b, c, depth, red, green, blue, log_o = per_gaussian[:, pairs.flat_ids].unbind(0)
    tiles_per_image = pairs.tiles_x * pairs.tiles_y
    local_tile = pairs.tile_ids % tiles_per_image
    mx = mx - ((local_tile % pairs.tiles_x).to(mx.dtype) + 0.5) * tile_size
    my = my - ((local_tile // pairs.tiles_x).to(my.dtype) + 0.5) * tile_size
    constant = log_o - (0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my)
    coefs = torch.stack([constant, a * mx + b * my, c * my + b * mx, -0.5 * a, -b, -0.5 * c]) * LOG2E
    dummy = coefs.new_tensor([[-1e4], [0.0], [0.0], [0.0], [0.0], [0.0]])  # alpha 0
    coefs = torch.cat([coefs, dummy], 1).T.contiguous()  # the compositor evaluates exp2
    feats = torch.stack([red, green, blue, depth, torch.ones_like(depth)])
    feats = torch.cat([feats, feats.new_zeros(N_FEATURES, 1)], 1).T.contiguous()
    return coefs, feats


def _untile(tiles: torch.Tensor, n_cameras: int, pairs: TilePairs, tile_size: int, width: int,
            height: int) -> torch.Tensor:
    """(B * ty * tx, 5, s * s) tile images -> (B, H, W, 5)."""
    image = tiles.reshape(n_cameras, pairs.tiles_y, pairs.tiles_x, N_FEATURES, tile_size, tile_size)
    image = image.permute(0, 1, 4, 2, 5, 3).reshape(n_cameras, pairs.tiles_y * tile_size,
                                                     pairs.tiles_x * tile_size, N_FEATURES)
    return image[:, :height, :width]
