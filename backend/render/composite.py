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
    """How pairs map onto tiles: the chunks and the pixel basis (non-differentiable).

    Attributes:
        chunks: tile batches from ``tiles.make_chunks``.
        n_tiles: tiles over all cameras.
        basis: (6, tile_size^2) [1, x, y, x^2, xy, y^2] of pixel centres relative to the tile centre.
    """

    chunks: list[Chunk]
    n_tiles: int
    basis: torch.Tensor


def pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(6, tile_size^2) quadratic basis at pixel centres, row-major, relative to the tile centre."""
    offsets = torch.arange(tile_size, dtype=dtype, device=device) + 0.5 - 0.5 * tile_size
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y])


def _chunk_weights(coefs: torch.Tensor, basis: torch.Tensor):
    """Blend weights of one chunk and what the backward needs.

    Args:
        coefs: (nt, K, 6) exponent coefficients. basis: (6, px).

    Returns:
        weights (nt, K, px), alpha, gaussian (unclamped o exp(-sigma)), T before, kept mask.
    """
    gaussian = torch.exp(coefs @ basis)
    alpha = gaussian.clamp_max(ALPHA_MAX)
    alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros((), dtype=alpha.dtype, device=alpha.device))
    one_minus = 1.0 - alpha
    after = torch.cumprod(one_minus, dim=1)
    kept = after >= TRANSMITTANCE_MIN
    before = after / one_minus
    weights = torch.where(kept, alpha * before, torch.zeros((), dtype=alpha.dtype, device=alpha.device))
    return weights, alpha, gaussian, before, kept


class CompositeTiles(torch.autograd.Function):
    """(P, 6) pair coefficients and (P, 5) pair features -> (n_tiles, px, 5) tile images."""

    @staticmethod
    def forward(ctx, coefs: torch.Tensor, feats: torch.Tensor, layout: Layout) -> torch.Tensor:
        pixels = layout.basis.shape[1]
        out = coefs.new_zeros(layout.n_tiles, pixels, N_FEATURES)
        coefs_padded, feats_padded = _pad(coefs, feats)
        for chunk in layout.chunks:
            weights = _chunk_weights(coefs_padded[chunk.pair_index], layout.basis)[0]
            out[chunk.tiles] = weights.transpose(1, 2) @ feats_padded[chunk.pair_index]
        ctx.save_for_backward(coefs, feats)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        coefs, feats = ctx.saved_tensors
        layout: Layout = ctx.layout
        coefs_padded, feats_padded = _pad(coefs, feats)
        grad_coefs = torch.zeros_like(coefs_padded)
        grad_feats = torch.zeros_like(feats_padded)
        zero = torch.zeros((), dtype=coefs.dtype, device=coefs.device)
        for chunk in layout.chunks:
            chunk_feats = feats_padded[chunk.pair_index]
            weights, alpha, gaussian, before, kept = _chunk_weights(coefs_padded[chunk.pair_index],
                                                                    layout.basis)
            grad = grad_out[chunk.tiles]  # (nt, px, 5)
            v = chunk_feats @ grad.transpose(1, 2)  # (nt, K, px)
            wv = weights * v
            behind = wv.sum(1, keepdim=True) - torch.cumsum(wv, dim=1)
            grad_alpha = before * v - behind / (1.0 - alpha)
            live = kept & (gaussian >= ALPHA_MIN) & (gaussian <= ALPHA_MAX)
            grad_exponent = torch.where(live, grad_alpha * alpha, zero)
            index = chunk.pair_index.reshape(-1)
            grad_coefs[index] = (grad_exponent @ layout.basis.T).reshape(-1, 6)
            grad_feats[index] = (weights @ grad).reshape(-1, N_FEATURES)
        return grad_coefs[:-1], grad_feats[:-1], None


def _pad(coefs: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the dummy pair that padding slots point at: alpha 0, features 0."""
    dummy = coefs.new_zeros(1, 6)
    dummy[0, 0] = -1e4
    return torch.cat([coefs, dummy]), torch.cat([feats, feats.new_zeros(1, N_FEATURES)])
