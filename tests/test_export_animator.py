"""The runtime animator (blend as one product, then LBS) against independent references.

Exact mode: equals the float64 numpy reference of the file contract (positions) and the
trainer's quaternion skinning (rotations), with dense and with local blendshapes. int8 modes:
every blended channel is within an error bound derived from the int8 scales (computed here from
the deltas, not taken from the animator), and Gaussians that never move come out bit-identical
to the skinned neutral values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.export import animator as animator_module
from backend.export.animator import CHANNELS, SLICES, Animator, int8_unavailable
from backend.formats import animate, examples
from backend.geometry.rotations import quat_multiply
from backend.train.model import skinning_quats

K = 9
U = 2.0 ** -8  # bfloat16 unit roundoff
INT8_OK = int8_unavailable(torch.device("cpu")) is None


def _avatar(moving: float, seed: int = 4):
    """Random avatar; a share ``moving`` of the Gaussians have deltas, and a tenth of those have
    deltas 1000x smaller (a per-tensor int8 scale would swamp them; per-row ones do not)."""
    avatar = examples.random_avatar(n_gaussians=3000, n_expressions=K, seed=seed)
    rng = np.random.default_rng(2)
    still = rng.random(avatar.n_gaussians) >= moving
    small = rng.random(avatar.n_gaussians) < 0.1
    for field in ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits", "delta_sh"):
        getattr(avatar, field)[:, still] = 0
        getattr(avatar, field)[:, small] *= 1e-3
    return avatar, still | avatar.mouth


def _inputs(avatar, seed=5):
    rng = np.random.default_rng(seed)
    psi, rotations = rng.uniform(-1, 1, K), rng.normal(scale=0.2, size=(5, 3))
    transforms = torch.tensor(animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                                       rotations)).float()
    return psi, rotations, transforms


def _reference_channels(avatar, psi):
    """Blended channels in float64 numpy, mouth never blended, and the deltas. (14, N), (K, N, 14)."""
    k, n = avatar.n_expressions, avatar.n_gaussians
    base = np.concatenate([avatar.means, avatar.log_scales, avatar.quats, avatar.opacity_logits.reshape(n, 1),
                           avatar.sh[:, 0]], 1).astype(np.float64)
    deltas = np.concatenate([avatar.delta_means, avatar.delta_log_scales, avatar.delta_quats,
                             avatar.delta_opacity_logits.reshape(k, n, 1),
                             avatar.delta_sh[:, :, 0].reshape(k, n, 3)], 2)
    deltas = deltas.astype(np.float32).astype(np.float64)
    deltas[:, avatar.mouth] = 0
    return (base + np.einsum("k,knc->nc", psi, deltas)).T, deltas


@pytest.mark.parametrize("moving", [1.0, 0.15])
def test_exact_animator_matches_the_references(moving):
    avatar, _ = _avatar(moving)
    animator = Animator.from_avatar(avatar)
    assert (animator.active is None) == (moving == 1.0)
    psi, rotations, transforms = _inputs(avatar)
    posed = animator.frame(torch.tensor(psi).float(), transforms)
    np.testing.assert_allclose(posed["means"].numpy(), animate.posed_means(avatar, psi, rotations),
                               atol=2e-6)
    reference, _ = _reference_channels(avatar, psi)
    np.testing.assert_allclose(posed["log_scales"].numpy(), reference[SLICES["log_scales"]].T, atol=2e-5)
    np.testing.assert_allclose(posed["sh_dc"].numpy(), reference[SLICES["sh_dc"]].T, atol=2e-5)
    # Rotations: the trainer's form, normalized skinning quaternion times normalized blended one.
    blended = torch.tensor(reference[SLICES["quats"]].T).float()
    lbs = torch.tensor(avatar.lbs_weights).float()
    expected = quat_multiply(skinning_quats(lbs, transforms), blended / blended.norm(dim=1, keepdim=True))
    np.testing.assert_allclose(posed["quats"].numpy(), expected.numpy(), atol=2e-6)
    np.testing.assert_allclose(animator.positions(torch.tensor(psi).float(), transforms).numpy(),
                               posed["means"].numpy(), atol=1e-7)


@pytest.mark.skipif(not INT8_OK, reason=str(int8_unavailable(torch.device("cpu"))))
@pytest.mark.parametrize("mode", ["int8", "int8-all"])
@pytest.mark.parametrize("moving", [1.0, 0.15])
def test_int8_blend_is_within_the_bound_of_its_scales(mode, moving):
    avatar, still = _avatar(moving)
    exact, quantized = Animator.from_avatar(avatar), Animator.from_avatar(avatar, quantize=mode)
    assert quantized.quantize == mode and quantized.fallback_reason is None
    psi, rotations, transforms = _inputs(avatar)
    expressions = torch.tensor(psi).float()
    reference, deltas = _reference_channels(avatar, psi)
    # Bound of one row (a channel of a Gaussian) from its scale s = max_k |d_k| / 127, rounded up
    # to bf16 (at most 2^-7 relative): s / 2 * sum|x| for int8 rounding, with x = bf16(psi) and
    # |x| <= (1 + U)|psi|, plus U * 127 s * sum|psi| each for the bf16 input and the bf16 output;
    # then float32 rounding of the neutral + offset sum.
    scales = np.abs(deltas).max(axis=0).T / 127 * (1 + 2.0 ** -7)             # (14, N)
    bound = scales * np.abs(psi).sum() * ((1 + U) * 0.5 + 2 * 127 * U * (1 + U)) \
        + 2.0 ** -23 * np.abs(reference)
    first = SLICES["means"].start if mode == "int8-all" else SLICES["means"].stop
    bound[:first] = 1e-6 * np.maximum(np.abs(reference[:first]), 1)  # exact float32 channels
    blended = quantized.blend_channels(expressions).double().numpy()
    error = np.abs(blended - reference)
    assert np.all(error <= bound), f"worst error / bound {np.max(error / bound):.3f}"
    # The quantization is really there (the error uses a sizeable part of the bound) ...
    assert np.max(error[first:] / bound[first:]) > 0.05
    # ... and the animator's own bound holds too.
    assert np.all(error[first:] <= quantized.offset_error_bound(expressions).numpy()[first:]
                  + 2.0 ** -23 * np.abs(reference[first:]))
    # Positions: exact in "int8"; in "int8-all" off by at most the bound's length (LBS of convex
    # weights over rotations does not stretch).
    posed_means = quantized.frame(expressions, transforms)["means"].numpy()
    means_bound = np.linalg.norm(bound[:3], axis=0) + 2e-6
    assert np.all(np.linalg.norm(posed_means - animate.posed_means(avatar, psi, rotations), axis=1)
                  <= means_bound)
    # Gaussians that never move (the mouth and the still ones) are bit-identical to the exact
    # path and to the skinned neutral values.
    neutral = exact.skin_channels(exact.base.clone(), transforms)
    for name, posed in quantized.frame(expressions, transforms).items():
        assert torch.equal(posed[still], neutral[SLICES[name]].t()[still]), name
        assert torch.equal(posed[still], exact.frame(expressions, transforms)[name][still]), name


def test_int8_falls_back_to_exact_with_a_reason(monkeypatch):
    assert "CPU only" in int8_unavailable(torch.device("cuda"))
    avatar, _ = _avatar(1.0)
    monkeypatch.delattr(torch, "_weight_int8pack_mm")  # a torch build without the int8 kernel
    with pytest.warns(RuntimeWarning, match="has no torch._weight_int8pack_mm"):
        animator = Animator.from_avatar(avatar, quantize="int8")
    assert animator.quantize is None and "blending exactly in float32" in animator.fallback_reason
    psi, _, transforms = _inputs(avatar)
    expressions = torch.tensor(psi).float()
    exact = Animator.from_avatar(avatar).frame(expressions, transforms)
    for name, posed in animator.frame(expressions, transforms).items():
        assert torch.equal(posed, exact[name]), name
    with pytest.raises(ValueError, match="quantize must be one of"):
        Animator.from_avatar(avatar, quantize="int4")


def test_quantize_rows_scales_are_bf16_and_cover_the_row():
    rows = torch.tensor([[0.0, 0.0, 0.0], [1.0, -3.0, 2.5], [1e-7, 0.0, -2e-7]])
    weights, scales = animator_module.quantize_rows(rows)
    assert scales.dtype == torch.bfloat16 and weights.dtype == torch.int8
    dequantized = weights.float() * scales.float()[:, None]
    assert torch.equal(dequantized[0], torch.zeros(3)) and weights.abs().max() <= 127
    assert torch.all((dequantized - rows).abs() <= scales.float()[:, None] / 2)
    assert torch.all(scales.float()[1:] * 127 >= rows[1:].abs().amax(1))
    assert CHANNELS == 14
