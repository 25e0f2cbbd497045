"""The add-on's numpy and subprocess parts: axis conversion, bone-rotation maths, the runner
(against the real backend CLI and real crashing/slow processes), the pipeline arguments.

bpy is imported (through the add-on package) but no Blender data is built here; scenarios that
build Blender data run in fresh processes in test_blender.py.
"""

import json
import os
import sys
import time

import numpy as np
import pytest

pytest.importorskip("bpy")
pytestmark = pytest.mark.blender

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backend.formats import animate, avatar, examples  # noqa: E402
from tests.rotations import quat_matrix  # noqa: E402


def _toonsplat():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from toonsplat_package import load_toonsplat

    return load_toonsplat()


@pytest.fixture(scope="module")
def addon():
    return _toonsplat().addon


def test_axes_conversion_is_one_proper_rotation(addon):
    axes = addon.axes
    c = axes.HEAD_TO_BLENDER
    assert np.allclose(c @ c.T, np.eye(3)) and np.isclose(np.linalg.det(c), 1.0)
    points = np.random.default_rng(0).normal(size=(7, 3))
    assert np.allclose(axes.points_to_blender(points), points @ c.T)
    # up stays up, the face looks along -Y, the subject's left is +X
    assert np.allclose(axes.points_to_blender(np.eye(3)), [[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    quats = np.random.default_rng(1).normal(size=(5, 4))
    for q, qb in zip(quats, axes.quats_to_blender(quats)):
        assert np.allclose(quat_matrix(qb), c @ quat_matrix(q) @ c.T)
    # A Gaussian's frame (its scales unchanged) maps into Blender by C R: same covariance.
    scales = np.random.default_rng(3).uniform(0.1, 1.0, size=(5, 3))
    unit = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    for q, qb, s in zip(unit, axes.gaussian_quats_to_blender(unit), scales):
        rs, rs_blender = quat_matrix(q) * s, quat_matrix(qb) * s
        assert np.isclose(np.linalg.norm(qb), 1.0)
        assert np.allclose(rs_blender @ rs_blender.T, c @ rs @ rs.T @ c.T)


def test_pose_bone_quats_reproduce_head_space_rotations(addon):
    axes = addon.axes
    rng = np.random.default_rng(2)
    rests = np.stack([quat_matrix(q) for q in rng.normal(size=(5, 4))])
    rotations = rng.normal(size=(3, 5, 3)) * 0.7
    quats = axes.pose_bone_quats(rotations, rests)
    c = axes.HEAD_TO_BLENDER
    for t in range(3):
        for j in range(5):
            expected = rests[j].T @ c @ animate.rodrigues(rotations[t, j]) @ c.T @ rests[j]
            assert np.allclose(quat_matrix(quats[t, j]), expected, atol=1e-12)
    assert np.allclose(axes.axis_angle_to_quats(np.zeros(3)), [1, 0, 0, 0])
    with pytest.raises(ValueError):
        axes.pose_bone_quats(rotations[:, :4], rests)


def test_colour_from_sh_dc(addon):
    axes = addon.axes
    assert np.allclose(axes.sh_dc_to_rgb(np.zeros((1, 3))), 0.5)
    assert np.allclose(axes.sh_dc_to_rgb(np.full((1, 3), 1 / 0.28209479)), 1.0, atol=1e-6)
    assert np.allclose(axes.srgb_to_linear(np.array([0.0, 0.5, 1.0])), [0.0, 0.21404, 1.0], atol=1e-5)


def _run(addon, steps, tmp_path, timeout=60.0):
    run = addon.runner.BackendRun(steps, "test", str(tmp_path / "logs" / "run.log"), cwd=ROOT)
    events = []
    state = run.start().wait(timeout, on_event=events.append)
    return state, events


def test_runner_follows_a_real_backend_command(addon, tmp_path):
    path = tmp_path / "avatar.npz"
    avatar.write(path, examples.random_avatar(200, 3))
    argv = addon.runner.backend_argv(sys.executable, "info", [str(path)])
    assert argv[1:6] == ["-m", "backend", "info", "--progress", "jsonl"]
    state, events = _run(addon, [argv], tmp_path)
    assert state.status == "done", state.error
    assert os.path.isfile(state.log_path) and "avatar file" in open(state.log_path).read()


def test_runner_reports_a_backend_error_event(addon, tmp_path):
    argv = addon.runner.backend_argv(sys.executable, "info", [str(tmp_path / "missing.npz")])
    state, _ = _run(addon, [argv], tmp_path)
    assert state.status == "failed"
    assert "missing.npz" in state.error and state.log_path in state.error


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    return [sys.executable, str(path)]


def test_runner_survives_a_crash_mid_run(addon, tmp_path):
    argv = _script(tmp_path, "crash.py", (
        "import json, os, sys\n"
        "print(json.dumps({'event': 'stage', 'stage': 'train', 'message': 'x'}), flush=True)\n"
        "print(json.dumps({'event': 'progress', 'stage': 'train', 'step': 3, 'total': 10,"
        " 'eta_s': 7.0}), flush=True)\n"
        "print('Traceback: something broke', flush=True)\n"
        "os._exit(3)\n"))
    state, events = _run(addon, [argv], tmp_path)
    assert state.status == "failed" and "exit code 3" in state.error
    assert (state.stage, state.step, state.total) == ("train", 3, 10)
    assert {"event": "log", "message": "Traceback: something broke"} in events
    assert "something broke" in open(state.log_path).read()


def test_runner_cancel_kills_the_process_tree(addon, tmp_path):
    child_pid = tmp_path / "child.pid"
    argv = _script(tmp_path, "slow.py", (
        "import json, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # must be killed anyway
        "for i in range(600):\n"
        "    print(json.dumps({'event': 'progress', 'stage': 's', 'step': i, 'total': 600}), flush=True)\n"
        "    time.sleep(0.1)\n"))
    run = addon.runner.BackendRun([argv], "slow", str(tmp_path / "slow.log"), cwd=ROOT).start()
    deadline = time.monotonic() + 20
    while run.poll().step < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    run.cancel()
    state = run.wait(30)
    assert state.status == "cancelled"
    assert time.monotonic() - started < addon.runner.KILL_GRACE_S + 5
    pid = int(child_pid.read_text())
    time.sleep(0.2)
    assert not _alive(pid), "the backend's child process survived the cancel"


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_runner_missing_interpreter_is_a_clear_error(addon, tmp_path):
    with pytest.raises(addon.runner.ToonSplatError, match="Backend Python"):
        addon.runner.BackendRun([[str(tmp_path / "no-python"), "-m", "backend"]], "x",
                                str(tmp_path / "x.log")).start()


def test_runner_wait_timeout_cancels(addon, tmp_path):
    argv = _script(tmp_path, "sleep.py", "import time\ntime.sleep(60)\n")
    state, _ = _run(addon, [argv], tmp_path, timeout=1.0)
    assert state.status == "cancelled"


def test_build_arguments_and_results(addon, tmp_path):
    pipeline = addon.pipeline
    with pytest.raises(addon.runner.ToonSplatError, match="video not found"):
        pipeline.build_arguments(str(tmp_path / "none.mp4"), str(tmp_path))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    with pytest.raises(addon.runner.ToonSplatError, match="exemplar"):
        pipeline.build_arguments(str(video), str(tmp_path), style="exemplar")
    arguments = pipeline.build_arguments(str(video), str(tmp_path / "out"), iterations=100,
                                         head_model="flame.pkl", landmark_embedding="emb.npz")
    value = {flag: arguments[arguments.index(flag) + 1] for flag in
             ("--video", "--out", "--iters", "--head-model", "--landmark-embedding")}
    assert value == {"--video": str(video), "--out": str(tmp_path / "out"), "--iters": "100",
                     "--head-model": "flame.pkl", "--landmark-embedding": "emb.npz"}
    with pytest.raises(addon.runner.ToonSplatError, match="unknown training preset 'fast'"):
        pipeline.build_arguments(str(video), str(tmp_path), preset="fast")
    state = addon.runner.RunState(title="b", log_path="L")
    with pytest.raises(addon.runner.ToonSplatError, match="no avatar file"):
        pipeline.result_files(state, str(tmp_path))
    (tmp_path / "data").mkdir()
    for name in ("avatar.npz", "data/tracking.npz"):
        (tmp_path / name).write_bytes(b"x")
    state.results.append(json.loads('{"event": "result", "message": "done"}'))
    assert pipeline.result_files(state, str(tmp_path)) == (
        str(tmp_path / "avatar.npz"), str(tmp_path / "data" / "tracking.npz"))


def test_addon_never_imports_torch():
    for name in sorted(os.listdir(os.path.join(ROOT, "addon"))):
        if name.endswith(".py"):
            text = open(os.path.join(ROOT, "addon", name)).read()
            assert "import torch" not in text and "from torch" not in text, name


def test_proportions_layout_blends_to_both_ends(addon):
    """The shape keys planned for an avatar with proportions give the rest avatar at dial 0 and
    the built one at 1, for any expression values; a plain avatar keeps Basis + deltas."""
    proportions = addon.proportions
    from backend.formats.proportions import apply_proportions

    plain = examples.random_avatar(300, 4, seed=3)
    layout = proportions.points_layout(plain)
    assert layout.proportions is None and layout.correctives is None
    assert np.array_equal(layout.basis, plain.means.astype(np.float64))
    assert np.array_equal(layout.expressions, plain.delta_means * ~plain.mouth[None, :, None])
    eye = plain.joint_positions[3].astype(np.float64)
    anchors = {"brow_L": eye + [0, 0.02, 0.01], "nose_bridge": [0, 0.035, 0.085],
               "nose_tip": [0, 0.0, 0.095], "nose_base": [0, -0.01, 0.09],
               "nose_wing_L": [0.012, -0.005, 0.087], "mouth_L": [0.022, -0.035, 0.08],
               "lip_upper": [0, -0.028, 0.085], "lip_lower": [0, -0.045, 0.083]}
    anchors.update({n[:-2] + "_R": np.asarray(p) * [-1, 1, 1] for n, p in list(anchors.items())
                    if n.endswith("_L")})
    data = apply_proportions(plain, "chibi:0.7", {n: np.asarray(p, float) for n, p in anchors.items()})
    values = np.random.default_rng(0).uniform(-1.5, 1.5, 4)
    blended = ~data.mouth[:, None]
    for layout, positions, deltas, rest, rest_deltas, mask in (
            (proportions.points_layout(data), data.means, data.delta_means, data.rest_means,
             data.rest_delta_means, blended),
            (proportions.mesh_layout(data), data.mesh_vertices, data.mesh_expression_dirs,
             data.rest_mesh_vertices, data.rest_mesh_expression_dirs, True)):
        assert layout.proportions is not None
        built = positions + np.einsum("k,kvc->vc", values, deltas.astype(np.float64)) * mask
        before = rest + np.einsum("k,kvc->vc", values, rest_deltas.astype(np.float64)) * mask
        assert np.abs(proportions.blend(layout, values, 1.0) - built).max() < 1e-6
        assert np.abs(proportions.blend(layout, values, 0.0) - before).max() < 1e-6
        assert np.abs(built - before).max() > 1e-3
    names = ["Basis", "Proportions", "smile", "blink", "smile.proportions", "blink.proportions"]
    assert proportions.expression_key_names(names) == ["smile", "blink"]
    assert proportions.expression_key_names(["Basis", "a", "b"]) == ["a", "b"]
    # without a Proportions key nothing is a corrective, whatever its name
    assert proportions.expression_key_names(["Basis", "a", "a.proportions"]) == ["a", "a.proportions"]


def test_proportions_presets_are_the_backends(addon):
    from backend.formats.proportions import PRESETS

    assert [item[0] for item in addon.properties.PROPORTIONS] == list(PRESETS)
