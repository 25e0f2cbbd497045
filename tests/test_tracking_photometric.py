"""Photometric refinement (backend/tracking/photometric.py) on frames rendered and encoded here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.formats import tracking as tracking_format
from backend.headmodel import load_head_model
from backend.tracking.fit import FitConfig, LandmarkProblem
from backend.tracking.landmark_head import LandmarkHead
from backend.tracking.photometric import PhotometricConfig, PhotometricTerm, load_frames, surface_samples
from tests.conftest import run_backend

SIZE, FRAMES = 256, 10


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A rendered clip, prepared twice (landmarks only, then refined), both evaluated."""
    root = tmp_path_factory.mktemp("photometric")
    synth = root / "synth"
    result = run_backend("synth", "--out", str(synth), "--frames", str(FRAMES), "--size", str(SIZE))
    assert result.returncode == 0, result.stderr
    reports = {}
    for name, extra in (("landmarks", []), ("photometric", ["--refine", "photometric"])):
        result = run_backend("prepare", "--video", str(synth / "video.mp4"), "--out", str(root / name),
                             "--size", str(SIZE), "--focal", str(2.1 * SIZE), "--no-qa",
                             "--progress", "quiet", *extra)
        assert result.returncode == 0, result.stderr
        result = run_backend("evaluate-tracking", "--truth", str(synth / "tracking.npz"), "--data",
                             str(root / name), "--json", str(root / f"{name}.json"), "--progress", "quiet")
        assert result.returncode == 0, result.stderr
        reports[name] = json.loads((root / f"{name}.json").read_text())
    return root, reports


def test_refinement_beats_the_landmark_fit_on_rendered_frames(clip):
    _, reports = clip
    summary = {name: (round(r["reprojection_px"], 2), round(r["rotation_deg"]["root"], 2),
                      round(r["rotation_deg"]["jaw"], 2), round(r["vertex_mm"], 2))
               for name, r in reports.items()}
    print("reprojection px, root deg, jaw deg, vertices mm:", summary)
    landmarks, refined = reports["landmarks"], reports["photometric"]
    assert refined["reprojection_px"] < 0.85 * landmarks["reprojection_px"]
    assert refined["vertex_mm"] < landmarks["vertex_mm"]
    prepare = json.loads((clip[0] / "photometric" / "prepare.json").read_text())
    refine = prepare["fit_timings"]["refine"]
    assert refine["samples"] > 1000 and refine["steps"] > 0
    assert all(level["visible_per_frame"] > 500 for level in refine["levels"])


def test_gradient_matches_finite_differences(clip):
    """linearize's gradient is the derivative of loss (texture and visibility held)."""
    root, _ = clip
    model = load_head_model("builtin")
    track = tracking_format.read(root / "landmarks" / "tracking.npz")
    points = np.load(root / "landmarks" / "landmarks.npz")["points"]
    head = LandmarkHead(model)
    depth = float(track.extrinsics[0, 2, 3])
    problem = LandmarkProblem(head, points[:, head.ids.numpy()], np.ones(FRAMES, bool),
                              track.intrinsics, SIZE, depth, FitConfig.video(fit_focal=False))
    k = problem.n_expressions
    x_frames = torch.zeros(FRAMES, problem.n_frame, dtype=torch.float64)
    x_frames[:, :k] = torch.as_tensor(track.expressions)
    x_frames[:, k:k + 15] = torch.as_tensor(track.joint_rotations.reshape(FRAMES, 15))
    x_frames[:, k + 15:] = torch.as_tensor(track.translation) * 10
    x_shared = torch.as_tensor(track.shape[:problem.n_fit_shape], dtype=torch.float64)
    config = PhotometricConfig(density=0.05)
    names = [f"{t:06d}.png" for t in range(FRAMES)]
    images, masks = load_frames(str(root / "landmarks"), names, 128, 2.0)
    term = PhotometricTerm(model, problem, surface_samples(model, config.density), images, masks,
                           128, config)
    term.update(x_frames, x_shared)
    blocks = term.linearize(x_frames, x_shared)
    checks = [("frames", 3, k + 15), ("frames", 2, k + 1), ("frames", 5, k + 6), ("shared", None, 0)]
    for kind, frame, index in checks:
        step = 1e-3
        plus, minus = x_frames.clone(), x_frames.clone()
        plus_s, minus_s = x_shared.clone(), x_shared.clone()
        if kind == "frames":
            plus[frame, index] += step
            minus[frame, index] -= step
            analytic = float(blocks.gradient_frames[frame, index])
        else:
            plus_s[index] += step
            minus_s[index] -= step
            analytic = float(blocks.gradient_shared[index])
        numeric = (term.loss(plus, plus_s) - term.loss(minus, minus_s)) / (2 * step)
        assert abs(analytic - numeric) <= 0.15 * abs(numeric) + 1e-3, (kind, frame, index, analytic,
                                                                         numeric)


def test_samples_cover_the_face_and_the_eyes_densely():
    model = load_head_model("builtin")
    samples = surface_samples(model, 0.25)
    rest = (model.v_template[model.faces[samples.faces]] * samples.bary[..., None]).sum(dim=1)
    assert len(samples.faces) > 10_000 and torch.allclose(samples.bary.sum(1), torch.ones(1))
    assert (samples.bary >= 0).all()
    assert int(samples.on_eye.sum()) > 500
    assert float(rest[:, 2].min()) > float(model.v_template[:, 2].min()) + 0.02  # not the back


def test_one_photo_cannot_be_refined(tmp_path):
    import cv2
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    result = run_backend("prepare", "--image", str(photo), "--out", str(tmp_path / "out"),
                         "--refine", "photometric", "--progress", "quiet")
    assert result.returncode == 2
    assert "--refine photometric needs a video" in result.stderr
