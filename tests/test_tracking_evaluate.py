"""``evaluate-tracking``: accuracy of a tracking file against a known truth, and the whole
measurement path (synth -> prepare -> evaluate) on a small rendered clip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from backend.cli.main import main
from backend.fileio import write_json
from backend.formats import examples
from backend.formats import tracking as tracking_format
from backend.headmodel import load_head_model
from backend.ingest.crop import crop_intrinsics
from backend.tracking.evaluate import evaluate
from tests.conftest import run_backend


@pytest.fixture(scope="module")
def model():
    return load_head_model("builtin")


def _truth_and_crops(model, frames=6, size=512):
    """A truth in source pixels and the same tracking expressed in crops of a 400-px box."""
    truth = examples.random_tracking(frames, model.n_expressions, size=size, seed=3)
    truth = dataclasses.replace(truth, shape=np.linspace(-0.5, 0.5, model.n_shape).astype(np.float32),
                                expression_names=list(model.expression_names))
    boxes = np.stack([np.linspace(240, 270, frames), np.full(frames, 250.0), np.full(frames, 400.0)], 1)
    focal = float(truth.intrinsics[0, 0, 0])
    crops = crop_intrinsics(focal, np.array([size / 2, size / 2]), boxes, size).astype(np.float32)
    return truth, dataclasses.replace(truth, intrinsics=crops), boxes


def test_a_tracking_evaluated_against_itself_has_no_error(model):
    truth, fitted, boxes = _truth_and_crops(model)
    report = evaluate(model, truth, fitted, boxes)
    assert report["reprojection_px"] < 1e-3 and report["vertex_mm"] < 1e-6
    assert max(report["rotation_deg"].values()) < 1e-4


def test_errors_are_measured_per_joint_and_in_head_space(model):
    truth, fitted, boxes = _truth_and_crops(model)
    rotations = fitted.joint_rotations.copy()
    rotations[:, 0, 1] += np.deg2rad(3.0)          # the whole head turned 3 degrees more
    turned = evaluate(model, truth, dataclasses.replace(fitted, joint_rotations=rotations), boxes)
    assert turned["rotation_deg"]["root"] == pytest.approx(3.0, abs=1e-3)
    assert turned["vertex_mm"] < 1e-6              # head space: the root turn is not a shape error
    assert turned["reprojection_px"] > 1.0         # but the landmarks move in the image
    shape = fitted.shape + 0.5
    other = evaluate(model, truth, dataclasses.replace(fitted, shape=shape), boxes)
    with torch.no_grad():   # independent reference: the neutral offset does not depend on pose here
        a = model(shape=torch.as_tensor(shape)[None]).vertices
        b = model(shape=torch.as_tensor(truth.shape)[None]).vertices
    expected = float((a - b).norm(dim=-1).mean()) * 1000
    assert other["vertex_mm"] == pytest.approx(expected, rel=0.05)
    assert max(other["rotation_deg"].values()) < 1e-4


def test_an_offset_of_the_whole_identity_changes_no_pixel_and_is_reported_apart(model):
    """Every vertex (and so every joint) moved by one vector, the translation moved back: the same
    images, a raw head-space error of that vector's length, no error once the offset is removed."""
    truth, fitted, boxes = _truth_and_crops(model)
    delta = np.array([0.0, 0.001, -0.002], np.float32)
    moved = dataclasses.replace(
        fitted, vertex_offsets=np.broadcast_to(delta, (model.n_vertices, 3)).copy(),
        translation=fitted.translation - delta)
    report = evaluate(model, truth, moved, boxes)
    assert report["reprojection_px"] < 1e-3
    assert max(report["rotation_deg"].values()) < 1e-4
    assert report["vertex_mm"] == pytest.approx(float(np.linalg.norm(delta)) * 1000, rel=1e-3)
    assert report["vertex_mm_aligned"] < 1e-3


def test_gaze_error_ignores_roll_about_the_optical_axis(model):
    truth, fitted, boxes = _truth_and_crops(model)
    rotations = truth.joint_rotations.copy()
    rotations[:, 3] = [0.0, 0.0, np.deg2rad(20.0)]    # left eye rolled about its axis only
    rotations[:, 4] = [0.0, np.deg2rad(5.0), 0.0]     # right eye looking 5 degrees aside
    truth = dataclasses.replace(truth, joint_rotations=np.where(
        np.arange(5)[None, :, None] >= 3, 0.0, truth.joint_rotations).astype(np.float32))
    report = evaluate(model, truth, dataclasses.replace(fitted, joint_rotations=rotations), boxes)
    assert report["rotation_deg"]["eye_L"] == pytest.approx(20.0, abs=1e-3)
    assert report["gaze_deg"]["eye_L"] < 1e-3
    assert report["gaze_deg"]["eye_R"] == pytest.approx(5.0, abs=1e-3)


