"""The PyTorch rasterizer: projection, SH colours, tile binning, compositing. Runs on any device."""

from __future__ import annotations

import math

import torch

from .composite import N_FEATURES, N_SPLAT, CompositeTiles, Layout, pixel_basis
from .projection import ALPHA_MIN, Projected, project_gaussians
from .sh import sh_to_rgb
from .tiles import TilePairs, cull_pairs, intersect_tiles, make_chunks
from .types import Cameras, Gaussians, RenderOutput

CHUNK_BUDGET = 1 << 20  # (tile, pair, pixel) elements composited at once: 4 MB per fp32 buffer
TILE_SIZE = 8  # default tile side: less wasted work per pair on CPU than 16
DEPTH_BLOCK = 16  # pairs per tile per compositing step
STORE_BUDGET = 1 << 26  # per-pixel elements the forward keeps for the backward: 256 MB in fp32


def render_torch(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, sh_degree: int,
                 tile_size: int | None = None) -> RenderOutput:
    """Render B views of N Gaussians with the torch reference (see ``backend.render.render``).

    Args:
        gaussians: N Gaussians. cameras: B cameras. background: (B, 3).
        sh_degree: SH degree to evaluate (<= the degree of ``gaussians.sh``).
        tile_size: tile side in pixels; None means ``TILE_SIZE``.

    Returns:
        ``RenderOutput`` with (B, H, W, ...) images and the info dict.
    """
    tile_size = tile_size or TILE_SIZE
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
    splats = _splat_table(projected, gaussians.opacities, colors)
    pairs = cull_pairs(pairs, splats.detach()[:, :6].contiguous(), tile_size, math.log(ALPHA_MIN))
    basis = pixel_basis(tile_size, splats.dtype, splats.device)
    store = STORE_BUDGET if torch.is_grad_enabled() and splats.requires_grad else 0
    layout = Layout(make_chunks(pairs, tile_size, DEPTH_BLOCK, CHUNK_BUDGET), pairs.flat_ids,
                    pairs.tile_ids, pairs.tile_starts, pairs.tile_counts,
                    _tile_centres(pairs, tile_size, splats.dtype), basis, DEPTH_BLOCK, store)
    tiles = CompositeTiles.apply(splats, layout)
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


def _splat_table(projected: Projected, opacities: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """(B * N, 10) rows of ``composite.SPLAT_COLUMNS``: what the compositor reads per (camera, Gaussian)."""
    b, n = projected.depths.shape
    log_opacity = torch.log(opacities.clamp_min(1e-30)).expand(b, n)
    table = torch.cat([projected.means2d, projected.conics, log_opacity[..., None], colors,
                       projected.depths[..., None]], -1)
    return table.reshape(b * n, N_SPLAT)


def _tile_centres(pairs: TilePairs, tile_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(n_tiles, 2) pixel coordinates of every tile's centre, all cameras."""
    local = torch.arange(pairs.tile_counts.numel(), device=pairs.tile_counts.device) % (
        pairs.tiles_x * pairs.tiles_y)
    return (torch.stack([local % pairs.tiles_x, local // pairs.tiles_x], -1).to(dtype) + 0.5) * tile_size


def _untile(tiles: torch.Tensor, n_cameras: int, pairs: TilePairs, tile_size: int, width: int,
            height: int) -> torch.Tensor:
    """(B * ty * tx, 5, s * s) tile images -> (B, H, W, 5)."""
    image = tiles.reshape(n_cameras, pairs.tiles_y, pairs.tiles_x, N_FEATURES, tile_size, tile_size)
    image = image.permute(0, 1, 4, 2, 5, 3).reshape(n_cameras, pairs.tiles_y * tile_size,
                                                     pairs.tiles_x * tile_size, N_FEATURES)
    return image[:, :height, :width]
