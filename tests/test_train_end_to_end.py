"""A tiny synthetic subject, trained for real: the loss falls, held-out PSNR beats a mean-colour
baseline, Eq. 2 consistency holds, resume works, and the exports are readable.

The fixture (16 frames at 32 px, 50 steps, ~640 Gaussians) and the first test are the quick
end-to-end check (well under a minute on an idle 2-core machine); the rest are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.formats import animate
from backend.formats import avatar as avatar_format
from backend.formats import tracking as tracking_format
from tests.conftest import run_backend, train_synthetic

ITERATIONS = 50
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # see single_thread()


@pytest.fixture(scope="module", autouse=True)
def single_thread(torch_single_thread):
    """Every test here trains tiny avatars: one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subject")
    small = {"n_face_gaussians": 600, "n_mouth_gaussians": 40}
    outputs = train_synthetic(folder, 16, 32, 3, {"iterations": ITERATIONS, "preview_every": 30,
                                                  "model": small})
    return folder, outputs


def test_loss_falls_and_beats_the_mean_colour_baseline(trained):
    folder, outputs = trained
    losses = np.array([value for _, value in outputs["trainer"].history])
    assert len(losses) == ITERATIONS
    assert losses[-10:].mean() < 0.6 * losses[:5].mean()
    report = json.loads((folder / "run" / "eval" / "report.json").read_text())
    assert report["psnr"] >= report["baseline_psnr"] + 6.0, report
    assert report["split"] == "held-out" and report["frames"] == 2
    assert (folder / "run" / "loss.png").stat().st_size > 1000
    assert list((folder / "run" / "previews").glob("step_*.png"))


@pytest.mark.slow
def test_consistency_keeps_init_where_the_surface_does_not_move(trained):
    _, outputs = trained
    model = outputs["trainer"].model
    still = model.consistency == 0  # (N, K): nearest surface point does not move in blendshape k
    moving = model.consistency > 0.2
    assert still.any() and moving.any()
    for name, init in (("means", model.init_means), ("quats", model.init_quats)):
        assert torch.equal(model.deltas(name)[still], init[still])
        assert not torch.equal(model.deltas(name)[moving], init[moving])
    assert torch.equal(model.deltas("sh_dc")[still], torch.zeros_like(model.deltas("sh_dc")[still]))
    # ...while the optimized variable itself did move there (it is masked, not frozen).
    assert model.params["delta_sh"].abs().sum() > 0


@pytest.mark.slow
def test_avatar_file_matches_the_trainer(trained):
    folder, outputs = trained
    model = outputs["trainer"].model
    avatar = avatar_format.read(folder / "run" / "avatar.npz")
    assert avatar.n_gaussians == model.n_gaussians
    tracking = tracking_format.read(folder / "data" / "tracking.npz")
    index = tracking.n_frames - 1
    expected = animate.posed_means(avatar, tracking.expressions[index], tracking.joint_rotations[index],
                                   tracking.translation[index])
    trainer = outputs["trainer"]
    with torch.no_grad():
        posed = model.skin(model.blend(torch.as_tensor(tracking.expressions[index])),
                           trainer.transforms[index])
    assert np.abs(posed.means.numpy() - expected).max() < 2e-4  # float16 deltas in the file
    assert not avatar.delta_means[:, avatar.mouth].any()


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(trained):
    from backend.train.session import train_and_export

    folder, _ = trained
    outputs = train_and_export(str(folder / "data"), str(folder / "run"), "tiny",
                               {"iterations": ITERATIONS + 10}, resume=True)
    assert outputs["trainer"].step == ITERATIONS + 10
    assert len(outputs["trainer"].history) == ITERATIONS + 10


