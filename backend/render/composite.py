"""Front-to-back alpha compositing of depth-sorted pairs, per tile, with a hand-written backward.

For a pixel p and the Gaussians of its tile in depth order i = 1..K (3DGS image formation):

    alpha_i = min(0.99, o_i exp(-sigma_i(p)))   (0 where below 1/255; gradient 0 where clamped)
    T_i     = prod_{j<i} (1 - alpha_j)          (transmittance in front of i)
    w_i     = alpha_i T_i, kept while T_i (1 - alpha_i) >= 1e-4 (the early stop)
    out     = sum_i w_i f_i, f_i = (r, g, b, z, 1) -> colour, depth numerator, alpha = 1 - T_final

Because T is non-increasing, "kept" is a prefix: the vectorized mask T_{i+1} >= 1e-4 equals the
sequential early stop. Each pair's exponent log(o) - sigma is a quadratic in the pixel's offset from
the tile centre, so one matmul with the (6, tile_size^2) basis [1, x, y, x^2, xy, y^2] evaluates a
whole tile; pair-level coefficients carry the gradients back to means2d, conics and opacities through
ordinary autograd.

Backward (recomputing the forward per chunk, so nothing per-pixel is stored): with v_i = g . f_i,

    dL/dalpha_i = T_i v_i - (sum_{k>i} w_k v_k) / (1 - alpha_i),   dL/dE_i = alpha_i dL/dalpha_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .projection import ALPHA_MIN
from .tiles import Chunk

ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
N_FEATURES = 5  # r, g, b, depth, 1


@dataclass
class Layout:
    """How pairs map onto tiles (non-differentiable).

    Attributes:
        chunks: tile batches from ``tiles.make_chunks``.
        tile_starts: (n_tiles,) first pair of each tile. tile_counts: (n_tiles,) pairs per tile.
        basis: (6, tile_size^2) [1, x, y, x^2, xy, y^2] of pixel centres relative to the tile centre.
        block: pairs per tile composited per step; a tile stops once all its pixels are done.
    """

    chunks: list[Chunk]
    tile_starts: torch.Tensor
    tile_counts: torch.Tensor
    basis: torch.Tensor
    block: int = 32


def pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(6, tile_size^2) quadratic basis at pixel centres, row-major, relative to the tile centre."""
    offsets = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - 0.5 * tile_size
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y])


@dataclass
class _Block:
    """One depth block of the active tiles of a chunk: (na, Kb, px) state shared by both passes."""

    rows: torch.Tensor       # (na,) rows of the chunk that are active
    index: torch.Tensor      # (na, Kb) pair indices, dummy where past a tile's end
    feats: torch.Tensor      # (na, Kb, 5)
    alpha: torch.Tensor      # (na, Kb, px) clamped, thresholded alpha
    live: torch.Tensor       # (na, Kb, px) alpha depends on the exponent (kept, not clamped, >= 1/255)
    before: torch.Tensor     # (na, Kb, px) transmittance in front of each pair
    weights: torch.Tensor    # (na, Kb, px) alpha * before where kept, else 0


def _depth_blocks(coefs: torch.Tensor, feats: torch.Tensor, layout: Layout, chunk: Chunk):
    """Walk a chunk's tiles front to back, ``layout.block`` pairs at a time, yielding ``_Block``s.

    Tiles leave the walk when their pairs run out or every pixel's transmittance is below 1e-4.
    """
    basis, block = layout.basis, layout.block
    starts, counts = layout.tile_starts[chunk.tiles], layout.tile_counts[chunk.tiles]
    transmittance = coefs.new_ones(len(chunk.tiles), basis.shape[1])
    rows = torch.arange(len(chunk.tiles), device=coefs.device)
    slots = torch.arange(block, device=coefs.device)
    zero = coefs.new_zeros(())
    dummy = coefs.shape[0] - 1
    for first in range(0, int(counts.max()), block):
        rows = rows[(counts[rows] > first) & (transmittance[rows].amax(1) >= TRANSMITTANCE_MIN)]
        if rows.numel() == 0:
            break
        index = starts[rows, None] + first + slots
        index = torch.where(first + slots < counts[rows, None], index, dummy)
        gaussian = torch.exp(coefs[index] @ basis)
        alpha = torch.where(gaussian >= ALPHA_MIN, gaussian.clamp_max(ALPHA_MAX), zero)
        one_minus = 1.0 - alpha
        after = torch.cumprod(one_minus, dim=1) * transmittance[rows, None, :]
        kept = after >= TRANSMITTANCE_MIN
        before = after / one_minus
        weights = torch.where(kept, alpha * before, zero)
        live = kept & (gaussian >= ALPHA_MIN) & (gaussian <= ALPHA_MAX)
        transmittance[rows] = after[:, -1]
        yield _Block(rows, index, feats[index], alpha, live, before, weights)


class CompositeTiles(torch.autograd.Function):
    """(P, 6) pair coefficients and (P, 5) pair features -> (n_tiles, px, 5) tile images."""

    @staticmethod
    def forward(ctx, coefs: torch.Tensor, feats: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = coefs.new_zeros(layout.tile_counts.numel(), layout.basis.shape[1], N_FEATURES)
        coefs_padded, feats_padded = _pad(coefs, feats)
        for chunk in layout.chunks:
            accumulated = out.new_zeros(len(chunk.tiles), layout.basis.shape[1], N_FEATURES)
            for step in _depth_blocks(coefs_padded, feats_padded, layout, chunk):
                accumulated[step.rows] += step.weights.transpose(1, 2) @ step.feats
            out[chunk.tiles] = accumulated
        ctx.save_for_backward(coefs, feats, out)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        coefs, feats, out = ctx.saved_tensors
        layout: Layout = ctx.layout
        coefs_padded, feats_padded = _pad(coefs, feats)
        grad_coefs = torch.zeros_like(coefs_padded)
        grad_feats = torch.zeros_like(feats_padded)
        zero = coefs.new_zeros(())
        for chunk in layout.chunks:
            grad = grad_out[chunk.tiles]  # (nt, px, 5)
            total = (grad * out[chunk.tiles]).sum(-1)  # sum_k w_k v_k per pixel
            in_front = torch.zeros_like(total)  # running sum of w_k v_k over earlier blocks
            for step in _depth_blocks(coefs_padded, feats_padded, layout, chunk):
                grad_rows = grad[step.rows]
                v = step.feats @ grad_rows.transpose(1, 2)  # (na, Kb, px)
                through = torch.cumsum(step.weights * v, dim=1) + in_front[step.rows, None, :]
                behind = total[step.rows, None, :] - through
                grad_alpha = step.before * v - behind / (1.0 - step.alpha)
                grad_exponent = torch.where(step.live, grad_alpha * step.alpha, zero)
                index = step.index.reshape(-1)
                grad_coefs[index] = (grad_exponent @ layout.basis.T).reshape(-1, 6)
                grad_feats[index] = (step.weights @ grad_rows).reshape(-1, N_FEATURES)
                in_front[step.rows] = through[:, -1]
        return grad_coefs[:-1], grad_feats[:-1], None


def _pad(coefs: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the dummy pair that padding slots point at: alpha 0, features 0."""
    dummy = coefs.new_zeros(1, 6)
    dummy[0, 0] = -1e4
    return torch.cat([coefs, dummy]), torch.cat([feats, feats.new_zeros(1, N_FEATURES)])
