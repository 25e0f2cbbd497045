"""The progress protocol: the one parser (backend/formats/progress_events.py), the fold of a real
PipelineProgress stream into what a UI shows, and native libraries' chatter kept off stderr."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from backend import progress as progress_module
from backend.formats.progress_events import EVENTS, ProgressState, parse_event, parse_line
from backend.progress import PipelineProgress, Progress

from .conftest import REPO, run_backend


# -- the parser -------------------------------------------------------------------------------
@pytest.mark.parametrize("event", [
    {"event": "stage", "stage": "train", "message": "stage train"},
    {"event": "progress", "stage": "train", "step": 3, "total": 10, "eta_s": 7.5,
     "overall": 0.42, "overall_eta_s": 80.0},
    {"event": "log", "stage": "", "message": "hello", "level": "info"},
    {"event": "preview", "stage": "train", "path": "/tmp/p.png", "message": "preview"},
    {"event": "result", "stage": "build", "message": "done", "path": "/tmp/out", "extra": [1]},
    {"event": "error", "stage": "prepare", "message": "no face"},
])
def test_parse_event_reads_every_kind(event):
    line = json.dumps(event)
    assert parse_event(line) == event
    assert parse_line(line + "\n") == event  # the newline a pipe delivers is not part of it


@pytest.mark.parametrize("line, why", [
    ("", "not JSON"),
    ("Traceback (most recent call last):", "not JSON"),
    ("{not json", "not JSON"),
    ("[1, 2]", "not an object"),
    ('{"message": "no kind"}', "unknown event"),
    ('{"event": "explode"}', "unknown event"),
    ('{"event": "progress", "stage": "t", "step": 1}', "without step and total"),
    ('{"event": "progress", "step": "1", "total": 10}', "step is not a number"),
    ('{"event": "progress", "step": true, "total": 10}', "step is not a number"),
    ('{"event": "progress", "step": 1, "total": 10, "overall": "half"}', "overall is not"),
    ('{"event": "stage", "stage": 3}', "stage is not a string"),
])
def test_parse_event_rejects_what_is_not_an_event(line, why):
    with pytest.raises(ValueError, match=why):
        parse_event(line)
    assert parse_line(line) == {"event": "log", "message": line}


def test_backend_progress_reexports_the_one_parser():
    assert progress_module.parse_event is parse_event and progress_module.EVENTS is EVENTS


def test_every_event_a_progress_writes_parses(tmp_path):
    stream = io.StringIO()
    progress = Progress("jsonl", out=stream, min_interval_s=0.0)
    progress.stage("train", total=4)
    progress.progress(1, 4, message="step")
    progress.log("a log line", level="warning")
    progress.preview(tmp_path / "p.png")
    progress.result("done", path=tmp_path)
    progress.error("broke")
    events = [parse_event(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stage", "progress", "log", "preview", "result",
                                            "error"]


# -- the fold ---------------------------------------------------------------------------------
class _Clock:
    """A stand-in for the ``time`` module: every call to monotonic() is ``step_s`` later."""

    def __init__(self, step_s: float):
        self.now, self.step_s = 1000.0, step_s

    def monotonic(self) -> float:
        self.now += self.step_s
        return self.now


def _fold(lines: list[str]) -> tuple[list[ProgressState], ProgressState]:
    """Fold ``lines`` one by one; returns a snapshot after each event and the final state."""
    state, snapshots = ProgressState(), []
    for line in lines:
        state.apply(parse_line(line))
        snapshots.append(ProgressState(**{**state.__dict__, "results": list(state.results)}))
    return snapshots, state


def _two_stage_build(monkeypatch) -> list[str]:
    """A real PipelineProgress across a skipped stage and two run stages (weights 1, 1, 3), the
    first counting two passes from zero each, as prepare's detect and crop passes do."""
    monkeypatch.setattr(progress_module, "time", _Clock(step_s=1.0))
    stream = io.StringIO()
    progress = PipelineProgress("jsonl", total_weight=5.0, out=stream, min_interval_s=0.0)
    progress.advance(1.0)                        # "synth" was already complete
    progress.begin("prepare", weight=1.0)
    for name in ("detect", "crop"):
        progress.stage(name, total=10)
        for step in range(1, 11):
            progress.progress(step, 10)
    progress.end()
    progress.begin("train", weight=3.0)
    for step in range(1, 21):
        progress.progress(step, 20)
    progress.end()
    progress.result("built", path="/tmp/out")
    return stream.getvalue().splitlines()


