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


def test_fit_recovers_a_synthetic_subject(model):
    frames, size, focal, depth = 12, 512, 1400.0, 0.6
    shape, expression, rotations, translation = _subject(model, frames)
    with torch.no_grad():
        truth = model(shape=shape[None].expand(frames, -1), expression=expression,
                      joint_rotations=rotations, translation=translation)
    # Independent projection: OpenCV camera on +Z, numpy.
    extrinsic = extrinsic_matrix(depth)
    camera = truth.landmarks.double().numpy() @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    observed = np.zeros((frames, 478, 2))
    observed[:, model.landmark_ids.numpy()] = camera[..., :2] / camera[..., 2:] * focal + size / 2
    intrinsics = np.repeat(np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])[None],
                           frames, axis=0)
    result = fit_landmarks(model, observed, np.ones(frames, bool), intrinsics, size,
                           FitConfig(fit_focal=False))
    errors = _angles_deg(rotations.numpy(), result.joint_rotations)
    head = _angles_deg(rotations[:, 0].numpy(), result.joint_rotations[:, 0])
    # Vertices in head space (root pose and translation removed): what the avatar is built in.
    local = torch.tensor([0.0, 1, 1, 1, 1])[None, :, None]
    with torch.no_grad():
        fitted = model(shape=torch.as_tensor(result.shape)[None].expand(frames, -1),
                       expression=torch.as_tensor(result.expressions),
                       joint_rotations=torch.as_tensor(result.joint_rotations) * local)
        reference = model(shape=shape[None].expand(frames, -1), expression=expression,
                          joint_rotations=rotations * local)
    vertex_mm = float((fitted.vertices - reference.vertices).norm(dim=-1).mean()) * 1000
    print(f"synthetic fit: reprojection {result.errors_px.mean():.2f} px, head rotation "
          f"{head.mean():.2f} deg, jaw {errors[:, 2].mean():.2f} deg, eyes "
          f"{errors[:, 3:].mean():.2f} deg, head-space vertices {vertex_mm:.2f} mm")
    assert result.errors_px.mean() < 1.5
    assert head.mean() < 2.5 and errors[:, 2].mean() < 2.0 and errors[:, 3:].mean() < 6.0
    assert vertex_mm < 8.0


def test_frames_without_data_follow_their_neighbours(model):
    frames = 6
    shape, expression, rotations, translation = _subject(model, frames, seed=1)
    with torch.no_grad():
        truth = model(shape=shape[None].expand(frames, -1), expression=expression,
                      joint_rotations=rotations, translation=translation)
    extrinsic = extrinsic_matrix(0.6)
    camera = truth.landmarks.double().numpy() @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    observed = np.zeros((frames, 478, 2))
    observed[:, model.landmark_ids.numpy()] = camera[..., :2] / camera[..., 2:] * 1400 + 256
    valid = np.ones(frames, bool)
    valid[3] = False
    observed[3] = 0.0                                       # garbage where nothing was detected
    intrinsics = np.repeat(np.array([[1400.0, 0, 256], [0, 1400, 256], [0, 0, 1]])[None], frames, 0)
    result = fit_landmarks(model, observed, valid, intrinsics, 512,
                           FitConfig(iterations=40, rigid_iterations=20))
    assert np.isfinite(result.joint_rotations).all()
    assert _angles_deg(rotations[3, 0].numpy(), result.joint_rotations[3, 0]) < 12.0
