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

where alpha_i is live (not clamped, not cut, pair kept); the forward prepares -w_i and
-alpha_i / (1 - alpha_i) where live, 0 elsewhere, so dL/dE is a few in-place passes. Each visited
pair's dL/d (coefficients, features) is kept, and once all blocks are done it is chained through
E's coefficients to each Gaussian's screen mean, conic, log-opacity, colour and depth
(``_splat_gradients``, one vectorized pass) and summed with ``index_add_``.
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
SCAN_LOOP_MIN = 128  # tiles in a block from which ``_scan`` loops over depth slices
TINY = 1e-30  # added to a transmittance that is either 0 or >= 1e-4: changes no kept value


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
        pair_tiles: (P,) tile of each pair.
        tile_starts: (n_tiles,) first pair of each tile. tile_counts: (n_tiles,) pairs per tile.
        tile_centres: (n_tiles, 2) pixel coordinates of each tile's centre.
        basis: (6, tile_size^2) [1, x, y, x^2, xy, y^2] of pixel centres relative to the tile centre.
        block: pairs per tile composited per step.
        store_budget: elements of per-pixel state the forward may keep for the backward (three
            tensors per block); 0 when no backward will run. Blocks beyond it are recomputed.
    """

    chunks: list[Chunk]
    flat_ids: torch.Tensor
    pair_tiles: torch.Tensor
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

    carried: dict                        # name -> (na, ...) per-tile tensors of the active tiles
    pairs: torch.Tensor                  # (na, Kb) pair index, -1 (the dummy) past a tile's end
    feats: torch.Tensor                  # (na, Kb, 5) r, g, b, depth, 1
    weights: torch.Tensor                # (na, Kb, px) alpha T where kept, else 0
    live_weights: torch.Tensor | None    # (na, Kb, px) -weights where alpha < 0.99, else 0
    live_ratio: torch.Tensor | None      # (na, Kb, px) -alpha / (1 - alpha) there and kept, else 0


def _exponent_coefficients(splats: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """E = log o - 0.5 (a dx^2 + 2 b dx dy + c dy^2), dx = x - mx, as coefficients of [1, x, y, x^2, xy, y^2].

    Args:
        splats: (..., 10+) rows of the splat table. offset: (..., 2) mean relative to the tile centre.

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
        splats: (..., 10+). offset: (..., 2).

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


def _alphas_and_weights(coefs: torch.Tensor, basis: torch.Tensor, transmittance: torch.Tensor,
                        factors: bool):
    """Composite one block: alphas, transmittances and weights, with few full-size passes.

    Masks are arithmetic (``threshold`` in place): several times faster than ``where`` and boolean
    masks on CPU; every (na, Kb, px) op but one reuses a buffer.

    Args:
        coefs: (na, Kb, 6) exponent coefficients in log2 units. basis: (6, px).
        transmittance: (na, px) in front of the block. factors: also return the backward's factors.

    Returns:
        weights (na, Kb, px); transmittance behind the block (na, px) (not masked by the early
        stop); live_weights and live_ratio (see ``_Block``) or None, None.
    """
    alpha = torch.matmul(coefs, basis).exp2_().clamp_max_(ALPHA_MAX)
    F.threshold(alpha, ALPHA_MIN, 0.0, inplace=True)
    one_minus = torch.rsub(alpha, 1.0)
    kept_after = _scan(one_minus, transmittance, torch.mul)
    last = kept_after[:, -1].clone()
    F.threshold(kept_after, TRANSMITTANCE_MIN, 0.0, inplace=True)  # the early stop
    before = torch.div(kept_after, one_minus, out=one_minus)
    if not factors:
        return alpha.mul_(before), last, None, None
    weights = alpha * before
    # -alpha where unclamped (d alpha / d E = alpha there, 0 where clamped or below 1/255) ...
    live_weights = F.threshold(alpha.neg_(), -ALPHA_MAX, 0.0, inplace=True).mul_(before)
    # ... and -alpha / (1 - alpha) = -live weight / T behind; 0 where not kept (T behind = 0).
    live_ratio = torch.div(live_weights, kept_after.add_(TINY), out=before)
    return weights, last, live_weights, live_ratio


