"""Unit tests of the Stage 2 building blocks, each against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.formats import animate, examples
from backend.geometry.rotations import matrix_to_quat, quat_multiply, quat_to_matrix
from backend.train import deform
from backend.train.config import PRESETS, from_dict, make_config, to_dict


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).float()


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    from backend.train.losses import psnr, ssim

    rng = np.random.default_rng(0)
    a = rng.random((40, 48, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype(np.float32)
    expected = metrics.structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)
    ours = ssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None],
                valid_only=True)
    assert abs(float(ours) - expected) < 2e-3
    assert abs(float(psnr(torch.from_numpy(a), torch.from_numpy(b)))
               - metrics.peak_signal_noise_ratio(a, b, data_range=1.0)) < 1e-3


def test_deformation_init_recovers_a_rigid_expression():
    """An 'expression' that rotates the whole mesh: every Gaussian, on or off the surface, must
    get delta = R x - x and q_k = q(R) q0."""
    vertices, faces = examples.uv_sphere(8, 12)
    vertices, faces = torch.from_numpy(vertices), torch.from_numpy(faces).long()
    rotation = _random_rotations(1, seed=3)[0]
    dirs = (vertices @ rotation.T - vertices)[:, :, None]  # (V, 3, 1)
    rotations = deform.deformation_rotations(vertices, faces, dirs)
    assert torch.allclose(rotations[0], rotation.expand_as(rotations[0]), atol=1e-4)
    generator = torch.Generator().manual_seed(1)
    face_ids = torch.randint(len(faces), (50,), generator=generator)
    bary = torch.rand(50, 3, generator=generator)
    bary = bary / bary.sum(1, keepdim=True)
    surface = (vertices[faces[face_ids]] * bary[..., None]).sum(1)
    means = surface + 0.01 * torch.randn(50, 3, generator=generator)  # off the surface
    quats = matrix_to_quat(_random_rotations(50, seed=4))
    init = deform.initial_deltas(means, quats, face_ids, bary, vertices, faces, dirs, rotations)
    assert torch.allclose(init["means"][:, 0], means @ rotation.T - means, atol=1e-5)
    expected_q = quat_multiply(matrix_to_quat(rotation).expand(50, 4), quats)
    got = init["quats"][:, 0] + quats
    assert torch.allclose(quat_to_matrix(got), quat_to_matrix(expected_q), atol=1e-5)


def test_consistency_scale_is_eq2():
    d = torch.tensor([[0.0, 5e-6], [1e-5, 0.5], [1.0, 2.0]])
    scale = deform.consistency_scale(d, torch.tensor([1.0, 2.0]), epsilon=1e-5)
    expected = torch.tensor([[0.0, 0.0], [0.0, (0.5 - 1e-5) / (2 - 1e-5)], [1.0, 1.0]])
    assert torch.allclose(scale, expected)


def _toy_model(n: int = 40, k: int = 3):
    from backend.train.model import GaussianBlendshapes

    generator = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    weights = torch.rand(n, 5, generator=generator)
    tensors = {"means": r(n, 3) * 0.05, "log_scales": r(n, 3) * 0.1 - 5, "quats": r(n, 4),
               "opacity_logits": r(n), "sh_dc": r(n, 1, 3), "sh_rest": r(n, 3, 3) * 0.1,
               "delta_means": r(n, k, 3) * 0.01, "delta_log_scales": r(n, k, 3) * 0.01,
               "delta_quats": r(n, k, 4) * 0.01, "delta_opacity_logits": r(n, k),
               "delta_sh": r(n, k, 1, 3), "init_means": r(n, k, 3) * 0.01, "init_quats": r(n, k, 4) * 0.01,
               "consistency": torch.rand(n, k, generator=generator),
               "lbs_weights": weights / weights.sum(1, keepdim=True),
               "mouth": torch.arange(n) % 7 == 0}
    return GaussianBlendshapes(tensors, (-1, 0, 1, 1, 1), sh_degree=1)


def test_strategy_ops_keep_every_tensor_and_adam_state_in_sync():
    from backend.train import strategy

    model = _toy_model()
    optimizer = torch.optim.Adam([{"params": [p], "name": n} for n, p in model.params.items()], lr=1e-3)
    loss = sum((p ** 2).sum() for p in model.params.values())
    loss.backward()
    optimizer.step()
    before = model.tensors()
    mask = torch.zeros(40, dtype=torch.bool)
    mask[[1, 5, 9]] = True
    strategy.duplicate(model, optimizer, mask)
    assert model.n_gaussians == 43
    for name, value in model.per_gaussian().items():
        assert len(value) == 43, name
        assert torch.equal(value[40:], before[name][[1, 5, 9]]), name
    split_mask = torch.zeros(43, dtype=torch.bool)
    split_mask[[0, 42]] = True
    strategy.split(model, optimizer, split_mask, torch.Generator().manual_seed(0))
    assert model.n_gaussians == 43 - 2 + 4
    assert torch.equal(model.params["delta_means"][-4:-2], before["delta_means"][[0, 9]])
    remove = torch.zeros(45, dtype=torch.bool)
    remove[:10] = True
    strategy.remove(model, optimizer, remove)
    for group in optimizer.param_groups:
        param = group["params"][0]
        assert param is model.params[group["name"]]
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape and state["exp_avg_sq"].shape == param.shape
    # New Gaussians start with zero moments; survivors keep theirs.
    assert (optimizer.state[model.params["means"]]["exp_avg"][-4:] == 0).all()
    loss = sum((p ** 2).sum() for p in model.params.values())
    loss.backward()
    optimizer.step()  # still consistent


def test_blend_and_skin_match_the_numpy_reference():
    from backend.export.animator import Animator
    from backend.export.avatar_file import model_from_avatar

    avatar = examples.random_avatar(n_gaussians=300, n_expressions=6, seed=2)
    model, _ = model_from_avatar(avatar)
    rng = np.random.default_rng(0)
    expressions, rotations = rng.normal(size=6), rng.normal(scale=0.2, size=(5, 3))
    translation = rng.normal(scale=0.01, size=3)
    transforms = torch.from_numpy(animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                                           rotations, translation)).float()
    expected = animate.posed_means(avatar, expressions, rotations, translation)
    posed = model.skin(model.blend(torch.tensor(expressions).float()), transforms)
    assert np.abs(posed.means.detach().numpy() - expected).max() < 1e-5
    animator = Animator.from_avatar(avatar)
    fast = animator.frame(torch.tensor(expressions).float(), transforms)
    assert np.abs(fast["means"].numpy() - expected).max() < 1e-5
    positions = animator.positions(torch.tensor(expressions).float(), transforms)
    assert np.abs(positions.numpy() - expected).max() < 1e-5
    fast_rotation = quat_to_matrix(fast["quats"])
    same_rotation = fast_rotation @ quat_to_matrix(posed.quats).transpose(1, 2)
    assert torch.allclose(same_rotation, torch.eye(3).expand_as(same_rotation), atol=1e-4)


def test_grid_lookup_interpolates_surface_values():
    from backend.train.grid import SurfaceGrid

    vertices, faces = examples.uv_sphere(16, 24)
    vertices, faces = torch.from_numpy(vertices), torch.from_numpy(faces).long()
    values = torch.stack([vertices[:, 0], vertices[:, 1] ** 2], dim=1)  # smooth fields
    grid = SurfaceGrid.build(vertices, faces, resolution=48)
    generator = torch.Generator().manual_seed(0)
    face_ids = torch.randint(len(faces), (200,), generator=generator)
    bary = torch.rand(200, 3, generator=generator)
    bary = bary / bary.sum(1, keepdim=True)
    points = (vertices[faces[face_ids]] * bary[..., None]).sum(1)
    exact = (values[faces[face_ids]] * bary[..., None]).sum(1)
    looked_up, lengths = grid.lookup(points, faces, values, vertices[:, :, None])
    assert (looked_up - exact).abs().max() < 0.01
    assert torch.allclose(lengths[:, 0], points.norm(dim=1), atol=0.01)


def test_presets_roundtrip_and_phases():
    for name in PRESETS:
        config = make_config(name)
        assert from_dict(to_dict(config)) == config
    config = make_config("cpu-fast", phases=[
        {"name": "photoreal", "fraction": 0.5},
        {"name": "geometry", "fraction": 0.3, "images": "stylized", "max_abs_yaw": 0.2,
         "trainable": ["geometry", "blendshape_geometry"]},
        {"name": "texture", "fraction": 0.2, "images": "stylized", "trainable": ["texture"]}])
    assert [p.name for p in config.phases] == ["photoreal", "geometry", "texture"]
    assert config.phases[1].trainable == ("geometry", "blendshape_geometry")
    assert math.isclose(sum(p.fraction for p in config.phases), 1.0)


def test_oneshot_settings_and_detection(tmp_path):
    from backend.fileio import write_json
    from backend.train.data import split_frames
    from backend.train.oneshot import is_oneshot, oneshot_settings

    train, test = split_frames(1)
    assert train.tolist() == [0] and test.tolist() == [0]  # no held-out frame: the training view
    assert is_oneshot(str(tmp_path), 1) and not is_oneshot(str(tmp_path), 5)
    write_json(tmp_path / "prepare.json", {"source": {"kind": "image"}})
    assert is_oneshot(str(tmp_path), 5)
    # The build's default preset becomes `oneshot`; blendshape groups never train in one-shot mode.
    build_overrides = {"phases": [{"name": "photoreal", "images": "stylized"}], "iterations": 600}
    preset, overrides = oneshot_settings("cpu-fast", build_overrides)
    config = make_config(preset, **overrides)
    assert preset == "oneshot" and config.iterations == 600 and config.oneshot.enabled
    assert config.phases[0].images == "stylized"
    assert set(config.phases[0].trainable) == {"geometry", "texture"}
    preset, overrides = oneshot_settings("tiny", {})
    config = make_config(preset, **overrides)
    assert config.model.n_face_gaussians == make_config("tiny").model.n_face_gaussians
    assert config.oneshot.enabled and config.densify.start > config.iterations
    assert all("blendshape" not in group for phase in config.phases for group in phase.trainable)
    preset, overrides = oneshot_settings("gpu-paper", {"phases": [
        {"name": "geometry", "images": "stylized", "max_abs_yaw": 0.2,
         "trainable": ["geometry", "blendshape_geometry"]}]})
    config = make_config(preset, **overrides)
    assert config.iterations == 3000 and config.phases[0].trainable == ("geometry",)
    assert config.phases[0].max_abs_yaw is None  # one frame: no yaw filter


def test_alpha_loss_norms():
    from backend.train.losses import alpha_loss

    alpha, mask = torch.tensor([0.5, 1.0, 0.0, 0.2]), torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert float(alpha_loss(alpha, mask)) == pytest.approx((0.25 + 0.04) / 4)
    assert float(alpha_loss(alpha, mask, "l1")) == pytest.approx((0.5 + 0.2) / 4)
    with pytest.raises(ValueError, match="alpha_norm"):
        alpha_loss(alpha, mask, "l3")


def test_flatness_loss_pulls_only_the_smallest_axis_above_the_floor():
    from backend.train.losses import flatness_loss

    scales = torch.tensor([[2e-3, 3e-3, 1e-4], [2e-3, 4e-3, 3e-3]]).log().requires_grad_()
    loss = flatness_loss(scales, floor=3e-4)
    assert float(loss.detach()) == pytest.approx(1000 * (2e-3 - 3e-4) / 2, rel=1e-4)  # the first is below it
    loss.backward()
    assert scales.grad[1, 0] > 0 and float(scales.grad[0].abs().sum()) == 0
    assert float(scales.grad[1, 1:].abs().sum()) == 0


def test_flat_init_lays_disks_in_their_triangles():
    from backend.headmodel import load_head_model
    from backend.train.config import ModelConfig
    from backend.train.init import initialize_avatar, subject_mesh

    head = load_head_model("builtin", n_expressions=4)
    mesh = subject_mesh(head, None, None)
    config = ModelConfig(n_face_gaussians=300, n_mouth_gaussians=20, sh_degree=0, grid_resolution=16,
                         flat_init=0.2)
    model, _, _ = initialize_avatar(mesh, head, config, tuple(head.parents))
    face = ~model.mouth
    scales = model.params["log_scales"].exp()  # the teeth billboards' Gaussians too
    assert torch.allclose(scales[:, 2], 0.2 * scales[:, 0]) and torch.allclose(scales[:, 0], scales[:, 1])
    teeth_normals = quat_to_matrix(model.params["quats"][model.mouth])[:, :, 2]
    assert float(teeth_normals[:, 1].abs().max()) < 1e-6 and float(teeth_normals[:, 2].min()) > 0.4
    normals = quat_to_matrix(model.params["quats"][face])[:, :, 2]  # each disk's thin axis
    means = model.params["means"][face]
    corners = mesh.vertices[mesh.faces]  # (F, 3, 3)
    centroids = corners.mean(dim=1)
    nearest = torch.cdist(means, centroids).argmin(dim=1)
    a, b, c = corners[nearest].unbind(1)
    true_normals = torch.linalg.cross(b - a, c - a)
    true_normals = true_normals / true_normals.norm(dim=1, keepdim=True)
    assert float((normals * true_normals).sum(dim=1).abs().median()) > 0.95


def test_below_floor_loss_measures_the_two_sigma_extent_under_the_floor():
    from backend.train.losses import below_floor_loss

    means = torch.tensor([[0.0, 0.05, 0.0], [0.0, -0.09, 0.0]])
    log_scales = torch.tensor([[1e-3, 1e-3, 1e-3], [1e-3, 1e-2, 1e-3]]).log()  # the second is tall
    upright = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    # the tall one reaches 2 cm below its centre: 1 cm under a floor at -0.1 m
    value = float(below_floor_loss(means, log_scales, upright, -0.1))
    assert value == pytest.approx(1000 * 0.01 / 2, rel=1e-3)
    half = math.sqrt(0.5)
    lying = torch.tensor([[1.0, 0, 0, 0], [half, 0, 0, half]])  # its long axis turned onto +-X
    assert float(below_floor_loss(means, log_scales, lying, -0.1)) == 0
    assert float(below_floor_loss(means[:0], log_scales[:0], upright[:0], -0.1)) == 0
