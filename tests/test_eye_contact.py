"""Gaze calibration from eye-contact frames: the look-at geometry and the constant correction."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from backend.errors import InputError
from backend.formats.tracking import Tracking
from backend.headmodel import load_head_model
from backend.headmodel.gaze import camera_centres, look_at_eye_rotations
from backend.synth.render import camera
from backend.tracking.evaluate import gaze_errors_deg
from backend.tracking.eye_contact import calibrate_eye_contact, parse_frame_range


@pytest.fixture(scope="module")
def model():
    return load_head_model("builtin")


def _pose(model, joint_rotations, translation=None):
    frames = len(joint_rotations)
    with torch.no_grad():
        return model(joint_rotations=torch.as_tensor(joint_rotations, dtype=torch.float32),
                     translation=torch.zeros(frames, 3) if translation is None else
                     torch.as_tensor(translation, dtype=torch.float32),
                     expression=torch.zeros(frames, model.n_expressions))


def _miss_mm(posed, target):
    """Distance of ``target`` (T, 3) from each eye's optical-axis line, in mm. -> (T, 2)."""
    result = []
    for eye in (3, 4):
        centre = posed.joints[:, eye].double().numpy()
        axis = posed.transforms[:, eye, :3, 2].double().numpy()
        offset = target - centre
        along = (offset * axis).sum(axis=1, keepdims=True)
        assert (along > 0).all(), "the eye looks away from the target"
        result.append(np.linalg.norm(offset - along * axis, axis=1) * 1000)
    return np.stack(result, axis=1)


def test_look_at_rotations_aim_both_eyes_at_the_point(model):
    rng = np.random.default_rng(4)
    frames = 6
    rotations = np.zeros((frames, 5, 3))
    rotations[:, :2] = rng.normal(scale=0.2, size=(frames, 2, 3))      # root and neck
    translation = rng.normal(scale=0.02, size=(frames, 3))
    posed = _pose(model, rotations, translation)
    target = np.array([0.05, -0.1, 0.6]) + rng.normal(scale=0.05, size=(frames, 3))
    eyes = look_at_eye_rotations(posed.transforms.double(), posed.joints.double(), model.parents,
                                 torch.from_numpy(target))
    rotations[:, 3:5] = eyes.numpy()
    aimed = _pose(model, rotations, translation)
    assert _miss_mm(aimed, target).max() < 1e-3
    # no roll: each eye turns about an axis perpendicular to its rest optical axis (+Z)
    assert np.abs(eyes.numpy()[..., 2]).max() < 1e-9


def _tracking(model, joint_rotations, viewmat, intrinsics):
    frames = len(joint_rotations)
    return Tracking(
        fps=25.0, frame_ids=np.arange(frames), timestamps=np.arange(frames) / 25.0,
        image_size=np.array([256, 256]), expressions=np.zeros((frames, model.n_expressions), np.float32),
        joint_rotations=joint_rotations.astype(np.float32), translation=np.zeros((frames, 3), np.float32),
        intrinsics=np.repeat(intrinsics[None], frames, 0), extrinsics=np.repeat(viewmat[None], frames, 0),
        valid=np.ones(frames, bool), shape=np.zeros(model.n_shape, np.float32),
        expression_names=list(model.expression_names), head_model={"kind": "builtin"},
        source={"kind": "test"})


def _subject_with_eye_contact(model, frames=12, contact=5, seed=0, still=False):
    """True joint rotations: head motion (none during the contact if ``still``), the eyes on the
    lens for ``contact`` frames, then free."""
    rng = np.random.default_rng(seed)
    rotations = np.zeros((frames, 5, 3))
    rotations[:, 0] = rng.normal(scale=0.15, size=(frames, 3))
    if still:
        rotations[:contact, 0] = rotations[0, 0]
    rotations[:, 3:5, :2] = rng.normal(scale=0.2, size=(frames, 2, 2))
    head_centre = _pose(model, rotations[:1] * 0).joints[0, 1].numpy()
    viewmat, intrinsics = camera(256, head_centre)
    posed = _pose(model, rotations)
    lens = camera_centres(torch.from_numpy(viewmat).double()[None].expand(frames, -1, -1))
    eyes = look_at_eye_rotations(posed.transforms.double(), posed.joints.double(), model.parents, lens)
    rotations[:contact, 3:5] = eyes.numpy()[:contact]
    return rotations, viewmat, intrinsics


