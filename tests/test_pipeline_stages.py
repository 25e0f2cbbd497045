"""The resumable-stage mechanism of ``build``: skip complete stages, redo changed or corrupted
ones (and everything after them), keep earlier outputs when a stage fails."""

from __future__ import annotations

import os

import pytest

from backend.errors import InputError, ToonSplatError
from backend.fileio import ensure_writable_folder
from backend.formats import examples, tracking
from backend.pipeline.stages import Stage, StageError, run_stages
from backend.progress import PipelineProgress


class Recorder:
    """Stages that write real files and count how often they ran."""

    def __init__(self, root):
        self.root = str(root)
        self.runs: list[str] = []
        self.fail: str | None = None

    def stage(self, name: str, param: str = "a") -> Stage:
        def run(ctx):
            self.runs.append(name)
            if self.fail == name:
                raise InputError(f"{name} cannot read its input")
            path = os.path.join(self.root, f"{name}.npz")
            tracking.write(path, examples.random_tracking(n_frames=4, seed=len(self.runs)))
            return [f"{name}.npz"], {"frames": 4}

        def validate(ctx):
            tracking.read(os.path.join(self.root, f"{name}.npz"))

        return Stage(name, run, validate, lambda ctx: {"param": param})


def _run(recorder, stages, force=()):
    progress = PipelineProgress("quiet", total_weight=len(stages))
    return run_stages(recorder.root, stages, None, progress, set(force))


def test_second_run_skips_everything(tmp_path):
    rec = Recorder(tmp_path)
    stages = [rec.stage("prepare"), rec.stage("train")]
    _run(rec, stages)
    outcomes = _run(rec, stages)
    assert rec.runs == ["prepare", "train"]
    assert [o.skipped for o in outcomes] == [True, True]
    assert outcomes[0].metrics == {"frames": 4}


def test_corrupted_intermediate_is_redone_with_later_stages(tmp_path):
    rec = Recorder(tmp_path)
    stages = [rec.stage("prepare"), rec.stage("stylize"), rec.stage("train")]
    _run(rec, stages)
    path = tmp_path / "stylize.npz"
    path.write_bytes(path.read_bytes()[:100])
    _run(rec, stages)
    assert rec.runs == ["prepare", "stylize", "train", "stylize", "train"]


def test_changed_parameters_and_force_redo_a_stage(tmp_path):
    rec = Recorder(tmp_path)
    _run(rec, [rec.stage("prepare"), rec.stage("train")])
    _run(rec, [rec.stage("prepare"), rec.stage("train", param="b")])
    assert rec.runs[2:] == ["train"]
    _run(rec, [rec.stage("prepare"), rec.stage("train", param="b")], force=["prepare"])
    assert rec.runs[3:] == ["prepare", "train"]


def test_a_stage_starts_afresh_only_when_its_inputs_were_redone(tmp_path):
    rec = Recorder(tmp_path)
    fresh: list[str] = []

    def stages(train_param="a"):
        train = rec.stage("train", param=train_param)
        train.fresh = lambda ctx: fresh.append("train")
        return [rec.stage("prepare"), train]

    _run(rec, stages())
    assert fresh == ["train"]               # first run: prepare ran before it
    _run(rec, stages(train_param="b"))
    assert fresh == ["train"]               # its own parameters changed: it may resume
    (tmp_path / ".build" / "train.json").unlink()
    _run(rec, stages(train_param="b"))
    assert fresh == ["train"]               # left unfinished, inputs kept: resume
    _run(rec, stages(train_param="b"), force=["prepare"])
    assert fresh == ["train"] * 2           # new inputs: never resume
    _run(rec, stages(train_param="b"), force=["train"])
    assert fresh == ["train"] * 3
    assert rec.runs == ["prepare", "train", "train", "train", "prepare", "train", "train"]


def test_failed_stage_names_itself_and_keeps_earlier_outputs(tmp_path):
    rec = Recorder(tmp_path)
    rec.fail = "train"
    stages = [rec.stage("prepare"), rec.stage("train")]
    with pytest.raises(StageError, match="stage 'train' failed: train cannot read its input") as raised:
        _run(rec, stages)
    assert "Earlier stages' outputs are kept" in str(raised.value)
    assert (tmp_path / "prepare.npz").exists() and not (tmp_path / "train.npz").exists()
    rec.fail = None
    _run(rec, stages)
    assert rec.runs == ["prepare", "train", "train"]  # prepare was complete and is not redone


def _mount_tmpfs(folder, options: str):
    import subprocess

    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("no permission to mount a small tmpfs for this test")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write to: chmod for ordinary users; root ignores permissions, so for
    root a read-only tmpfs is mounted there (skipped where mounting is not allowed)."""
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    _mount_tmpfs(folder, "ro,size=1m")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 256 KiB tmpfs: writes beyond that fail with ENOSPC (root only)."""
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    _mount_tmpfs(folder, "size=256k")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_gives_a_clear_error_and_no_partial_file(full_disk):
    from backend.formats import avatar

    big = examples.random_avatar(n_gaussians=20_000, n_expressions=4)
    with pytest.raises(OSError, match="No space left"):
        avatar.write(full_disk / "avatar.npz", big)
    assert list(full_disk.iterdir()) == []


def test_full_disk_in_a_command_is_one_clear_line(full_disk):
    from .conftest import run_backend

    out = run_backend("synth", "--out", str(full_disk / "subject"), "--frames", "40", "--size", "96",
                      "--no-video")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: synth failed: No space left on device"), last


def test_read_only_output_folder_is_a_clear_error(read_only_folder):
    with pytest.raises(ToonSplatError, match="read-only"):
        ensure_writable_folder(read_only_folder)
    with pytest.raises(ToonSplatError, match="cannot create the output folder"):
        ensure_writable_folder(read_only_folder / "build")


def test_build_into_read_only_folder_fails_clearly(read_only_folder, tmp_path):
    from PIL import Image

    from .conftest import run_backend

    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), "white").save(photo)
    out = run_backend("build", "--image", str(photo), "--out", str(read_only_folder / "b"))
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error: cannot create the output folder")
