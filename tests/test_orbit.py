"""Turntables and novel-view coverage (``backend/export/orbit.py``, ``render --orbit``).

Coverage is checked on an avatar made of the head mesh itself (complete: ~100%; its x > 0 half
deleted: low on the side the camera sees at +45 deg), and on a tiny avatar trained for real on
the synthetic subject (a floor at +-45 deg, a strip of the expected size, the command's files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.export import orbit as orbit_module
from backend.export.orbit import Orbit, look_at_viewmat, orbit_coverage
from backend.export.reenact import preview_frames
from backend.formats import avatar as avatar_format
from backend.formats import tracking as tracking_format
from tests.conftest import run_backend

N_EXPRESSIONS = 5


@pytest.fixture(scope="module", autouse=True)
def single_thread(torch_single_thread):
    """Tiny renders and a tiny training: one torch thread (tests/conftest.py)."""


def _without(avatar: avatar_format.Avatar, drop: np.ndarray) -> avatar_format.Avatar:
    """The avatar without the Gaussians where ``drop`` (N,) is true."""
    keep = ~drop
    per_gaussian = {name: getattr(avatar, name)[keep] for name in
                    ("means", "log_scales", "quats", "opacity_logits", "sh", "mouth", "lbs_weights")}
    deltas = {name: getattr(avatar, name)[:, keep] for name in
              ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits", "delta_sh")}
    return avatar_format.Avatar(**{**avatar.__dict__, **per_gaussian, **deltas})


@pytest.fixture(scope="module")
def mesh_avatar() -> avatar_format.Avatar:
    """An avatar whose opaque Gaussians tile the built-in head mesh: one round Gaussian per
    triangle corner and centre, as wide as the triangle."""
    from backend.headmodel import load_head_model

    head = load_head_model("builtin", n_expressions=N_EXPRESSIONS)
    vertices, faces = head.v_template.float(), head.faces.long()
    corners = vertices[faces]                                       # (F, 3, 3)
    centres = corners.mean(dim=1)
    size = (corners - centres[:, None]).norm(dim=-1).max(dim=1).values
    means = torch.cat([centres, vertices])
    sigma = torch.cat([size, torch.zeros(len(vertices)).scatter_reduce(
        0, faces.reshape(-1), size.repeat_interleave(3), "amax", include_self=False)])
    weights = torch.cat([head.lbs_weights[faces[:, 0]], head.lbs_weights]).float()
    n, k = len(means), N_EXPRESSIONS
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return avatar_format.Avatar(
        means=means.numpy(), log_scales=np.log(sigma.clamp_min(1e-4)).numpy()[:, None].repeat(3, 1),
        quats=np.tile(np.float32([1, 0, 0, 0]), (n, 1)), opacity_logits=np.full(n, 6.0, np.float32),
        sh=np.full((n, 1, 3), 0.3, np.float32), mouth=np.zeros(n, bool), lbs_weights=weights.numpy(),
        delta_means=zeros(k, n, 3), delta_log_scales=zeros(k, n, 3), delta_quats=zeros(k, n, 4),
        delta_opacity_logits=zeros(k, n), delta_sh=zeros(k, n, 1, 3),
        joint_positions=head(expression=None).rest_joints[0].numpy(),
        joint_parents=np.asarray(head.parents, np.int32), mesh_vertices=vertices.numpy(),
        mesh_faces=faces.numpy().astype(np.int32),
        mesh_expression_dirs=head.exprdirs.permute(2, 0, 1).numpy(),
        mesh_lbs_weights=head.lbs_weights.numpy(), expression_names=head.expression_names)


def test_camera_looks_at_the_pivot_with_positive_yaw_on_the_subjects_left():
    frontal = look_at_viewmat(torch.tensor([0.0, 0.0, 0.6]), torch.zeros(3))
    assert torch.allclose(frontal[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])))
    pose = orbit_module.OrbitPose(np.zeros(N_EXPRESSIONS), np.zeros((5, 3)), 0.6, (200.0, 200.0),
                                  64, 48, None)
    pivot = torch.tensor([0.01, 0.02, 0.03])
    left_cheek = pivot + torch.tensor([0.08, 0.0, 0.0])
    for yaw, expected_u in ((0, 32 + 200 * 0.08 / 0.6), (90, 32.0)):
        camera = orbit_module.orbit_camera(pose, pivot, yaw)
        cam = camera.viewmats[0, :3, :3] @ left_cheek + camera.viewmats[0, :3, 3]
        u = 200 * cam[0] / cam[2] + 32
        assert float(u) == pytest.approx(expected_u, abs=1e-3), yaw
    # At +90 deg the left cheek faces the camera: 8 cm nearer than the pivot.
    assert float(cam[2]) == pytest.approx(0.6 - 0.08, abs=1e-5)
    at_pivot = camera.viewmats[0, :3, :3] @ pivot + camera.viewmats[0, :3, 3]
    assert torch.allclose(at_pivot[:2], torch.zeros(2), atol=1e-6)


def test_a_complete_surface_is_covered_and_a_deleted_half_is_not(mesh_avatar):
    whole = orbit_coverage(mesh_avatar, yaws=(-45, 0, 45), size=96)
    assert whole["coverage_-45"] >= 0.97 and whole["coverage_0"] >= 0.97, whole
    assert whole["coverage_45"] >= 0.97 and whole["size"] == [96, 96] and whole["frame"] is None
    assert whole["surface_min"] >= 0.97, whole
    half = orbit_coverage(_without(mesh_avatar, mesh_avatar.means[:, 0] > 0), yaws=(-45, 45), size=96)
    # +45 deg shows the subject's left (x > 0): gone. Through the hole the inside of the right
    # half shows, opaque (alpha coverage stays high) but far behind the surface.
    assert half["surface_45"] < 0.3 and half["surface_-45"] >= 0.95, half
    assert half["surface_min"] == half["surface_45"]
    assert half["coverage_45"] < whole["coverage_45"] - 0.03, half


def test_the_silhouette_is_the_head_above_the_neck_cut(mesh_avatar):
    from backend.headmodel.regions import cut_height

    orbit = Orbit(mesh_avatar, size=96)
    assert len(orbit.head_faces) < len(orbit.head.faces)
    assert float(orbit.vertices[orbit.head_faces.unique(), 1].min()) >= cut_height(
        orbit.head, torch.as_tensor(mesh_avatar.mesh_vertices)) - 1e-6
    # The Gaussians reach below the cut (the neck), the silhouette does not.
    inside, depth = orbit.silhouette(0)
    assert torch.isfinite(depth[inside]).all() and torch.isinf(depth[~inside]).all()
    assert 0.5 < float(depth[inside].min()) < 0.65  # the face, in front of the pivot at 0.65 m
    alpha = orbit.render(0).alpha[0, ..., 0]
    covered_rows = (alpha >= 0.9).any(dim=1).nonzero()[:, 0]
    silhouette_rows = inside.any(dim=1).nonzero()[:, 0]
    assert int(covered_rows.max()) > int(silhouette_rows.max()) + 2


def test_preview_is_at_most_60_held_out_frames():
    assert preview_frames(1).tolist() == [0]
    assert preview_frames(20).tolist() == [18, 19]
    held_out = preview_frames(765)
    assert len(held_out) == 60 and held_out[0] == 765 - 77 and np.all(np.diff(held_out) == 1)


# -- a tiny avatar trained on the synthetic subject --------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from backend.synth.render import synthesize
    from backend.train.session import train_and_export

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("orbit")
    synthesize(str(folder / "data"), n_frames=16, size=64, seed=3, video=False)
    train_and_export(str(folder / "data"), str(folder / "run"), "tiny", {"iterations": 120})
    return folder / "run" / "avatar.npz", folder / "data" / "tracking.npz"


@pytest.mark.slow
def test_trained_avatar_covers_the_head_at_45_degrees(trained):
    avatar_path, tracking_path = trained
    report = orbit_coverage(str(avatar_path), str(tracking_path), frame=15)
    assert report["size"] == [64, 64] and report["frame"] == 15
    # Measured 0.95-0.99 and 0.79-0.89 (the performance turns the head less to its left).
    assert report["coverage_-45"] >= 0.65 and report["coverage_45"] >= 0.65, report
    avatar = avatar_format.read(avatar_path)
    half = orbit_coverage(_without(avatar, avatar.means[:, 0] > 0), str(tracking_path), frame=15)
    # Measured: alpha 0.79 -> 0.31 and 0.89 -> 0.64 (a denser avatar's inside shows through the
    # hole), surface 0.46 -> 0.13 and 0.49 -> 0.18.
    assert half["surface_45"] < 0.3 and half["surface_45"] < report["surface_45"] - 0.2, half
    assert half["coverage_45"] < report["coverage_45"] - 0.15, (half, report)


@pytest.mark.slow
def test_render_orbit_writes_video_strip_and_coverage(trained, tmp_path):
    avatar_path, tracking_path = trained
    out = tmp_path / "turntable.mp4"
    done = run_backend("render", "--avatar", str(avatar_path), "--orbit", "--tracking",
                       str(tracking_path), "--frame", "3", "--out", str(out), "--size", "48",
                       "--progress", "jsonl", env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "turntable.json").read_text())
    assert result["coverage"]["coverage_45"] == report["coverage_45"] >= 0.6, report
    with Image.open(tmp_path / "turntable.png") as strip:
        assert strip.size == (7 * 48, 48)
        views = np.asarray(strip.convert("RGB"), np.float32).reshape(48, 7, 48, 3)
    # Every view shows the head (darker than the white background) in its middle.
    assert (views[12:36, :, 12:36].mean(axis=(0, 2, 3)) < 200).all()
    import av

    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 2 * len(orbit_module.video_yaws()) - 2
    tracking = tracking_format.read(tracking_path)
    assert report["frame"] == 3 and tracking.n_frames == 16
