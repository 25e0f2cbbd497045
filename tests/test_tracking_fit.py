"""The landmark head against the full head model, and recovery of known parameters.

The synthetic subject: the built-in head model posed with known shape, expressions, jaw, eye and
head rotations, its landmarks projected through a known camera; the fit must recover them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.headmodel import load_head_model
from backend.headmodel.lbs import batch_rodrigues
from backend.tracking.fit import FitConfig, extrinsic_matrix, fit_landmarks
from backend.tracking.landmark_head import LandmarkHead
from backend.tracking.solver import LevenbergMarquardt, NormalBlocks, Regularizer


@pytest.fixture(scope="module")
def model():
    return load_head_model("builtin")


def _angles_deg(a, b):
    ra = batch_rodrigues(torch.as_tensor(a, dtype=torch.float32).reshape(-1, 3))
    rb = batch_rodrigues(torch.as_tensor(b, dtype=torch.float32).reshape(-1, 3))
    cos = ((ra.transpose(1, 2) @ rb).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).numpy().reshape(np.shape(a)[:-1])


def _subject(model, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)
    shape = torch.randn(model.n_shape, generator=g) * 0.5
    expression = (torch.sin(t[:, None] * 6 + torch.arange(model.n_expressions)) * 0.5).clamp(0, 1)
    rotations = torch.zeros(frames, 5, 3)
    rotations[:, 0, 1] = 0.5 * torch.sin(t * 4)          # head turns up to ~29 degrees
    rotations[:, 0, 0] = 0.2 * torch.sin(t * 3)
    rotations[:, 2, 0] = 0.12 * (torch.sin(t * 5) + 1)   # jaw opens
    rotations[:, 3:, 1] = 0.15 * torch.sin(t * 7)[:, None]
    translation = torch.zeros(frames, 3)
    translation[:, 0] = 0.02 * torch.sin(t * 2)
    return shape, expression, rotations, translation


def test_landmark_head_matches_the_full_model(model):
    shape, expression, rotations, translation = _subject(model, 4, seed=3)
    head = LandmarkHead(model)
    with torch.no_grad():
        full = model(shape=shape[None].expand(4, -1), expression=expression,
                     joint_rotations=rotations, translation=translation).landmarks
        fast = head(shape, expression, rotations, translation)
    assert torch.equal(head.ids[: head.n_model_landmarks], model.landmark_ids)
    assert float((fast[:, : head.n_model_landmarks] - full).abs().max()) < 1e-5


def test_landmark_jacobian_matches_autograd(model):
    """The closed-form Jacobian of the fit against torch.func forward-mode differentiation."""
    head = LandmarkHead(model).double()
    shape, expression, rotations, translation = _subject(model, 3, seed=5)
    rotations = rotations + 0.2 * torch.randn(3, 5, 3, generator=torch.Generator().manual_seed(1))
    coefficients = torch.cat([shape[None].expand(3, -1), expression], 1).double()
    rotations, translation = rotations.double(), translation.double()
    points = lambda c, r, t: head.points(c[None], r[None], t[None])[0]  # noqa: E731
    expected_c, expected_r = torch.func.vmap(torch.func.jacfwd(points, argnums=(0, 1)))(
        coefficients, rotations, translation)
    posed = head.pose(coefficients, rotations, translation)
    outer = torch.eye(3, dtype=torch.float64).expand(3, posed.points.shape[1], 3, 3)
    d_coefficients, d_rotations = head.jacobian(posed, outer)
    assert torch.allclose(posed.points, head.points(coefficients, rotations, translation))
    assert torch.allclose(d_coefficients, expected_c, atol=1e-12)
    assert torch.allclose(d_rotations, expected_r.flatten(3), atol=1e-12)


def test_solver_step_matches_a_dense_solve():
    """The block-banded + Schur step against numpy's dense solve of the same system."""
    g = torch.Generator().manual_seed(0)
    frames, p, s = 7, 4, 2
    jac_f = torch.randn(frames, 6, p, generator=g, dtype=torch.float64)
    jac_s = torch.randn(frames, 6, s, generator=g, dtype=torch.float64)
    residual = torch.randn(frames, 6, generator=g, dtype=torch.float64)
    blocks = NormalBlocks(0.0, jac_f.transpose(1, 2) @ jac_f, jac_f.transpose(1, 2) @ jac_s,
                          torch.einsum("tls,tlq->sq", jac_s, jac_s),
                          torch.einsum("tlp,tl->tp", jac_f, residual),
                          torch.einsum("tls,tl->s", jac_s, residual))
    one = torch.ones(p, dtype=torch.float64)
    reg = Regularizer(0.1 * one, torch.full((s,), 0.2, dtype=torch.float64),
                      torch.tensor([0.0, 1.0, 5.0, 0.3], dtype=torch.float64), one,
                      torch.ones(s, dtype=torch.float64))
    x_f = torch.randn(frames, p, generator=g, dtype=torch.float64)
    x_s = torch.randn(s, generator=g, dtype=torch.float64)
    step_f, step_s, _ = LevenbergMarquardt(None, reg).solve(blocks, x_f, x_s, damping=0.0)
    # Dense reference: the Hessian of 0.5|J dx + r|^2 + priors + chain, with the chain built as D'D.
    n = frames * p
    jacobian = np.zeros((frames * 6, n + s))
    for t in range(frames):
        jacobian[t * 6:(t + 1) * 6, t * p:(t + 1) * p] = jac_f[t].numpy()
        jacobian[t * 6:(t + 1) * 6, n:] = jac_s[t].numpy()
    second = np.zeros((frames - 2, frames))
    for row in range(frames - 2):
        second[row, row:row + 3] = [1, -2, 1]
    chain = np.kron(second.T @ second, np.diag(reg.smooth.numpy()))
    hessian = jacobian.T @ jacobian
    per_frame = np.diag(reg.prior_frames.numpy())
    hessian[:n, :n] += 2 * chain + 2 * np.kron(np.eye(frames), per_frame)
    hessian[n:, n:] += 2 * np.diag(reg.prior_shared.numpy())
    x = np.concatenate([x_f.numpy().ravel(), x_s.numpy()])
    gradient = jacobian.T @ residual.numpy().ravel()
    gradient[:n] += 2 * chain @ x[:n] + 2 * np.kron(np.eye(frames), per_frame) @ x[:n]
    gradient[n:] += 2 * reg.prior_shared.numpy() * x[n:]
    expected = np.linalg.solve(hessian, -gradient)
    quadratic = 0.5 * x[:n] @ (hessian[:n, :n] - jacobian[:, :n].T @ jacobian[:, :n]) @ x[:n] \
        + (reg.prior_shared.numpy() * x[n:] ** 2).sum()
    assert reg.loss(x_f, x_s) == pytest.approx(quadratic, rel=1e-9)
    np.testing.assert_allclose(step_f.numpy().ravel(), expected[:n], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(step_s.numpy(), expected[n:], rtol=1e-6, atol=1e-9)


def _observe(model, shape, expression, rotations, translation, focal, size, depth=0.6):
    """Landmarks of the posed model through an OpenCV camera on +Z, projected with numpy."""
    frames = len(expression)
    with torch.no_grad():
        truth = model(shape=shape[None].expand(frames, -1), expression=expression,
                      joint_rotations=rotations, translation=translation)
    extrinsic = extrinsic_matrix(depth)
    camera = truth.landmarks.double().numpy() @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    observed = np.zeros((frames, 478, 2))
    observed[:, model.landmark_ids.numpy()] = camera[..., :2] / camera[..., 2:] * focal + size / 2
    return observed


def _head_space_vertex_mm(model, result, shape, expression, rotations) -> float:
    """Mean vertex distance with the root pose and translation removed (the avatar's space)."""
    frames, local = len(expression), torch.tensor([0.0, 1, 1, 1, 1])[None, :, None]
    with torch.no_grad():
        fitted = model(shape=torch.as_tensor(result.shape)[None].expand(frames, -1),
                       expression=torch.as_tensor(result.expressions),
                       joint_rotations=torch.as_tensor(result.joint_rotations) * local)
        reference = model(shape=shape[None].expand(frames, -1), expression=expression,
                          joint_rotations=rotations * local)
    return float((fitted.vertices - reference.vertices).norm(dim=-1).mean()) * 1000


@pytest.mark.parametrize("noise_px, focal_guess", [(0.0, 1.0), (0.5, 1.1)])
def test_fit_recovers_a_synthetic_subject(model, noise_px, focal_guess):
    """Acceptance: reprojection <= 1.5 px at 512, joint rotations <= 2 deg, vertices <= 2 mm.

    Also with 0.5 px landmark noise and a focal length guessed 10 % long (then fitted).
    """
    frames, size, focal = 12, 512, 1400.0
    shape, expression, rotations, translation = _subject(model, frames)
    clean = _observe(model, shape, expression, rotations, translation, focal, size)
    observed = clean + np.random.default_rng(0).normal(size=clean.shape) * noise_px
    guess = focal * focal_guess
    intrinsics = np.repeat(np.array([[guess, 0, size / 2], [0, guess, size / 2], [0, 0, 1]])[None],
                           frames, axis=0)
    result = fit_landmarks(model, observed, np.ones(frames, bool), intrinsics, size,
                           FitConfig(fit_focal=focal_guess != 1.0))
    errors = _angles_deg(rotations.numpy(), result.joint_rotations).mean(0)      # per joint
    reprojection = np.linalg.norm(result.projected[:, :478] - clean[:, result.landmark_ids[:478]],
                                  axis=-1).mean()
    vertex_mm = _head_space_vertex_mm(model, result, shape, expression, rotations)
    print(f"synthetic fit (noise {noise_px} px): reprojection {reprojection:.2f} px, rotation "
          f"errors root/neck/jaw/eyes {np.round(errors, 2)} deg, head-space vertices "
          f"{vertex_mm:.2f} mm, focal {result.focal_factor * focal_guess:.3f}")
    assert reprojection <= 1.5 and (errors <= 2.0).all() and vertex_mm <= 2.0
    assert abs(result.focal_factor * focal_guess - 1.0) < 0.05


def test_frames_without_data_follow_their_neighbours(model):
    frames = 6
    shape, expression, rotations, translation = _subject(model, frames, seed=1)
    observed = _observe(model, shape, expression, rotations, translation, 1400.0, 512)
    valid = np.ones(frames, bool)
    valid[3] = False
    observed[3] = 0.0                                       # garbage where nothing was detected
    intrinsics = np.repeat(np.array([[1400.0, 0, 256], [0, 1400, 256], [0, 0, 1]])[None], frames, 0)
    result = fit_landmarks(model, observed, valid, intrinsics, 512, FitConfig(iterations=6))
    assert np.isfinite(result.joint_rotations).all()
    assert _angles_deg(rotations[3, 0].numpy(), result.joint_rotations[3, 0]) < 12.0
