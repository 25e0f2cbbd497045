"""The runtime animator (blend as one product over the moving Gaussians, then LBS) equals the
numpy reference of the file contract, with dense and with local blendshapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.export.animator import Animator
from backend.formats import animate, examples


@pytest.mark.parametrize("moving", [1.0, 0.15])
def test_animator_matches_the_numpy_reference(moving):
    avatar = examples.random_avatar(n_gaussians=3000, n_expressions=9, seed=4)
    if moving < 1.0:
        still = np.random.default_rng(2).random(avatar.n_gaussians) >= moving
        for field in ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits",
                      "delta_sh"):
            getattr(avatar, field)[:, still] = 0
    animator = Animator.from_avatar(avatar)
    if moving < 1.0:
        assert animator.n_active < 0.25 * avatar.n_gaussians
    rng = np.random.default_rng(5)
    psi, rotations = rng.uniform(-1, 1, 9), rng.normal(scale=0.2, size=(5, 3))
    transforms = torch.tensor(animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                                       rotations)).float()
    posed = animator.frame(torch.tensor(psi).float(), transforms)
    reference = animate.posed_means(avatar, psi, rotations)
    np.testing.assert_allclose(posed["means"].numpy(), reference, atol=2e-6)
    blended_scales = avatar.log_scales + np.einsum("k,knc->nc", psi, avatar.delta_log_scales)
    blended_scales[avatar.mouth] = avatar.log_scales[avatar.mouth]  # never blended
    np.testing.assert_allclose(posed["log_scales"].numpy(), blended_scales, atol=2e-5)
