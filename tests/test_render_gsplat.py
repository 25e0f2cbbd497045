"""Torch reference vs gsplat 1.5.3 on CUDA: the same images and the same gradients.

Skipped without CUDA or gsplat (scripts/gpu_check.sh runs them on a lent GPU). Opacities stay below
0.99 so that gsplat's 0.999 alpha clamp and ours (0.99) agree.
"""

from __future__ import annotations

import pytest
import torch

from backend.render import Gaussians, render
from backend.render.bench import face_camera, head_cloud
from backend.render.gsplat_backend import gsplat_available

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat==1.5.3")]

FIELDS = ("means", "quats", "scales", "opacities", "sh")


def _scene(n: int, size: int, sh_degree: int = 3):
    g = head_cloud(n, seed=3, device="cuda")
    g.opacities = g.opacities.clamp_max(0.95)
    g.sh = g.sh[:, : (sh_degree + 1) ** 2].contiguous()
    cameras = face_camera(size, device="cuda")
    cameras.Ks[:, 0, 2] += 3.3  # an off-centre principal point
    return g, cameras


def _render_both(g: Gaussians, cameras, background):
    outputs = {}
    for backend in ("torch", "gsplat"):
        params = [getattr(g, f).detach().clone().requires_grad_(True) for f in FIELDS]
        out = render(Gaussians(*params), cameras, background=background, backend=backend)
        generator = torch.Generator(device="cuda").manual_seed(0)
        weights = [torch.rand(t.shape, generator=generator, device="cuda") for t in (out.rgb, out.alpha)]
        depth_weight = torch.rand(out.depth.shape, generator=generator, device="cuda") * 0.1
        loss = (out.rgb * weights[0]).sum() + (out.alpha * weights[1]).sum() \
            + (out.depth * depth_weight * out.alpha).sum()
        loss.backward()
        outputs[backend] = (out, {f: p.grad for f, p in zip(FIELDS, params)})
    return outputs


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_images_match_gsplat(sh_degree):
    g, cameras = _scene(3000, 128, sh_degree)
    outputs = _render_both(g, cameras, torch.tensor([0.1, 0.2, 0.3], device="cuda"))
    ours, theirs = outputs["torch"][0], outputs["gsplat"][0]
    assert ours.alpha.max() > 0.9
    for name in ("rgb", "alpha"):
        difference = (getattr(ours, name) - getattr(theirs, name)).abs()
        assert difference.max() < 2e-3 and difference.mean() < 1e-5, name
    covered = (ours.alpha > 0.5)
    depth_difference = (ours.depth - theirs.depth).abs()[covered]
    assert depth_difference.max() < 1e-3
    visible_ours = (ours.info["radii"] > 0).all(-1)
    visible_theirs = (theirs.info["radii"] > 0).all(-1)
    assert (visible_ours == visible_theirs).float().mean() > 0.99
    assert theirs.info["means2d"].shape == ours.info["means2d"].shape


def test_gradients_match_gsplat():
    g, cameras = _scene(2000, 96)
    outputs = _render_both(g, cameras, None)
    ours, theirs = outputs["torch"][1], outputs["gsplat"][1]
    for field in FIELDS:
        a, b = ours[field].flatten(), theirs[field].flatten()
        cosine = torch.nn.functional.cosine_similarity(a, b, dim=0)
        relative = (a - b).norm() / b.norm()
        assert cosine > 0.999 and relative < 0.03, f"{field}: cosine {cosine:.5f}, relative {relative:.4f}"
    means2d_ours = outputs["torch"][0].info["means2d"].grad
    means2d_theirs = outputs["gsplat"][0].info["means2d"].grad
    assert (means2d_ours - means2d_theirs).norm() / means2d_theirs.norm() < 0.03


def test_auto_picks_gsplat_on_cuda():
    g, cameras = _scene(100, 32)
    assert render(g, cameras).info["backend"] == "gsplat"
    assert render(g, cameras, backend="torch").info["backend"] == "torch"
