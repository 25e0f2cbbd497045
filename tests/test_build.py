"""``build`` end to end on a tiny synthetic video: every stage, resume after a kill mid-train,
a corrupted intermediate redone. Slow: it runs the real pipeline (about 2-4 minutes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from backend.formats import avatar, tracking

from .conftest import REPO, run_backend

pytestmark = pytest.mark.slow

BUILD = ["--size", "128", "--preset", "tiny", "--iters", "60", "--device", "cpu"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subject")
    out = run_backend("synth", "--out", str(folder), "--frames", "12", "--size", "128", "--seed", "3")
    assert out.returncode == 0, out.stderr[-2000:]
    return folder / "video.mp4"


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_build_runs_every_stage_then_skips_them(video, tmp_path):
    out_dir = tmp_path / "build"
    first = run_backend("build", "--video", str(video), "--out", str(out_dir), *BUILD,
                        "--progress", "jsonl", timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    events = _events(first.stdout)
    stages = [e["stage"] for e in events if e["event"] == "stage"]
    for name in ("prepare", "stylize", "train", "export"):
        assert name in stages
    overall = [e["overall"] for e in events if e["event"] == "progress" and "overall" in e]
    assert overall and overall == sorted(overall) and overall[-1] > 0.95
    result = events[-1]
    assert result["event"] == "result" and os.path.exists(result["avatar"])
    assert avatar.read(result["avatar"]).n_expressions == tracking.read(result["tracking"]).n_expressions
    # The tracking handed on (to Blender) is the one the avatar was trained with, beside it.
    assert result["tracking"] == str(out_dir / "tracking.npz")
    assert (out_dir / "tracking.npz").read_bytes() == (out_dir / "train" / "tracking.npz").read_bytes()
    for name in ("avatar.ply", "preview.mp4", "turntable.png", "report.json", "report.html",
                 "summary.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert not (out_dir / "reenactment.mp4").exists()  # only with --full-reenactment
    report = json.loads((out_dir / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["prepare", "stylize", "train", "export"]
    export = report["stages"][-1]["metrics"]
    assert export["preview_frames"] == 2 and 0 < export["coverage_45"] <= 1, export
    assert 'src="turntable.png"' in (out_dir / "report.html").read_text()

    # Corrupt the tracking file: prepare (and everything after it) must be redone.
    track = out_dir / "data" / "tracking.npz"
    track.write_bytes(track.read_bytes()[:1000])
    again = run_backend("build", "--video", str(video), "--out", str(out_dir), *BUILD, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "prepare: running (data/tracking.npz changed or is corrupted)" in again.stderr
    # New frames: training starts from scratch, never from the old frames' checkpoint.
    assert "train: starting afresh (an earlier stage ran)" in again.stderr
    assert "resumed from" not in again.stderr
    tracking.read(track)


def test_stop_after_prepare_then_go_on(video, tmp_path):
    """The add-on's "Check Tracking": prepare only, show its QA picture; the next build goes on."""
    out_dir = tmp_path / "build"
    first = run_backend("build", "--video", str(video), "--out", str(out_dir), *BUILD,
                        "--stop-after", "prepare", "--progress", "jsonl", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    result = _events(first.stdout)[-1]
    assert result["event"] == "result" and "stopped after prepare" in result["message"]
    assert os.path.getsize(result["qa"]) > 0 and (out_dir / "data" / "tracking.npz").exists()
    assert not (out_dir / "train").exists() and not (out_dir / "avatar.npz").exists()
    rest = run_backend("build", "--video", str(video), "--out", str(out_dir), *BUILD,
                       "--progress", "jsonl", timeout=900)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "prepare: complete, skipped" in rest.stdout
    assert (out_dir / "avatar.npz").stat().st_size > 0


def test_killed_mid_train_resumes_from_checkpoint(video, tmp_path):
    out_dir = tmp_path / "build"
    argv = [sys.executable, "-m", "backend", "build", "--video", str(video), "--out", str(out_dir),
            *BUILD[:-4], "--iters", "400", "--device", "cpu", "--progress", "jsonl"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    killed_at = None
    for line in process.stdout:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("stage") == "train" and event.get("event") == "progress" and event["step"] >= 20:
            killed_at = event["step"]
            process.send_signal(signal.SIGTERM)
            break
    process.stdout.read()
    assert process.wait(timeout=120) != 0
    assert killed_at is not None, "training never started"
    assert (out_dir / "train" / "checkpoint.pt").exists()
    assert not (out_dir / "train" / "avatar.npz").exists()
    resumed = run_backend("build", "--video", str(video), "--out", str(out_dir), *BUILD[:-4],
                          "--iters", "60", "--device", "cpu", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "prepare: complete, skipped" in resumed.stderr
    assert "resumed from" in resumed.stderr
    assert avatar.read(out_dir / "avatar.npz").n_gaussians > 0


def test_batch_script_builds_and_imports_a_video(video, tmp_path):
    """scripts/build_avatar.py with the bpy module: the whole pipeline, then Blender."""
    blend, picture = tmp_path / "avatar.blend", tmp_path / "avatar.png"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "build_avatar.py"), "--video",
                           str(video), "--out", str(blend), "--render", str(picture), "--iters", "20",
                           "--size", "128", "--resolution", "64", "--samples", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert blend.stat().st_size > 100_000 and picture.stat().st_size > 1000
    assert "keyed 12 frames" in done.stdout
