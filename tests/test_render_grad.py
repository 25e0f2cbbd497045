"""Gradients of the torch rasterizer: central finite differences in float64, and the info that
gsplat's DefaultStrategy reads (means2d.grad, radii) for densification on CPU."""

from __future__ import annotations

import pytest
import torch

from backend.render import Gaussians, render

from .test_render import make_cameras, make_scene

FIELDS = ("means", "scales", "quats", "opacities", "sh")


def _scene():
    g = make_scene(8, seed=5, opacity_range=(0.2, 0.8), spread=0.04)
    g.opacities[: 8 // 5] = 0.6  # no stack at the clamp: the loss is smooth everywhere
    return g, make_cameras(24, 20)


def _loss(g: Gaussians, cameras, weights) -> torch.Tensor:
    out = render(g, cameras, background=torch.tensor([0.3, 0.1, 0.7], dtype=torch.float64))
    return ((out.rgb * weights[0]).sum() + (out.alpha * weights[1]).sum()
            + (out.depth * weights[2]).sum())


@pytest.mark.parametrize("field", FIELDS)
def test_gradient_matches_finite_differences(field):
    g, cameras = _scene()
    _check_finite_differences(g, cameras, field)


@pytest.mark.parametrize("field", ["means", "opacities"])
def test_gradient_with_early_stop(field):
    g = make_scene(10, seed=6, opacity_range=(0.2, 0.8), spread=0.03)
    g.opacities[:2] = 0.97  # the stack of make_scene, below the 0.99 clamp
    g.means[2:4] = g.means[:2] + 0.001
    g.opacities[2:4] = 0.97
    cameras = make_cameras(24, 20)
    assert render(g, cameras).alpha.max() > 0.999, "the early stop must be reached"
    _check_finite_differences(g, cameras, field)


def _check_finite_differences(g: Gaussians, cameras, field: str, n_entries: int = 40) -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (len(cameras), cameras.height, cameras.width)
    weights = [torch.rand(*shape, c, generator=generator, dtype=torch.float64) for c in (3, 1, 1)]
    tensor = getattr(g, field).clone().requires_grad_(True)
    setattr(g, field, tensor)
    _loss(g, cameras, weights).backward()
    analytic = tensor.grad.reshape(-1)
    flat = tensor.detach().reshape(-1)
    entries = torch.randperm(flat.numel(), generator=generator)[:n_entries]
    eps = 1e-6
    for entry in entries.tolist():
        values = []
        for sign in (1.0, -1.0):
            moved = flat.clone()
            moved[entry] += sign * eps
            setattr(g, field, moved.reshape(tensor.shape))
            values.append(_loss(g, cameras, weights).item())
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(numeric - analytic[entry].item()) <= 1e-6 + 1e-4 * abs(numeric), \
            f"d loss / d {field}[{entry}]: finite differences {numeric}, autograd {analytic[entry].item()}"
    assert analytic.abs().max() > 1e-3, f"the {field} gradient must not vanish in this scene"


def test_means2d_grad_and_radii_feed_default_strategy():
    g, cameras = _scene()
    g.means[0] = torch.tensor([0.0, 0.0, 0.595], dtype=torch.float64)  # behind the near plane
    g.means.requires_grad_(True)
    out = render(g, cameras)
    out.rgb.sum().backward()
    info = out.info
    means2d, radii = info["means2d"], info["radii"]
    assert means2d.shape == (2, 8, 2) and means2d.grad is not None and means2d.grad.shape == (2, 8, 2)
    assert radii.shape == (2, 8, 2) and radii.dtype == torch.int32
    assert (radii[:, 0] == 0).all() and (means2d.grad[:, 0] == 0).all()
    visible = (radii > 0).all(-1)
    assert visible.sum() >= 10 and (means2d.grad[visible].norm(dim=-1) > 0).all()
    # What gsplat's DefaultStrategy(packed=False)._update_state does with the info dict:
    grads = means2d.grad.clone()
    grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
    grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
    gs_ids = torch.where(visible)[1]
    grad2d = torch.zeros(8, dtype=grads.dtype).index_add_(0, gs_ids, grads[visible].norm(dim=-1))
    assert grad2d[0] == 0 and (grad2d[1:] > 0).sum() >= 5
    assert info["gaussian_ids"] is None and info["packed"] is False


def test_means2d_grad_is_the_screen_space_gradient():
    g, cameras = _scene()
    g.means.requires_grad_(True)  # any parameter that moves means2d
    out = render(g, cameras)
    means2d = out.info["means2d"]
    out.rgb.sum().backward()
    # Moving a Gaussian's screen position by shifting the principal point of its camera moves every
    # Gaussian of that camera by the same pixels: d loss / d cx = sum of d loss / d means2d_x.
    cx = cameras.Ks.clone()
    eps = 1e-6
    values = []
    for sign in (1.0, -1.0):
        Ks = cx.clone()
        Ks[1, 0, 2] += sign * eps
        cameras.Ks = Ks
        values.append(render(g, cameras).rgb.sum().item())
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(numeric - means2d.grad[1, :, 0].sum().item()) < 1e-6 + 1e-4 * abs(numeric)


def test_float32_gradients_agree_with_float64():
    """The block-wise suffix sums must not lose precision in float32 on a dense, opaque cloud."""
    from backend.render.bench import face_camera, head_cloud

    g32, cameras32 = head_cloud(3000, seed=1), face_camera(64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        params = [getattr(g32, f).detach().to(dtype).requires_grad_(True) for f in FIELDS]
        cameras = type(cameras32)(cameras32.viewmats.to(dtype), cameras32.Ks.to(dtype), 64, 64)
        out = render(Gaussians(**dict(zip(FIELDS, params))), cameras)
        assert out.alpha.max() > 0.999
        (out.rgb.sum() + out.depth.sum()).backward()
        grads[dtype] = [p.grad.double() for p in params]
    for field, a, b in zip(FIELDS, grads[torch.float32], grads[torch.float64]):
        assert (a - b).norm() / b.norm() < 1e-3, field


@pytest.mark.parametrize("budget, n_stored", [(0, 0), (100_000, 1)])
def test_recomputed_blocks_give_the_same_gradients(monkeypatch, budget, n_stored):
    """The backward reuses blocks the forward stored; with no (or a partial) budget it recomputes."""
    from backend.render import composite, torch_backend

    g, cameras = make_scene(30, seed=7, opacity_range=(0.2, 0.9)), make_cameras(40, 28)
    grads, memos = [], []
    walk = composite._depth_blocks

    def spying_walk(*args, memo=None, **kwargs):
        memos.append(memo)
        yield from walk(*args, memo=memo, **kwargs)

    monkeypatch.setattr(composite, "_depth_blocks", spying_walk)
    for store in (torch_backend.STORE_BUDGET, budget):
        monkeypatch.setattr(torch_backend, "STORE_BUDGET", store)
        params = [getattr(g, f).clone().requires_grad_(True) for f in FIELDS]
        out = render(Gaussians(**dict(zip(FIELDS, params))), cameras)
        stored = 0 if memos[-1] is None else len(memos[-1]) - 1  # less the "budget" entry
        (out.rgb.sum() + out.depth.sum() + out.alpha.sum()).backward()
        grads.append([p.grad for p in params])
    assert stored == n_stored  # 100k: the first block only (3 tensors x 31 tiles x 16 pairs x 64 px)
    for field, a, b in zip(FIELDS, *grads):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), field