def test_signed_gaze_errors_and_eyeball_centres(model):
    """Head unturned: an eye turned about +y looks towards +x (yaw > 0), about +x it looks down
    (pitch < 0); an eye turning in place leaves its eyeball centre where it was."""
    truth, fitted, boxes = _truth_and_crops(model)
    still = np.zeros_like(truth.joint_rotations)
    turned = still.copy()
    turned[:, 3] = [np.deg2rad(4.0), 0.0, 0.0]
    turned[:, 4] = [0.0, np.deg2rad(5.0), 0.0]
    report = evaluate(model, dataclasses.replace(truth, joint_rotations=still),
                      dataclasses.replace(fitted, joint_rotations=turned), boxes)
    assert report["gaze_signed_deg"]["eye_L"] == pytest.approx([0.0, -4.0], abs=1e-3)
    assert report["gaze_signed_deg"]["eye_R"] == pytest.approx([5.0, 0.0], abs=1e-3)
    assert np.abs([report["eye_centre_px"]["eye_L"], report["eye_centre_px"]["eye_R"]]).max() < 1e-3


def test_eyeball_centres_follow_the_head_not_the_gaze(model):
    truth, fitted, boxes = _truth_and_crops(model)
    moved = dataclasses.replace(fitted, translation=fitted.translation + np.array([0.001, 0, 0], np.float32))
    report = evaluate(model, truth, moved, boxes)
    expected = float(fitted.intrinsics[0, 0, 0]) * 0.001 / float(truth.extrinsics[0, 2, 3])
    dx, dy = report["eye_centre_px"]["eye_L"]
    assert dx > 0 and abs(dy) < 0.1 * dx
    assert report["eye_centre_px"]["eye_R"][0] == pytest.approx(dx, rel=0.2)
    assert dx == pytest.approx(expected, rel=0.3)


def test_cli_writes_a_report(model, tmp_path):
    truth, fitted, boxes = _truth_and_crops(model)
    tracking_format.write(tmp_path / "truth.npz", truth)
    (tmp_path / "data").mkdir()
    tracking_format.write(tmp_path / "data" / "tracking.npz", fitted)
    write_json(tmp_path / "data" / "prepare.json", {"crop_boxes": boxes.tolist()})
    assert main(["evaluate-tracking", "--truth", str(tmp_path / "truth.npz"), "--data",
                 str(tmp_path / "data"), "--json", str(tmp_path / "report.json"),
                 "--progress", "quiet"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["frames"] == 6 and len(report["per_frame"]["vertex_mm"]) == 6


@pytest.mark.slow
def test_rendered_subject_through_prepare_is_measured(tmp_path):
    """The acceptance measurement on a short clip: numbers exist and are in a sane range."""
    synth, data = tmp_path / "synth", tmp_path / "data"
    result = run_backend("synth", "--out", str(synth), "--frames", "8", "--size", "256")
    assert result.returncode == 0, result.stderr
    result = run_backend("prepare", "--video", str(synth / "video.mp4"), "--out", str(data),
                         "--size", "256", "--focal", str(2.1 * 256), "--progress", "quiet")
    assert result.returncode == 0, result.stderr
    landmarks = np.load(data / "landmarks.npz")
    assert landmarks["points"].shape == (8, 478, 2) and landmarks["found"].all()
    result = run_backend("evaluate-tracking", "--truth", str(synth / "tracking.npz"), "--data",
                         str(data), "--json", str(tmp_path / "r.json"), "--progress", "quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    print("rendered 8 frames at 256:", {k: report[k] for k in ("reprojection_px", "rotation_deg",
                                                               "vertex_mm")})
    assert report["frames"] == 8
    assert report["reprojection_px"] < 8.0 and report["rotation_deg"]["root"] < 6.0
    assert report["vertex_mm"] < 15.0


def test_a_truth_of_another_clip_is_a_clear_error(model, tmp_path, capsys):
    truth, fitted, boxes = _truth_and_crops(model)
    tracking_format.write(tmp_path / "truth.npz", tracking_format.slice_frames(truth, slice(0, 4)))
    (tmp_path / "data").mkdir()
    tracking_format.write(tmp_path / "data" / "tracking.npz", fitted)
    write_json(tmp_path / "data" / "prepare.json", {"crop_boxes": boxes.tolist()})
    code = main(["evaluate-tracking", "--truth", str(tmp_path / "truth.npz"), "--data",
                 str(tmp_path / "data"), "--progress", "quiet"])
    assert code == 2 and "4 frames" in capsys.readouterr().err


@pytest.mark.slow
def test_accuracy_bench_prints_every_metric():
    result = run_backend("bench", "track-accuracy", "--quick")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["case"] for r in records} == {"synth-512", "synth-512-known-focal",
                                            "synth-512-known-focal-photometric",
                                            "synth-512-eye-contact-photometric"}
    assert {r["unit"] for r in records} == {"px", "deg", "mm", "fps"} and len(records) == 42
    assert {r["metric"] for r in records if r["unit"] == "mm"} == {"vertices", "vertices aligned"}
    assert [r["metric"] for r in records if r["unit"] == "fps"] == ["refine speed"] * 2
    assert all(np.isfinite(r["value"]) and r["value"] >= 0 for r in records)
