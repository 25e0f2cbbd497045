"""Front-to-back alpha compositing of depth-sorted pairs, per tile, with a hand-written backward.

For a pixel p and the Gaussians of its tile in depth order i = 1..K (3DGS image formation):

    alpha_i = min(0.99, o_i exp(-sigma_i(p)))   (0 where below 1/255; gradient 0 where clamped)
    T_i     = prod_{j<i} (1 - alpha_j)          (transmittance in front of i)
    w_i     = alpha_i T_i, kept while T_i (1 - alpha_i) >= 1e-4 (the early stop)
    out     = sum_i w_i f_i, f_i = (r, g, b, z, 1) -> colour, depth numerator, alpha = 1 - T_final

Because T is non-increasing, "kept" is a prefix: the vectorized mask T_{i+1} >= 1e-4 equals the
sequential early stop. A pair's exponent E = log(o) - sigma is a quadratic in the pixel's offset
(x, y) from the tile centre, E = c . [1, x, y, x^2, xy, y^2], so one matmul with that (6, tile^2)
basis evaluates a whole tile. Pairs are visited ``block`` deep at a time and a tile stops once all
its pixels are done, so only the pairs in front of the early stop are ever touched.

Backward, block by block (blocks the forward stored within a memory budget are reused, the others
recomputed, so memory stays bounded): with v_i = g . f_i,

    dL/dalpha_i = T_i v_i - (sum_{k>i} w_k v_k) / (1 - alpha_i),   dL/dE_i = alpha_i dL/dalpha_i,

then through E's coefficients to each Gaussian's screen mean, conic, log-opacity, colour and depth
(``_splat_gradients``), summed with ``index_add_``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .projection import ALPHA_MIN
from .tiles import Chunk

ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
N_FEATURES = 5  # r, g, b, depth, 1
COMPACT_BELOW = 0.875  # drop finished tiles once fewer than this fraction is unfinished
LOG2E = 1.0 / math.log(2.0)


# Columns of the per-Gaussian "splats" table the compositor reads, one row per (camera, Gaussian).
SPLAT_COLUMNS = ("mean_x", "mean_y", "conic_a", "conic_b", "conic_c", "log_opacity", "red", "green",
                 "blue", "depth")
N_SPLAT = len(SPLAT_COLUMNS)


@dataclass
class Layout:
    """How pairs map onto tiles (non-differentiable).

    Attributes:
        chunks: tile batches from ``tiles.make_chunks``.
        flat_ids: (P,) splat row of each pair, sorted by (tile, depth).
        tile_starts: (n_tiles,) first pair of each tile. tile_counts: (n_tiles,) pairs per tile.
        tile_centres: (n_tiles, 2) pixel coordinates of each tile's centre.
        basis: (6, tile_size^2) [1, x, y, x^2, xy, y^2] of pixel centres relative to the tile centre.
        block: pairs per tile composited per step.
        store_budget: elements of per-pixel state the forward may keep for the backward (two
            tensors per block); 0 when no backward will run. Blocks beyond it are recomputed.
    """

    chunks: list[Chunk]
    flat_ids: torch.Tensor
    tile_starts: torch.Tensor
    tile_counts: torch.Tensor
    tile_centres: torch.Tensor
    basis: torch.Tensor
    block: int = 16
    store_budget: int = 0


def pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(6, tile_size^2) quadratic basis at pixel centres, row-major, relative to the tile centre."""
    offsets = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - 0.5 * tile_size
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y])


@dataclass
class _Block:
    """One depth block of a chunk's active tiles: (na, Kb, ...) state shared by both passes.

    ``carried`` holds the caller's per-tile tensors (na, ...), compacted to the active tiles, so
    the caller updates them in place without indexing.
    """

    carried: dict             # name -> (na, ...) per-tile tensors of the active tiles
    ids: torch.Tensor         # (na, Kb) splat rows, the dummy row where past a tile's end
    splats: torch.Tensor      # (na, Kb, 10) gathered splat rows
    offset: torch.Tensor      # (na, Kb, 2) splat mean minus tile centre
    feats: torch.Tensor       # (na, Kb, 5) r, g, b, depth, 1
    alpha: torch.Tensor       # (na, Kb, px) clamped to 0.99, 0 below 1/255
    kept_after: torch.Tensor  # (na, Kb, px) transmittance behind each pair where kept, else 0
    before: torch.Tensor      # (na, Kb, px) transmittance in front of each pair where kept, else 0
    weights: torch.Tensor     # (na, Kb, px) alpha * before