@pytest.mark.slow
def test_render_and_export_commands(trained):
    folder, _ = trained
    avatar = folder / "run" / "avatar.npz"
    video = folder / "reenact.mp4"
    result = run_backend("render", "--avatar", str(avatar), "--tracking",
                         str(folder / "data" / "tracking.npz"), "--out", str(video), "--size", "32",
                         env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert video.stat().st_size > 500
    ply = folder / "frame.ply"
    result = run_backend("export", "--avatar", str(avatar), "--out", str(ply), "--tracking",
                         str(folder / "data" / "tracking.npz"), "--frame", "3", env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    from .test_export_ply import read_ply

    table = read_ply(str(ply))
    assert len(table["x"]) == avatar_format.read(avatar).n_gaussians


@pytest.mark.slow
def test_cancelled_run_leaves_a_usable_checkpoint(trained, tmp_path):
    from backend.train.config import make_config
    from backend.train.data import FrameData
    from backend.train.session import load_head_for
    from backend.train.trainer import CHECKPOINT, Trainer, load_checkpoint_file

    folder, _ = trained
    data = FrameData(str(folder / "data"))
    head = load_head_for(data, None, "cpu")
    config = make_config("tiny", iterations=50, model={"n_face_gaussians": 300, "n_mouth_gaussians": 20})
    trainer = Trainer(data, str(tmp_path), config, head)
    trainer.initialize()

    def cancel(trainer, loss):
        if trainer.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(on_step=cancel)
    state = load_checkpoint_file(str(tmp_path / CHECKPOINT), "cpu")
    assert state["step"] == 3
    resumed = Trainer(data, str(tmp_path), config, head)
    resumed.load_checkpoint(str(tmp_path / CHECKPOINT))
    assert resumed.step == 3 and resumed.model.n_gaussians == trainer.model.n_gaussians


@pytest.mark.slow
def test_hooks_run_around_every_step_and_are_checkpointed(trained, tmp_path):
    """The trainer calls each hook (hooks.py) at the same points, whatever the hook is, and saves
    and restores its state under its name."""
    from backend.train.config import make_config
    from backend.train.data import FrameData
    from backend.train.hooks import TrainingHook
    from backend.train.session import load_head_for
    from backend.train.strategy import DensityStrategy
    from backend.train.trainer import CHECKPOINT, Trainer, load_checkpoint_file

    class Recorder(TrainingHook):
        name = "recorder"

        def __init__(self):
            self.calls = []

        def initialize(self, model, frame_transforms):
            self.calls.append("initialize")

        def background(self, background, generator):
            self.calls.append("background")
            return background

        def step_pre_backward(self, model, optimizer, info, step):
            self.calls.append("pre")

        def extra_loss(self, model):
            self.calls.append("loss")
            return model.params["means"].sum() * 0.0

        def step_post_backward(self, model, optimizer, info, step, refresh=None, generator=None,
                               densify=True):
            self.calls.append("post")
            return {}

        def state_dict(self):
            return {"steps": torch.tensor(self.calls.count("post"))}

        def load_state_dict(self, state):
            self.calls.append(("load", int(state["steps"])))

    recorders = []

    def hooks(config, data, head):
        recorders.append(Recorder())
        return [DensityStrategy(config.densify), recorders[-1]]

    folder, _ = trained
    data = FrameData(str(folder / "data"))
    head = load_head_for(data, None, "cpu")
    config = make_config("tiny", iterations=3, model={"n_face_gaussians": 300, "n_mouth_gaussians": 20})
    trainer = Trainer(data, str(tmp_path), config, head, hooks=hooks)
    trainer.initialize()
    trainer.run()
    assert recorders[0].calls == ["initialize"] + ["background", "pre", "loss", "post"] * 3
    state = load_checkpoint_file(str(tmp_path / CHECKPOINT), "cpu")
    assert int(state["recorder"]["steps"]) == 3 and "grad2d" in state["strategy"]
    resumed = Trainer(data, str(tmp_path), config, head, hooks=hooks)
    resumed.load_checkpoint(str(tmp_path / CHECKPOINT))
    assert recorders[1].calls == [("load", 3)] and resumed.step == 3
