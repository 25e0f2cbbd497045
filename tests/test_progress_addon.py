"""The add-on follows runs with the backend's one protocol reader
(backend/formats/progress_events.py): its bar and text show the whole build when the run reports
it, the stage otherwise. Loaded as Blender loads the extension (tests/test_addon_units.py)."""

import ast
import os
import sys

import pytest

pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def toonsplat():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from toonsplat_package import load_toonsplat

    return load_toonsplat()


def test_addon_uses_the_one_parser(toonsplat):
    events = toonsplat.backend.formats.progress_events
    runner = toonsplat.addon.runner
    assert runner.parse_line is events.parse_line
    assert issubclass(runner.RunState, events.ProgressState)
    # No second parser: nothing in the add-on decodes JSON lines by itself.
    for name in sorted(os.listdir(os.path.join(ROOT, "addon"))):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(ROOT, "addon", name)).read())
            calls = [node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Attribute) and node.func.attr == "loads"]
            assert not calls, f"addon/{name} parses JSON itself"


BUILD_SCRIPT = """
import time
from backend.progress import PipelineProgress
progress = PipelineProgress("jsonl", total_weight=4.0, min_interval_s=0.0)
for name, weight in (("prepare", 1.0), ("train", 3.0)):
    progress.begin(name, weight)
    for step in range(1, 11):
        progress.progress(step, 10)
        time.sleep(0.2)
    progress.end()
print("a line that is not an event", flush=True)
progress.result("built", path="/tmp/out")
"""


def test_runner_shows_the_whole_build_across_stages(toonsplat, tmp_path):
    runner = toonsplat.addon.runner
    script = tmp_path / "build.py"
    script.write_text(BUILD_SCRIPT)
    run = runner.BackendRun([[sys.executable, str(script)]], "Build", str(tmp_path / "b.log"),
                            cwd=ROOT, env={"PYTHONPATH": ROOT})  # the script imports backend
    seen = []

    def on_event(event):
        state = run.state
        seen.append((event.get("event"), state.stage, state.overall_fraction, state.fraction,
                     runner.progress_text(state)))

    state = run.start().wait(60, on_event=on_event)
    assert state.status == "done", state.error
    bars = [bar for kind, _, bar, _, _ in seen if kind == "progress"]
    assert bars == sorted(bars) and bars[-1] == pytest.approx(1.0)
    train_start = next(i for i, row in enumerate(seen) if row[1] == "train")
    assert seen[train_start][2] == pytest.approx(0.25)   # prepare's share, not a restart at 0
    assert seen[train_start][3] == 0.0                   # while the stage's own bar restarts
    texts = [text for kind, stage, _, _, text in seen if kind == "progress" and stage == "train"]
    assert texts[3].startswith("train 4/10 · build 55% · ") and texts[3].endswith(" left"), texts
    assert ("log", "train") in [row[:2] for row in seen]
    assert state.message == "a line that is not an event"
    assert state.results[-1]["path"] == "/tmp/out" and state.overall_fraction == 1.0


def test_progress_text_outside_a_build(toonsplat):
    runner = toonsplat.addon.runner
    state = runner.RunState(title="Prepare", log_path="L")
    for event in ({"event": "stage", "stage": "prepare", "total": 40},
                  {"event": "progress", "stage": "prepare", "step": 10, "total": 40, "eta_s": 150}):
        state.apply(event)
    assert state.overall_fraction == state.fraction == 0.25
    assert runner.progress_text(state) == "prepare 10/40 · 3 min left"
    assert runner.format_left(40.2) == "41 s left"
    assert runner.format_left(3725) == "1 h 03 min left"
    assert runner.format_left(None) == ""
