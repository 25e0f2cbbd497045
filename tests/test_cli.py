"""The command line: --help everywhere, info, and the progress and bench protocols."""

from __future__ import annotations

import io
import json

import pytest

from backend.cli.main import COMMANDS
from backend.formats import avatar, examples, tracking
from backend.progress import EVENTS, Progress, parse_event

from .conftest import run_backend


def test_top_level_help_lists_every_command():
    result = run_backend("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    result = run_backend(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m backend " + name)
    assert "--progress" in result.stdout


@pytest.fixture
def files(tmp_path):
    a, t = tmp_path / "avatar.npz", tmp_path / "tracking.npz"
    avatar.write(a, examples.random_avatar(n_gaussians=300, n_expressions=4))
    tracking.write(t, examples.random_tracking(n_frames=10, n_expressions=4))
    return a, t


def test_info_summarizes_both_kinds(files):
    a, t = files
    out = run_backend("info", str(a))
    assert out.returncode == 0, out.stderr
    assert "gaussians   300" in out.stdout and "expressions 4" in out.stdout
    out = run_backend("info", str(t))
    assert out.returncode == 0, out.stderr
    assert "frames      10 (10 valid)" in out.stdout


def test_info_on_truncated_file_is_one_line_and_nonzero(files, tmp_path):
    a, _ = files
    cut = tmp_path / "cut.npz"
    cut.write_bytes(a.read_bytes()[:4000])
    out = run_backend("info", str(cut))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "cut.npz" in lines[0]


def test_jsonl_error_event(tmp_path):
    out = run_backend("info", str(tmp_path / "missing.npz"), "--progress", "jsonl")
    assert out.returncode != 0
    events = [parse_event(line) for line in out.stdout.splitlines()]
    assert events[-1]["event"] == "error" and "missing.npz" in events[-1]["message"]


def test_jsonl_before_or_after_command(files):
    a, _ = files
    for args in (("--progress", "jsonl", "info", str(a)), ("info", str(a), "--progress", "jsonl")):
        out = run_backend(*args)
        assert out.returncode == 0
        json_lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        assert parse_event(json_lines[-1])["event"] == "result"


def test_progress_events_are_json_lines():
    stream = io.StringIO()
    progress = Progress("jsonl", out=stream, min_interval_s=0)
    progress.stage("train", "training", total=3)
    for step in range(1, 4):
        progress.progress(step, 3, message=f"loss {step}")
    progress.preview("/tmp/p.png")
    progress.log("hello")
    progress.result("done", path="/tmp/out")
    progress.error("bad thing")
    events = [parse_event(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stage", "progress", "progress", "progress", "preview",
                                            "log", "result", "error"]
    assert set(e["event"] for e in events) == set(EVENTS)
    assert all(e["stage"] == "train" for e in events)
    assert events[3]["step"] == 3 and events[3]["total"] == 3
    assert events[4]["path"] == "/tmp/p.png"


def test_human_progress_goes_to_stderr_only():
    out, err = io.StringIO(), io.StringIO()
    progress = Progress("human", out=out, err=err, min_interval_s=0)
    progress.stage("prepare", "decoding")
    progress.progress(5, 10)
    progress.result("done", path="/x")
    assert out.getvalue() == ""
    assert "prepare" in err.getvalue() and "5/10" in err.getvalue() and "/x" in err.getvalue()


def test_bench_protocol_lines_parse():
    out = run_backend("bench", "formats", "--quick")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records, "bench printed nothing"
    for record in records:
        assert set(record) == {"bench", "case", "metric", "value", "unit", "device"}
        assert record["unit"] in ("s", "ms", "fps") and record["value"] > 0


def test_unknown_bench_is_a_clear_error():
    out = run_backend("bench", "no-such-bench")
    assert out.returncode != 0 and "unknown benchmark" in out.stderr
