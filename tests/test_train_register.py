"""Pose registration (backend/train/register.py) on the synthetic subject, whose tracking is exact:
a correction moves the head model exactly as the rigid motion says, registration against a
trained avatar takes a known pose error back out of the perturbed frames and leaves the exact
ones where they are, and a registered run's checkpoint, report and tracking file carry the poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.formats import tracking as tracking_format
from tests.conftest import train_synthetic

N_FRAMES = 12
PERTURBED = (2, 5, 8)  # training frames (10 of 12; the held-out pair sees unseen poses)


@pytest.fixture(scope="module", autouse=True)
def single_thread(torch_single_thread):
    """Tiny trainings: one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny avatar trained on the synthetic subject's exact tracking (no registration)."""
    folder = tmp_path_factory.mktemp("register")
    outputs = train_synthetic(folder, N_FRAMES, 128, 5,
                              {"iterations": 400, "preview_every": 0, "resolution_schedule": ((0.0, 1.0),),
                               "model": {"n_face_gaussians": 1500, "n_mouth_gaussians": 60}})
    return folder, outputs


def _vertices(trainer, frames) -> torch.Tensor:
    from backend.train.oneshot import posed_mesh

    return torch.stack([posed_mesh(trainer.head, trainer.data.tracking, i, "cpu") for i in frames])


def test_a_correction_moves_the_head_by_the_rigid_motion_it_names(trained):
    from backend.train import register

    _, outputs = trained
    trainer = outputs["trainer"]
    saved = trainer.data.tracking
    try:
        frames = [0, 5, 11]
        before = _vertices(trainer, frames)
        pivots = [register.frame_pivot(trainer, i) for i in frames]
        corrections = np.zeros((N_FRAMES, 6))
        corrections[:, :3] = [0.03, -0.02, 0.01]
        corrections[:, 3:] = [0.002, 0.004, -0.003]
        register.apply_corrections(trainer, corrections)
        after = _vertices(trainer, frames)
        for k, index in enumerate(frames):
            viewmat, _ = trainer.data.camera(index)
            camera = register.rigid_matrix(torch.as_tensor(corrections[index]), pivots[k])
            world = torch.linalg.inv(viewmat) @ camera @ viewmat
            expected = before[k] @ world[:3, :3].T + world[:3, 3]
            assert float((after[k] - expected).abs().max()) < 1e-5
            assert float((after[k] - before[k]).norm(dim=-1).max()) > 3e-3  # it did move
    finally:
        trainer.data.tracking = saved
        trainer.transforms = trainer._frame_transforms()


def test_registration_takes_a_pose_error_back_out(trained):
    from backend.train import register

    _, outputs = trained
    trainer = outputs["trainer"]
    saved = trainer.data.tracking
    try:
        exact = _vertices(trainer, range(N_FRAMES))
        error = np.zeros((N_FRAMES, 6))
        for index in PERTURBED:  # 2.9 deg of pitch, 1.7 of yaw, 4 mm sideways, 3 mm up
            error[index] = [0.05, -0.03, 0.0, 0.004, -0.003, 0.0]
        register.apply_corrections(trainer, error)
        perturbed = _vertices(trainer, range(N_FRAMES))
        trainer.config.register.every = 1
        trainer.config.register.window = 1
        trainer.config.register.iterations = 4
        trainer.config.register.scale = 1.0
        summary = register.register_poses(trainer, "frames")
        registered = _vertices(trainer, range(N_FRAMES))
    finally:
        trainer.data.tracking = saved
        trainer.transforms = trainer._frame_transforms()
    moved = lambda a: (a - exact).norm(dim=-1).mean(dim=-1)  # noqa: E731  (frames,) metres
    assert summary["keys"] == N_FRAMES and summary["cost_after"] < summary["cost_before"]
    perturbed_error, registered_error = moved(perturbed), moved(registered)
    # The tiny avatar is an imperfect model of the subject (24.6 dB held-out): registration
    # moves even exact training frames by up to 1.7 mm (mostly in depth); a 6-7 mm error goes.
    for index in PERTURBED:
        assert perturbed_error[index] > 5e-3, perturbed_error
        assert registered_error[index] < 2e-3, (index, registered_error)
    still = [i for i in range(10) if i not in PERTURBED]
    assert float(registered_error[still].max()) < 2e-3, registered_error


def test_a_registered_run_keeps_its_poses_in_checkpoint_report_and_tracking(tmp_path, trained):
    from backend.train.session import train_and_export

    folder, _ = trained
    outputs = train_and_export(str(folder / "data"), str(tmp_path / "run"), "tiny",
                               {"iterations": 40, "preview_every": 0,
                                "register": {"at": 0.5, "every": 3},
                                "model": {"n_face_gaussians": 600, "n_mouth_gaussians": 40}})
    report = outputs["report"]
    assert report["poses"] == "registered", report
    assert report["register_keys"] + report["register_left_out"] == 5, report  # frames 0, 3, 6, 9, 11
    assert report["register_keys"] >= 3, report
    written = tracking_format.read(outputs["tracking"])
    prepared = tracking_format.read(str(folder / "data" / "tracking.npz"))
    assert not np.array_equal(written.translation, prepared.translation)
    np.testing.assert_array_equal(written.expressions, prepared.expressions)
    np.testing.assert_array_equal(written.joint_rotations[:, 1:], prepared.joint_rotations[:, 1:])
    # Resuming restores the registered poses, not the prepared data's.
    resumed = train_and_export(str(folder / "data"), str(tmp_path / "run"), "tiny",
                               {"iterations": 44, "preview_every": 0,
                                "register": {"at": 0.5, "every": 3},
                                "model": {"n_face_gaussians": 600, "n_mouth_gaussians": 40}},
                               resume=True)
    assert resumed["trainer"].registration == outputs["trainer"].registration
    np.testing.assert_allclose(tracking_format.read(resumed["tracking"]).translation,
                               written.translation)


def test_a_long_clip_gets_a_larger_key_step():
    """The registration's time is linear in its key frames: at most about ``max_keys`` of them
    (cap12's 1337 frames keep every 4th; a 2-minute clip at 30 fps gets every 9th)."""
    from backend.train.config import make_config
    from backend.train.register import key_step

    config = make_config("cpu-fast").register
    assert key_step(1337, config) == 4 and key_step(918, config) == 4
    assert key_step(3600, config) == 9 and -(-3600 // 9) <= config.max_keys