@pytest.mark.parametrize("still, tolerance", [(True, 0.02), (False, 0.5)])
def test_eye_contact_removes_a_constant_gaze_offset(model, still, tolerance):
    """Exact in the contact frames when the head holds still on the lens. Elsewhere, and in the
    contact frames of a moving head, the roll about the lens direction (which one direction
    cannot show, and which is left out) costs a few tenths of a degree."""
    truth_rotations, viewmat, intrinsics = _subject_with_eye_contact(model, still=still)
    truth = _tracking(model, truth_rotations, viewmat, intrinsics)
    # a fit whose eyes are off by one constant turn each (what a misplaced eye socket gives)
    offsets = {3: Rotation.from_euler("y", 4.0, degrees=True),
               4: Rotation.from_euler("x", -3.0, degrees=True)}
    fitted_rotations = truth_rotations.copy()
    for joint, offset in offsets.items():
        fitted_rotations[:, joint] = (offset * Rotation.from_rotvec(truth_rotations[:, joint])).as_rotvec()
    fitted = _tracking(model, fitted_rotations, viewmat, intrinsics)
    before = gaze_errors_deg(fitted.joint_rotations, truth.joint_rotations)
    assert before[:, 0].mean() > 3.5 and before[:, 1].mean() > 2.5

    corrected, report = calibrate_eye_contact(model, fitted, 0, 4)
    after = gaze_errors_deg(corrected.joint_rotations, truth.joint_rotations)
    assert after[:5].max() < tolerance and after.max() < 0.5, after
    assert report["frames_used"] == {"eye_L": 5, "eye_R": 5}
    assert report["frames_narrowed"] == {"eye_L": [], "eye_R": []}
    assert report["correction_deg"]["eye_L"] == pytest.approx(4.0, abs=0.1)
    assert report["correction_deg"]["eye_R"] == pytest.approx(3.0, abs=0.1)
    assert max(report["spread_deg"].values()) < tolerance
    np.testing.assert_array_equal(corrected.joint_rotations[:, :3], fitted.joint_rotations[:, :3])


def test_eye_contact_leaves_out_frames_with_the_eyes_narrowed(model):
    """A blink inside the range: the fit's gaze there is off by more than the constant (a lid over
    the iris), so those frames must not pull the correction."""
    truth_rotations, viewmat, intrinsics = _subject_with_eye_contact(model, still=True)
    offset = Rotation.from_euler("x", 4.0, degrees=True)
    blink_error = Rotation.from_euler("x", -8.0, degrees=True)
    fitted_rotations = truth_rotations.copy()
    for joint in (3, 4):
        turned = offset * Rotation.from_rotvec(truth_rotations[:, joint])
        fitted_rotations[:, joint] = turned.as_rotvec()
        fitted_rotations[1:3, joint] = (blink_error * turned[1:3]).as_rotvec()
    fitted = _tracking(model, fitted_rotations, viewmat, intrinsics)
    names = list(model.expression_names)
    fitted.expressions[1:3, [names.index("blink_L"), names.index("blink_R")]] = 0.9
    truth = _tracking(model, truth_rotations, viewmat, intrinsics)

    corrected, report = calibrate_eye_contact(model, fitted, 0, 4)
    assert report["frames_narrowed"] == {"eye_L": [1, 2], "eye_R": [1, 2]}
    assert report["frames_used"] == {"eye_L": 3, "eye_R": 3}
    after = gaze_errors_deg(corrected.joint_rotations, truth.joint_rotations)
    assert np.delete(after, [1, 2], axis=0).max() < 0.5, after
    # the same frames counted as open would have moved every frame by about 3 deg
    fitted.expressions[:] = 0
    _, blind = calibrate_eye_contact(model, fitted, 0, 4)
    assert blind["frames_narrowed"] == {"eye_L": [], "eye_R": []}
    assert abs(blind["correction_deg"]["eye_L"] - report["correction_deg"]["eye_L"]) > 2.0

    fitted.expressions[:5, [names.index("blink_L"), names.index("blink_R")]] = 0.9
    with pytest.raises(InputError, match="narrowed or closed in every frame"):
        calibrate_eye_contact(model, fitted, 0, 4)


def test_eye_contact_warns_when_the_eyes_were_not_on_the_lens(model, caplog):
    truth_rotations, viewmat, intrinsics = _subject_with_eye_contact(model, contact=0)
    fitted = _tracking(model, truth_rotations, viewmat, intrinsics)
    with caplog.at_level(logging.WARNING):
        _, report = calibrate_eye_contact(model, fitted, 0, 6)
    assert max(report["spread_deg"].values()) > 4.0
    assert "looking into the lens" in caplog.text


def test_eye_contact_input_errors(model):
    assert parse_frame_range("3-7") == (3, 7) and parse_frame_range("5") == (5, 5)
    for text in ("x", "7-3", "-2", "1-2-3", ""):
        with pytest.raises(InputError, match="--eye-contact"):
            parse_frame_range(text)
    truth_rotations, viewmat, intrinsics = _subject_with_eye_contact(model)
    fitted = _tracking(model, truth_rotations, viewmat, intrinsics)
    with pytest.raises(InputError, match="only 12 frames"):
        calibrate_eye_contact(model, fitted, 10, 12)
    fitted.valid[:5] = False
    with pytest.raises(InputError, match="no frame in that range has a valid fit"):
        calibrate_eye_contact(model, fitted, 0, 4)