def _scan(values: torch.Tensor, start: torch.Tensor, op) -> torch.Tensor:
    """Inclusive scan along dim 1 seeded with ``start``: op(start, cumulative op of values).

    Args:
        values: (na, Kb, px). start: (na, px). op: ``torch.mul`` (cumprod) or ``torch.add`` (cumsum).

    Returns:
        (na, Kb, px) new tensor. Wide blocks loop over the Kb slices (each streams two (na, px)
        rows, ~1.6x faster than ``cumprod``/``cumsum`` along a middle dimension on CPU, and the seed
        costs no extra pass); narrow ones use the builtin, whose per-call overhead is lower.
    """
    if values.shape[0] < SCAN_LOOP_MIN:
        scanned = torch.cumprod(values, 1) if op is torch.mul else torch.cumsum(values, 1)
        return op(scanned, start[:, None, :], out=scanned)
    scanned = torch.empty_like(values)
    op(start, values[:, 0], out=scanned[:, 0])
    for k in range(1, values.shape[1]):
        op(scanned[:, k - 1], values[:, k], out=scanned[:, k])
    return scanned


def _depth_blocks(splats: torch.Tensor, layout: Layout, chunk: Chunk, carried: dict, retire=None,
                  memo: dict | None = None, factors: bool = False):
    """Walk a chunk's tiles front to back, ``layout.block`` pairs at a time, yielding ``_Block``s.

    Tiles leave the walk when their pairs run out or every pixel's transmittance is below 1e-4
    (in batches: a finished tile composites zeros until then); ``retire(chunk_rows, carried)`` then
    receives their carried tensors.

    Args:
        splats: (R + 1, 11) padded splat table (``_pad``), last row the dummy (alpha 0).
        layout, chunk: the tiling. carried: name -> (nt, ...) per-tile tensors to compact along.
        retire: optional callback for tiles that leave the walk.
        memo: the forward's stored blocks, keyed (id of the chunk, first pair); a block found there
            is not recomputed, one missing is computed and, while ``memo["budget"]`` elements remain,
            stored.
        factors: compute the backward's factors (always when ``memo`` is given).
    """
    basis, block, dummy = layout.basis, layout.block, layout.flat_ids.numel()
    starts, counts = layout.tile_starts[chunk.tiles], layout.tile_counts[chunk.tiles]
    centres = layout.tile_centres[chunk.tiles]
    carried = {"transmittance": splats.new_ones(len(chunk.tiles), basis.shape[1]), **carried}
    rows = torch.arange(len(chunk.tiles), device=splats.device)
    slots = torch.arange(block, device=splats.device)
    flat_ids = torch.cat([layout.flat_ids, layout.flat_ids.new_full((1,), splats.shape[0] - 1)])
    factors = factors or memo is not None
    for first in itertools.count(0, block):  # ends when no tile is left
        keep = (counts > first) & (carried["transmittance"].amax(1) >= TRANSMITTANCE_MIN)
        n_keep = int(keep.sum())
        # Finished tiles stay until an eighth of them can go at once: they only add zeros.
        if n_keep == 0 or n_keep < COMPACT_BELOW * len(keep):
            kept, gone = torch.nonzero(keep).flatten(), torch.nonzero(~keep).flatten()
            if retire is not None:
                retire(rows[gone], {name: value[gone] for name, value in carried.items()})
            rows, starts, counts, centres = rows[kept], starts[kept], counts[kept], centres[kept]
            carried = {name: value[kept] for name, value in carried.items()}
        if rows.numel() == 0:
            return
        key = (id(chunk), first)
        stored = memo.get(key) if memo is not None else None
        if stored is None:
            pairs = torch.where(first + slots < counts[:, None], starts[:, None] + first + slots, dummy)
        else:
            pairs, weights, live_weights, live_ratio, last = stored
        gathered = splats.index_select(0, flat_ids[pairs.flatten()]).view(*pairs.shape, splats.shape[1])
        if stored is None:
            coefs = _exponent_coefficients(gathered, gathered[..., :2] - centres[:, None, :])
            weights, last, live_weights, live_ratio = _alphas_and_weights(
                coefs.mul_(LOG2E), basis, carried["transmittance"], factors)
            if memo is not None and memo["budget"] >= 3 * weights.numel():
                memo["budget"] -= 3 * weights.numel()
                memo[key] = (pairs, weights, live_weights, live_ratio, last)
        carried["transmittance"].copy_(last)
        yield _Block(carried, pairs, gathered[..., 6:], weights, live_weights, live_ratio)


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
        pixels = layout.basis.shape[1]
        minus_basis_t = -layout.basis.T
        visited, grads = [], []  # per visited pair slot: dL/d (6 coefficients, 5 features)
        for chunk in layout.chunks:
            grad = grad_out[chunk.tiles]  # (nt, 5, px)
            carried = {"grad": grad, "total": (grad * out[chunk.tiles]).sum(1),  # sum_k w_k v_k
                       "in_front": grad.new_zeros(len(chunk.tiles), pixels)}  # over earlier blocks
            for step in _depth_blocks(padded, layout, chunk, carried, memo=ctx.memo, factors=True):
                grad_rows, in_front = step.carried["grad"], step.carried["in_front"]
                v = torch.bmm(step.feats, grad_rows)  # (na, Kb, px) g . f_i
                through = _scan(step.weights * v, in_front, torch.add)
                in_front.copy_(through[:, -1])
                behind = torch.sub(step.carried["total"][:, None, :], through, out=through)
                # -dL/dE = -(live alpha) (T v - behind / (1 - alpha)) = live_weights v - live_ratio behind
                minus_grad_exponent = v.mul_(step.live_weights).sub_(behind.mul_(step.live_ratio))
                visited.append(step.pairs.flatten())
                grads.append(torch.cat([minus_grad_exponent.view(-1, pixels) @ minus_basis_t,
                                        torch.bmm(grad_rows, step.weights.transpose(1, 2))
                                        .transpose(1, 2).reshape(-1, N_FEATURES)], 1))
        ctx.memo = None  # free the stored blocks; a second backward recomputes them
        return _pair_gradients_to_splats(visited, grads, splats, layout), None


