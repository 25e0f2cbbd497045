"""Torch reference vs gsplat 1.5.3 on CUDA: the same images and the same gradients.

Skipped without CUDA or gsplat (scripts/gpu_check.sh runs them on a lent GPU); the projection/SH
check needs gsplat only. Opacities stay below 0.99 so that gsplat's 0.999 alpha clamp and ours (0.99)
agree.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from backend.render import Gaussians, render
from backend.render.bench import face_camera, head_cloud
from backend.render.gsplat_backend import gsplat_available

needs_cuda_gsplat = pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat==1.5.3")

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
@pytest.mark.cuda
@needs_cuda_gsplat
def test_images_match_gsplat(sh_degree):
    g, cameras = _scene(3000, 128, sh_degree)
    outputs = _render_both(g, cameras, torch.tensor([0.1, 0.2, 0.3], device="cuda"))
    ours, theirs = outputs["torch"][0], outputs["gsplat"][0]
    assert ours.alpha.max() > 0.9
    for name in ("rgb", "alpha"):
        # A pixel may differ by ~1/255 where float rounding moves an alpha across the 1/255 cut.
        difference = (getattr(ours, name) - getattr(theirs, name)).abs().flatten()
        assert difference.max() < 1e-2 and difference.mean() < 1e-5, name
        assert difference.quantile(0.999) < 1e-3, name
    covered = (ours.alpha > 0.5)
    depth_difference = (ours.depth - theirs.depth).abs()[covered]
    assert depth_difference.max() < 1e-3
    visible_ours = (ours.info["radii"] > 0).all(-1)
    visible_theirs = (theirs.info["radii"] > 0).all(-1)
    assert (visible_ours == visible_theirs).float().mean() > 0.99
    assert theirs.info["means2d"].shape == ours.info["means2d"].shape


@pytest.mark.cuda
@needs_cuda_gsplat
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


@pytest.mark.cuda
@needs_cuda_gsplat
def test_auto_picks_gsplat_on_cuda():
    g, cameras = _scene(100, 32)
    assert render(g, cameras).info["backend"] == "gsplat"
    assert render(g, cameras, backend="torch").info["backend"] == "torch"


@pytest.mark.skipif(importlib.util.find_spec("gsplat") is None, reason="needs gsplat==1.5.3 (any device)")
def test_projection_and_sh_match_gsplat_torch_reference():
    """gsplat's own pure-torch projection and SH (no CUDA needed) against ours, float64."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _spherical_harmonics

    from backend.render.projection import covariance_3d, project_gaussians
    from backend.render.sh import sh_to_rgb

    g = head_cloud(2000, seed=4)
    g = Gaussians(*[getattr(g, f).double() for f in FIELDS])
    cameras = face_camera(128)
    yaw = torch.tensor(0.7, dtype=torch.float64)
    turn = torch.eye(4, dtype=torch.float64)
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
    viewmats, Ks = cameras.viewmats.double() @ turn, cameras.Ks.double()
    Ks[:, 0, 2] += 3.3
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        g.means, covariance_3d(g.quats, g.scales), viewmats, Ks, 128, 128)
    ours = project_gaussians(g.means, g.quats, g.scales, g.opacities, viewmats, Ks, 128, 128)
    assert torch.allclose(ours.means2d, means2d, atol=1e-9)
    assert torch.allclose(ours.conics, conics, rtol=1e-9, atol=1e-12)
    assert torch.allclose(ours.depths, depths)
    # Ours are opacity-aware (as gsplat's CUDA kernel), theirs 3.33 sigma: same visibility, <= size.
    assert ((ours.radii > 0).all(-1) == (radii > 0).all(-1)).all() and (ours.radii <= radii).all()
    centres = torch.inverse(viewmats)[:, :3, 3]
    for degree in range(4):
        theirs = _spherical_harmonics(degree, g.means[None] - centres[:, None],
                                      g.sh[None, :, : (degree + 1) ** 2])
        assert torch.allclose(sh_to_rgb(degree, g.sh, g.means, centres), (theirs + 0.5).clamp_min(0),
                              atol=1e-12)