def _exponent_coefficients(splats: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """E = log o - 0.5 (a dx^2 + 2 b dx dy + c dy^2), dx = x - mx, as coefficients of [1, x, y, x^2, xy, y^2].

    Args:
        splats: (..., 10) rows of the splat table. offset: (..., 2) mean relative to the tile centre.

    Returns:
        (..., 6) coefficients.
    """
    mx, my = offset.unbind(-1)
    a, b, c, log_opacity = splats[..., 2], splats[..., 3], splats[..., 4], splats[..., 5]
    constant = log_opacity - (0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my)
    return torch.stack([constant, a * mx + b * my, c * my + b * mx, -0.5 * a, -b, -0.5 * c], -1)


def _splat_gradients(grad_coefs: torch.Tensor, grad_feats: torch.Tensor, splats: torch.Tensor,
                     offset: torch.Tensor) -> torch.Tensor:
    """Chain rule of ``_exponent_coefficients`` and the features back to splat rows.

    Args:
        grad_coefs: (..., 6) dL/d coefficients. grad_feats: (..., 5) dL/d (r, g, b, depth, 1).
        splats: (..., 10). offset: (..., 2).

    Returns:
        (..., 10) dL/d splat row.
    """
    d0, d1, d2, d3, d4, d5 = grad_coefs.unbind(-1)
    mx, my = offset.unbind(-1)
    a, b, c = splats[..., 2], splats[..., 3], splats[..., 4]
    grad_mx = d1 * a + d2 * b - d0 * (a * mx + b * my)
    grad_my = d1 * b + d2 * c - d0 * (b * mx + c * my)
    grad_a = d1 * mx - 0.5 * (d0 * mx * mx + d3)
    grad_b = d1 * my + d2 * mx - d0 * mx * my - d4
    grad_c = d2 * my - 0.5 * (d0 * my * my + d5)
    return torch.cat([torch.stack([grad_mx, grad_my, grad_a, grad_b, grad_c, d0], -1),
                      grad_feats[..., :4]], -1)


def _depth_blocks(splats: torch.Tensor, layout: Layout, chunk: Chunk, carried: dict, retire=None,
                  memo: dict | None = None):
    """Walk a chunk's tiles front to back, ``layout.block`` pairs at a time, yielding ``_Block``s.

    Tiles leave the walk when their pairs run out or every pixel's transmittance is below 1e-4
    (in batches: a finished tile composites zeros until then); ``retire(chunk_rows, carried)`` then
    receives their carried tensors. Masks are arithmetic (``threshold``, ``sign``): several times
    faster than ``where`` and boolean masks on CPU.

    Args:
        splats: (R + 1, 10) splat table, last row the dummy (alpha 0).
        layout, chunk: the tiling. carried: name -> (nt, ...) per-tile tensors to compact along.
        retire: optional callback for tiles that leave the walk.
        memo: the forward's stored blocks, keyed (id of the chunk, first pair); a block found there
            is not recomputed, one missing is computed and, while ``memo["budget"]`` elements remain,
            stored.
    """
    basis, block = layout.basis, layout.block
    starts, counts = layout.tile_starts[chunk.tiles], layout.tile_counts[chunk.tiles]
    centres = layout.tile_centres[chunk.tiles]
    carried = {"transmittance": splats.new_ones(len(chunk.tiles), basis.shape[1]), **carried}
    rows = torch.arange(len(chunk.tiles), device=splats.device)
    slots = torch.arange(block, device=splats.device)
    dummy = torch.full((1,), splats.shape[0] - 1, dtype=layout.flat_ids.dtype, device=splats.device)
    flat_ids = torch.cat([layout.flat_ids, dummy])
    for first in itertools.count(0, block):  # ends when no tile is left
        keep = (counts > first) & (carried["transmittance"].amax(1) >= TRANSMITTANCE_MIN)
        n_keep = int(keep.sum())
        # Finished tiles stay until an eighth of them can go at once: they only add zeros.
        if n_keep == 0 or n_keep < COMPACT_BELOW * len(keep):
            if retire is not None:
                retire(rows[~keep], {name: value[~keep] for name, value in carried.items()})
            rows, starts, counts, centres = rows[keep], starts[keep], counts[keep], centres[keep]
            carried = {name: value[keep] for name, value in carried.items()}
        if rows.numel() == 0:
            return
        key = (id(chunk), first)
        if memo is not None and key in memo:
            ids, alpha, kept_after, last = memo[key]
            rows_splats = splats[ids]
            offset = rows_splats[..., :2] - centres[:, None, :]
            one_minus = 1.0 - alpha
        else:
            index = torch.where(first + slots < counts[:, None], starts[:, None] + first + slots, -1)
            ids = flat_ids[index]
            rows_splats = splats[ids]
            offset = rows_splats[..., :2] - centres[:, None, :]
            coefs = _exponent_coefficients(rows_splats, offset) * LOG2E
            alpha = F.threshold(torch.exp2(coefs @ basis), ALPHA_MIN, 0.0).clamp_max_(ALPHA_MAX)
            one_minus = 1.0 - alpha
            after = torch.cumprod(one_minus, dim=1).mul_(carried["transmittance"][:, None, :])
            last = after[:, -1].clone()
            kept_after = F.threshold(after, TRANSMITTANCE_MIN, 0.0)
            if memo is not None and memo["budget"] >= 2 * alpha.numel():
                memo["budget"] -= 2 * alpha.numel()
                memo[key] = (ids, alpha, kept_after, last)
        carried["transmittance"].copy_(last)
        before = kept_after / one_minus
        feats = torch.cat([rows_splats[..., 6:], torch.ones_like(rows_splats[..., :1])], -1)
        yield _Block(carried, ids, rows_splats, offset, feats, alpha, kept_after, before, alpha * before)


class CompositeTiles(torch.autograd.Function):
    """(R, 10) splat table -> (n_tiles, 5, px) tile images (r, g, b, depth numerator, alpha)."""

    @staticmethod
    def forward(ctx, splats: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = splats.new_zeros(layout.tile_counts.numel(), N_FEATURES, layout.basis.shape[1])
        padded = _pad(splats)
        memo = {"budget": layout.store_budget} if layout.store_budget > 0 else None
        for chunk in layout.chunks:
            def retire(rows, carried, tiles=chunk.tiles):
                out[tiles[rows]] = carried["image"]

            image = out.new_zeros(len(chunk.tiles), N_FEATURES, layout.basis.shape[1])
            for step in _depth_blocks(padded, layout, chunk, {"image": image}, retire, memo=memo):
                step.carried["image"].baddbmm_(step.feats.transpose(1, 2), step.weights)
        ctx.save_for_backward(splats, out)
        ctx.layout, ctx.memo = layout, memo
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        splats, out = ctx.saved_tensors
        layout: Layout = ctx.layout
        grad_out = grad_out.contiguous()
        padded = _pad(splats)
        grad_splats = torch.zeros_like(padded)
        pixels = layout.basis.shape[1]
        for chunk in layout.chunks:
            grad = grad_out[chunk.tiles]  # (nt, 5, px)
            carried = {"grad": grad, "total": (grad * out[chunk.tiles]).sum(1),  # sum_k w_k v_k
                       "in_front": grad.new_zeros(len(chunk.tiles), pixels)}  # over earlier blocks
            for step in _depth_blocks(padded, layout, chunk, carried, memo=ctx.memo):
                grad_rows, in_front = step.carried["grad"], step.carried["in_front"]
                v = step.feats @ grad_rows  # (na, Kb, px)
                through = torch.cumsum(step.weights * v, dim=1).add_(in_front[:, None, :])
                in_front.copy_(through[:, -1])
                behind = torch.sub(step.carried["total"][:, None, :], through, out=through)
                grad_alpha = (step.before * v).sub_(behind.div_(1.0 - step.alpha))
                # d alpha / d E = alpha where kept, unclamped and above 1/255; else 0.
                live = F.threshold(-step.alpha, -ALPHA_MAX, 0.0).mul_(torch.sign(step.kept_after))
                grad_exponent = grad_alpha.mul_(live).neg_()
                grad_coefs = (grad_exponent.reshape(-1, pixels) @ layout.basis.T).view(*step.ids.shape, 6)
                grad_feats = (grad_rows @ step.weights.transpose(1, 2)).transpose(1, 2)
                grad_rows_splats = _splat_gradients(grad_coefs, grad_feats, step.splats, step.offset)
                grad_splats.index_add_(0, step.ids.reshape(-1), grad_rows_splats.reshape(-1, N_SPLAT))
        ctx.memo = None  # free the stored blocks; a second backward recomputes them
        return grad_splats[:-1], None


def _pad(splats: torch.Tensor) -> torch.Tensor:
    """Append the dummy row that padding slots point at: log-opacity -1e4, so alpha is 0."""
    dummy = splats.new_zeros(1, N_SPLAT)
    dummy[0, 5] = -1e4
    return torch.cat([splats, dummy])