def _pad(splats: torch.Tensor) -> torch.Tensor:
    """(R, 10) -> (R + 1, 11): a column of ones (the alpha feature, so the features r, g, b, depth, 1
    are a view) and the dummy row that padding slots point at: log-opacity -1e4, so alpha is 0."""
    padded = splats.new_ones(splats.shape[0] + 1, N_SPLAT + 1)
    padded[:-1, :N_SPLAT] = splats
    padded[-1, :N_SPLAT] = 0.0
    padded[-1, 5] = -1e4
    return padded


def _pair_gradients_to_splats(visited: list[torch.Tensor], grads: list[torch.Tensor], splats: torch.Tensor,
                              layout: Layout, slice_size: int = 1 << 20) -> torch.Tensor:
    """Chain dL/d (coefficients, features) of the visited pairs back to the splat table, at once.

    Args:
        visited: per block, (na * Kb,) pair indices (P where a padding slot).
        grads: per block, (na * Kb, 11) dL/d (6 exponent coefficients, r, g, b, depth, 1).
        splats: (R, 10). layout: the tiling.
        slice_size: pairs chained per step, to bound the temporaries.

    Returns:
        (R, 10) dL/d splat table.
    """
    grad_splats = torch.zeros_like(splats)
    if not visited:
        return grad_splats
    pairs, grads = torch.cat(visited), torch.cat(grads)
    real = torch.nonzero(pairs < layout.flat_ids.numel()).flatten()
    pairs, grads = pairs[real], grads[real]
    for first in range(0, pairs.numel(), slice_size):
        part = pairs[first:first + slice_size]
        ids = layout.flat_ids[part]
        rows = splats.index_select(0, ids)
        offset = rows[:, :2] - layout.tile_centres.index_select(0, layout.pair_tiles[part])
        grad = grads[first:first + slice_size]
        grad_splats.index_add_(0, ids, _splat_gradients(grad[:, :6], grad[:, 6:], rows, offset))
    return grad_splats
