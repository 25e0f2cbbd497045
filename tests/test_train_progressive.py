"""The progressive (3DToonify) schedule: real frames, then geometry on near-frontal stylized
frames, then colours on all stylized frames, on a tiny synthetic subject."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from backend.stylize.frontal import frontal_frame_indices
from tests.conftest import run_backend

ITERATIONS = 36  # phases of 18, 11 and 7 steps
COLOURS = ("sh_dc", "sh_rest", "delta_sh")
GEOMETRY = ("means", "log_scales", "quats", "opacity_logits", "delta_means", "delta_log_scales",
            "delta_quats", "delta_opacity_logits")


@pytest.fixture(scope="module", autouse=True)
def single_thread(torch_single_thread):
    """Every test here trains tiny avatars: one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """16 frames at 32 px whose head turns past 0.2 rad, with a recoloured 'stylized' copy."""
    from backend.synth.render import synthesize

    folder = tmp_path_factory.mktemp("progressive") / "data"
    synthesize(str(folder), n_frames=16, size=32, seed=3, video=False)
    (folder / "stylized").mkdir()
    for path in sorted((folder / "frames").glob("*.png")):
        rgb = np.asarray(Image.open(path)).astype(np.int32)
        styled = (rgb[..., [2, 0, 1]] // 64) * 85  # channels rotated and posterized to 4 levels
        Image.fromarray(styled.astype(np.uint8)).save(folder / "stylized" / path.name)
    return folder


def test_phases_adapt_geometry_then_colours_only(subject, tmp_path):
    from backend.train.cli import progressive_overrides
    from backend.train.session import train_and_export

    torch.manual_seed(0)
    ends, losses = {}, {}

    def record(trainer, loss):
        phase = trainer.phase_at(trainer.step - 1)
        ends[phase.name] = trainer.model.tensors()  # the last write is the end of the phase
        losses.setdefault(phase.name, []).append(loss)

    overrides = {**progressive_overrides(0.2), "iterations": ITERATIONS, "preview_every": 0,
                 "model": {"n_face_gaussians": 500, "n_mouth_gaussians": 40},
                 "densify": {"start": 6, "every": 6, "stop": 30}}
    outputs = train_and_export(str(subject), str(tmp_path / "run"), "tiny", overrides, on_step=record)
    trainer = outputs["trainer"]
    assert list(ends) == ["photoreal", "geometry", "texture"] and trainer.step == ITERATIONS
    photoreal, geometry, texture = ends["photoreal"], ends["geometry"], ends["texture"]
    assert photoreal["means"].shape == texture["means"].shape  # no densification after phase 1
    for name in COLOURS:
        assert torch.equal(photoreal[name], geometry[name]), name
    for name in GEOMETRY:
        assert torch.equal(geometry[name], texture[name]), name
    assert not torch.equal(photoreal["means"], geometry["means"])
    assert not torch.equal(photoreal["delta_means"], geometry["delta_means"])
    assert not torch.equal(geometry["sh_dc"], texture["sh_dc"])
    # Phase 3 fits the stylized colours that phase 2 could not.
    assert np.mean(losses["texture"][-3:]) < np.mean(losses["geometry"][:3])
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert report["split"] == "held-out" and np.isfinite(report["psnr"])


def test_geometry_phase_uses_near_frontal_training_frames_only(subject):
    from backend.train.cli import progressive_overrides
    from backend.train.config import make_config
    from backend.train.data import FrameData
    from backend.train.session import load_head_for
    from backend.train.trainer import Trainer

    data = FrameData(str(subject), images=("frames", "stylized"))
    config = make_config("tiny", **progressive_overrides(0.2))
    trainer = Trainer(data, str(subject / "unused"), config, load_head_for(data, None, "cpu"))
    pool = trainer.frame_pool(config.phases[1])
    # The trainer's yaw (camera-aware) agrees with the stylize helper's (root joint) here,
    # where the synthetic camera is fixed and frontal.
    expected = np.intersect1d(frontal_frame_indices(data.tracking, 0.2), data.train)
    assert np.array_equal(np.sort(pool), expected)
    assert 0 < len(pool) < len(data.train)
    assert np.array_equal(trainer.frame_pool(config.phases[2]), data.train)


def test_train_command_progressive_flag(subject, tmp_path):
    result = run_backend("train", "--data", str(subject), "--out", str(tmp_path / "run"), "--preset", "tiny",
                         "--iters", "6", "--progressive", "--frontal-yaw", "0.15", "--device", "cpu",
                         "--progress", "quiet", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    config = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["config"]
    assert [p["images"] for p in config["phases"]] == ["frames", "stylized", "stylized"]
    assert config["phases"][1]["max_abs_yaw"] == 0.15
    assert (tmp_path / "run" / "avatar.npz").exists()
    missing = run_backend("train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "r2"),
                          "--progressive", "--progress", "quiet")
    assert missing.returncode != 0