def test_fold_of_a_real_build_never_restarts_the_whole_run_bar(monkeypatch):
    lines = _two_stage_build(monkeypatch)
    snapshots, final = _fold(lines)
    overall = [s.overall_fraction for s in snapshots]
    assert overall == sorted(overall), "the whole-build fraction went back"
    stages = [s.stage for s in snapshots]
    first_train = stages.index("train")
    # The second stage starts where the first ended (skipped 1 + prepare 1 of 5), not at zero...
    assert overall[first_train] == pytest.approx(0.4)
    assert overall[first_train - 1] == pytest.approx(0.4)
    # ...while the stage's own fraction does restart (the bar used to show that).
    assert snapshots[first_train - 1].fraction == 1.0 and snapshots[first_train].fraction == 0.0
    assert overall[-1] == pytest.approx(1.0)
    assert final.results[-1]["path"] == "/tmp/out"
    # The whole-build time left is reported once work has gone on a while, and shrinks.
    remaining = [s.remaining_s for s in snapshots[first_train:] if s.remaining_s is not None]
    assert remaining and remaining[-1] < remaining[0]
    assert all(s.remaining_s == s.overall_eta_s for s in snapshots if s.overall is not None)


def test_fold_outside_a_build_falls_back_to_the_stage(monkeypatch):
    monkeypatch.setattr(progress_module, "time", _Clock(step_s=1.0))
    stream = io.StringIO()
    progress = Progress("jsonl", out=stream, min_interval_s=0.0)
    progress.stage("prepare", total=8)
    progress.progress(2, 8, message="detecting")
    snapshots, state = _fold(stream.getvalue().splitlines())
    assert state.overall is None and state.overall_eta_s is None
    assert state.overall_fraction == state.fraction == 0.25
    assert state.eta_s is not None and state.remaining_s == state.eta_s
    assert (state.stage, state.step, state.total, state.message) == ("prepare", 2, 8, "detecting")


def test_fold_keeps_previews_results_errors_and_log_lines():
    state = ProgressState()
    for line in ['{"event": "preview", "stage": "train", "path": "/p/1.png"}',
                 "pip: installing torch",
                 '{"event": "result", "message": "a", "path": "/a"}',
                 '{"event": "result", "message": "b"}',
                 '{"event": "error", "message": "no face in frame 3"}',
                 '{"event": "explode", "stage": "x"}']:
        state.apply(parse_line(line))
    assert state.preview == "/p/1.png"
    assert [r["message"] for r in state.results] == ["a", "b"]
    assert state.error == "no face in frame 3"
    assert state.message == '{"event": "explode", "stage": "x"}'  # shown as a log line
    assert state.stage == ""


# -- native libraries' chatter ------------------------------------------------------------------
NATIVE_SCRIPT = r"""
import os, sys
from backend.progress import NativeLogsHidden, hide_native_logs
hide_native_logs(sys.argv[1] == "hide")
with NativeLogsHidden():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    inner = NativeLogsHidden()
    os.write(2, b"W0000 00:00:1.5 1 calc.cc:1] Feedback manager requires a model\n")
    inner.close(); inner.close()
    os.write(2, b"I0000 00:00:1.5 1 calc.cc:1] still hidden: the outer window is open\n")
    os.write(2, b"E0000 00:00:1.5 1 calc.cc:1] a real error\n")
    print("python stderr", file=sys.stderr)
os.write(2, b"W0000 after the window\n")
"""


@pytest.mark.parametrize("mode", ["hide", "show"])
def test_native_chatter_is_hidden_and_errors_still_show(mode):
    out = subprocess.run([sys.executable, "-c", NATIVE_SCRIPT, mode], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    if mode == "show":
        assert len(lines) == 6 and lines[0].startswith("INFO: Created")
        return
    assert lines == ["E0000 00:00:1.5 1 calc.cc:1] a real error", "python stderr",
                     "W0000 after the window"]


def test_prepare_quiet_prints_nothing_on_success(tmp_path):
    """A real photo through mediapipe's FaceMesh and selfie segmenter: not one line on stderr."""
    data = pytest.importorskip("skimage.data")
    pytest.importorskip("mediapipe")
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(data.astronaut()).save(photo)
    out = run_backend("prepare", "--image", str(photo), "--out", str(tmp_path / "data"),
                      "--progress", "quiet")
    assert out.returncode == 0, out.stderr
    assert out.stderr == "" and out.stdout == ""
    assert (tmp_path / "data" / "tracking.npz").is_file()
