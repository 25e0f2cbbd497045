"""Fast runtime animation of an avatar file: blend (Eq. 1) as one matrix product, then LBS.

Every blended per-Gaussian property is stored channel-major: 14 channels (3 position,
3 log-scale, 4 rotation, 1 opacity, 3 colour), one row of N values each, so blending K
blendshapes is one (K,) x (K, 14 * A) product over the A Gaussians that move in some blendshape
and skinning is a handful of whole-row multiply-adds. ``frame`` returns (N, width) views of
that channel-major array.

Two blending modes:

* exact (default): float32 deltas, float32 product.
* ``quantize="int8"``: weight-only int8 deltas with one symmetric scale per row (a channel of a
  Gaussian) over the K blendshapes, blended by ``torch._weight_int8pack_mm`` (bf16 activations
  and output, CPU only). The positions stay an exact float32 product (``"int8-all"`` quantizes
  them too). The offsets are added to float32 neutral values, so a Gaussian's error is bounded
  by its own scale (``offset_error_bound``), not by the neutral value. docs/BENCHMARKS.md gives
  the measured errors.

This is what ``bench animate`` measures. ``render`` does not use it: it evaluates view-dependent
SH of every band with the trainer's model, and the rasterizer dominates its frame time.
"""

from __future__ import annotations

import warnings

import torch

from ..geometry.rotations import matrix_to_quat, quat_multiply

# Blended property -> number of channels, in channel order.
LAYOUT = (("means", 3), ("log_scales", 3), ("quats", 4), ("opacity_logits", 1), ("sh_dc", 3))
CHANNELS = sum(width for _, width in LAYOUT)
SLICES = {name: slice(start - width, start) for (name, width), start in
          zip(LAYOUT, torch.tensor([width for _, width in LAYOUT]).cumsum(0).tolist())}
QUANTIZE_MODES = (None, "int8", "int8-all")
# Blend only the moving Gaussians (and scatter them back) when they are fewer than this share;
# above it the scatter costs about what the skipped zero columns save (K = 50, 70k Gaussians).
SPARSE_BELOW = 0.75
BF16_UNIT_ROUNDOFF = 2.0 ** -8  # relative rounding error of bfloat16 (8 significant bits)


class Animator:
    """Packed avatar for per-frame blending and skinning.

    Args:
        base: neutral properties {name: (N, width)} for the names of LAYOUT.
        deltas: blendshape deltas {name: (K, N, width)}; zero rows mark Gaussians that never
            move (they are skinned only).
        lbs_weights: (N, J), rows summing to 1.
        quantize: None (exact float32), "int8" (all but the positions) or "int8-all".
    """

    def __init__(self, base: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor],
                 lbs_weights: torch.Tensor, quantize: str | None = None):
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
        n, k = base["means"].shape[0], deltas["means"].shape[0]
        packed_deltas = torch.cat([deltas[name].reshape(k, n, width) for name, width in LAYOUT], 2)
        if packed_deltas.shape != (k, n, CHANNELS) or lbs_weights.shape[0] != n:
            raise ValueError(f"avatar arrays disagree: {n} Gaussians, deltas "
                             f"{tuple(packed_deltas.shape)}, lbs_weights {tuple(lbs_weights.shape)}")
        self.base = torch.cat([base[name].reshape(n, width) for name, width in LAYOUT], 1) \
            .t().float().contiguous()                                      # (14, N)
        # Blendshapes are local (3DGB Eq. 2 keeps a Gaussian's deltas at their initial value, zero
        # for a rigid neighbourhood): when few Gaussians move, only those take part in the product
        # and are scattered back; when most do, all are blended (a zero row adds an exact zero).
        moving = packed_deltas.ne(0).any(dim=2).any(dim=0)
        self.active = moving.nonzero().squeeze(1) if moving.float().mean() < SPARSE_BELOW else None
        if self.active is not None:
            packed_deltas = packed_deltas[:, self.active]
            self.base_active = self.base[:, self.active].contiguous()      # (14, A)
        a = n if self.active is None else len(self.active)
        self.n, self.n_active, self.n_expressions = n, a, k
        # (K, 14 * A): column c * A + i is channel c of blended Gaussian i.
        self.deltas = packed_deltas.transpose(1, 2).reshape(k, CHANNELS * a).float().contiguous()
        self.lbs_weights = lbs_weights.t().float().contiguous()           # (J, N)
        self.quantize, self.fallback_reason, self.int8 = None, None, None
        if quantize is not None:
            self._quantize(quantize)

    @classmethod
    def from_avatar(cls, avatar, device="cpu", quantize: str | None = None) -> Animator:
        """Animator of a ``backend.formats.avatar.Avatar`` (mouth Gaussians are never blended)."""
        t = lambda a: torch.as_tensor(a, device=device).float()  # noqa: E731
        n, k = avatar.n_gaussians, avatar.n_expressions
        base = {"means": t(avatar.means), "log_scales": t(avatar.log_scales), "quats": t(avatar.quats),
                "opacity_logits": t(avatar.opacity_logits), "sh_dc": t(avatar.sh[:, 0])}
        deltas = {"means": t(avatar.delta_means), "log_scales": t(avatar.delta_log_scales),
                  "quats": t(avatar.delta_quats), "opacity_logits": t(avatar.delta_opacity_logits),
                  "sh_dc": t(avatar.delta_sh[:, :, 0]).reshape(k, n, 3)}
        still = torch.as_tensor(avatar.mouth, device=device)  # mouth interior: never blended
        deltas = {name: d.masked_fill(still.view(1, n, *([1] * (d.dim() - 2))), 0.0)
                  for name, d in deltas.items()}
        return cls(base, deltas, t(avatar.lbs_weights), quantize=quantize)

    def _quantize(self, mode: str) -> None:
        """Replace the deltas of channels ``first..13`` by int8 rows + bf16 scales, if possible."""
        reason = int8_unavailable(self.base.device)
        if reason is not None:
            self.fallback_reason = f"quantize={mode!r} unavailable, blending exactly in float32: {reason}"
            warnings.warn(self.fallback_reason, RuntimeWarning, stacklevel=3)
            return
        first = 0 if mode == "int8-all" else SLICES["means"].stop
        a = self.n_active
        weights, scales = quantize_rows(self.deltas[:, first * a:].t())
        self.int8 = (first, pad_columns(weights), scales)
        self.deltas = self.deltas[:, :first * a].contiguous()
        self.quantize = mode

    def offset_error_bound(self, expressions: torch.Tensor) -> torch.Tensor:
        """Bound on |quantized - exact| blended offsets, per channel and Gaussian. (14, N).

        For row r with scale s_r, int8 values q_kr (|q_kr| <= 127), x = bf16(psi):
        |sum_k x_k q_kr s_r - sum_k psi_k d_kr| <= s_r / 2 * sum|x|  (rounding to int8)
        + u * sum|psi_k| |d_kr| (bf16 inputs) + u * |sum_k x_k q_kr s_r| (bf16 output),
        u = 2^-8; |d_kr| <= 127 s_r and |x_k| <= (1 + u) |psi_k|; a float32 slack of
        1e-6 relative covers the accumulation. Zero for exact channels and still Gaussians.
        """
        bound = torch.zeros(CHANNELS, self.n, device=self.base.device)
        if self.int8 is None:
            return bound
        first, _, scales = self.int8
        abs_sum = expressions.abs().sum()
        per_scale = abs_sum * ((1 + BF16_UNIT_ROUNDOFF) * (0.5 + 127 * BF16_UNIT_ROUNDOFF)
                               + 127 * BF16_UNIT_ROUNDOFF + 1e-6)
        per_gaussian = scales.float().view(CHANNELS - first, -1) * per_scale
        if self.active is None:
            bound[first:] = per_gaussian
        else:
            bound[first:, self.active] = per_gaussian
        return bound

    def blend_channels(self, expressions: torch.Tensor, stop: int = CHANNELS) -> torch.Tensor:
        """Blended channels ``0..stop-1`` (Eq. 1). (K,) -> (stop, N)."""
        if expressions.shape != (self.n_expressions,):
            raise ValueError(f"expected {self.n_expressions} expression coefficients, "
                             f"got shape {tuple(expressions.shape)}")
        a = self.n_active
        if self.active is None:
            out = target = torch.empty(stop, self.n, device=self.base.device)
            base = self.base
        else:
            out, target = self.base[:stop].clone(), torch.empty(stop, a, device=self.base.device)
            base = self.base_active
        exact_stop = stop if self.int8 is None else min(stop, self.int8[0])
        if exact_stop > 0:
            offsets = (expressions @ self.deltas[:, :exact_stop * a]).view(exact_stop, a)
            torch.add(base[:exact_stop], offsets, out=target[:exact_stop])
        if exact_stop < stop:
            first, weights, scales = self.int8
            rows = (stop - first) * a
            activations = torch.zeros(1, weights.shape[1], dtype=torch.bfloat16, device=weights.device)
            activations[0, :self.n_expressions] = expressions
            offsets = torch._weight_int8pack_mm(activations, weights[:rows], scales[:rows])
            torch.add(base[first:stop], offsets.view(stop - first, a), out=target[first:stop])
        if self.active is not None:
            out.index_copy_(1, self.active, target)
        return out

    def skin_channels(self, channels: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        """LBS of blended channels (in place) with (J, 4, 4) transforms. (C, N) -> (C, N).

        Positions: sum_j w_j A_j applied to the blended centre. Rotations: the quaternion blend
        sum_j w_j q_j of the joints' rotations times the blended rotation, normalized once
        (|a b| = |a| |b|, so this equals normalizing both factors first, as the trainer does).
        Both come from one (16, J) x (J, N) product; the rest is whole-row multiply-adds.
        """
        joint_quats = matrix_to_quat(transforms[:, :3, :3])                       # (J, 4)
        maps = torch.cat([transforms[:, :3, :].reshape(-1, 12), joint_quats], 1)   # (J, 16)
        per_gaussian = maps.t() @ self.lbs_weights                                # (16, N)
        posed_means = _apply_rows(per_gaussian[:12].view(3, 4, -1), channels[SLICES["means"]])
        channels[SLICES["means"]] = posed_means
        if channels.shape[0] >= SLICES["quats"].stop:
            quats = quat_multiply(per_gaussian[12:], channels[SLICES["quats"]], dim=0)
            squared = quats[0] * quats[0]
            for row in quats[1:]:
                squared.addcmul_(row, row)
            inverse_norm = squared.sqrt_().clamp_min_(1e-12).reciprocal_()
            for row, out in zip(quats, channels[SLICES["quats"]]):
                torch.mul(row, inverse_norm, out=out)
        return channels

    def frame(self, expressions: torch.Tensor, transforms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every property of one frame, posed: {name: (N, width)}.

        The values are transposed views (strides (1, N)) of one channel-major (14, N) array;
        ``.contiguous()`` makes a row-major copy where a kernel needs one.
        """
        return _views(self.skin_channels(self.blend_channels(expressions), transforms))

    def blend(self, expressions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Blended (unposed) properties: {name: (N, width)} views, as ``frame``."""
        return _views(self.blend_channels(expressions))

    def positions(self, expressions: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        """Posed Gaussian centres only (what Blender's shape keys + armature compute). (N, 3) view."""
        return self.skin_channels(self.blend_channels(expressions, SLICES["means"].stop), transforms).t()


def _apply_rows(maps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-Gaussian linear maps, with an optional translation column last, applied to rows.

    Args:
        maps: (R, C, N) or (R, C + 1, N); rows: (C, N).

    Returns:
        (R, N): out[r] = sum_b maps[r, b] * rows[b] (+ maps[r, C]).
    """
    width = rows.shape[0]
    out = maps[:, width].clone() if maps.shape[1] > width else torch.zeros_like(maps[:, 0])
    for b in range(width):
        out.addcmul_(maps[:, b], rows[b])
    return out


def _views(channels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: channels[SLICES[name]].t() for name, _ in LAYOUT}


def int8_unavailable(device: torch.device) -> str | None:
    """Why int8 blending cannot run on ``device`` (None when it can).

    Runs the kernel once on a small case and checks its result: its vector loops read K in
    steps of 16 (AVX-512) or 8 (AVX2, NEON), so inputs are padded (``pad_columns``), and a CPU
    build with other rules would be caught here instead of returning wrong offsets.
    """
    if torch.device(device).type != "cpu":
        return (f"the int8 kernel is used on the CPU only (device {device}); the float32 product "
                "is fast there")
    if not hasattr(torch, "_weight_int8pack_mm"):
        return f"torch {torch.__version__} has no torch._weight_int8pack_mm"
    generator = torch.Generator().manual_seed(0)
    weights = torch.randint(-127, 128, (37, 16), dtype=torch.int8, generator=generator)
    activations = torch.randn(1, 16, generator=generator).to(torch.bfloat16)
    scales = torch.rand(37, generator=generator).to(torch.bfloat16)
    expected = activations.float() @ (weights.float() * scales.float()[:, None]).t()
    try:
        result = torch._weight_int8pack_mm(activations, weights, scales).float()
    except (RuntimeError, NotImplementedError) as error:
        return f"torch._weight_int8pack_mm failed on this CPU: {error}"
    if not torch.allclose(result, expected, rtol=2 * BF16_UNIT_ROUNDOFF, atol=1e-6):
        return "torch._weight_int8pack_mm gives wrong results on this CPU"
    return None


def pad_columns(weights: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Zero columns up to a multiple of ``multiple`` (the int8 kernel's K step). (R, K) -> (R, K')."""
    padded = -weights.shape[1] % multiple
    return torch.nn.functional.pad(weights, (0, padded)).contiguous()


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization with bf16 scales. (R, K) float32 -> (R, K) int8, (R,) bf16.

    The scale max|row| / 127 is rounded up to a bfloat16 (the kernel's scale type), so
    ``int8 * scale`` is exactly the value the kernel uses and |values| <= 127 * scale; each value
    is off by at most scale / 2. All-zero rows get scale 0 and int8 zeros.
    """
    scales = rows.abs().amax(dim=1) / 127.0
    bits = scales.contiguous().view(torch.int32)
    scales = ((bits + 0xFFFF) & ~0xFFFF).view(torch.float32)  # round up to 8 significant bits
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    weights = torch.round(rows / safe[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
    return weights, scales.to(torch.bfloat16)
