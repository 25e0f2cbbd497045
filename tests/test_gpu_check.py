"""scripts/gpu_check.sh and its helpers, where they can be checked without a GPU (issue 24).

The device run itself cannot be tested here; these catch what would waste the one device call:
a syntax error, a wheel that does not fit the GPU machine's Python, an import guard that does
not guard, and training overrides the trainer would reject.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO

SCRIPTS = REPO / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_carry.sh"])
def test_shell_scripts_parse(script):
    out = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _wheel_check(tmp_path, names: list[str]) -> int:
    steps = _load("gpu_check_steps")
    folder = tmp_path / "wheels"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return steps.main(["wheels", str(folder)])


def test_wheel_check_accepts_only_wheels_for_cp312_manylinux(tmp_path):
    pytest.importorskip("packaging")
    gsplat = "gsplat-1.5.3-py3-none-any.whl"
    assert _wheel_check(tmp_path, [gsplat]) == 0
    assert _wheel_check(tmp_path, [gsplat, "scipy-1.15.3-cp312-cp312-manylinux_2_17_x86_64.whl"]) == 0
    assert _wheel_check(tmp_path, [gsplat, "scipy-1.15.3-cp311-cp311-manylinux_2_17_x86_64.whl"]) == 1
    assert _wheel_check(tmp_path, [gsplat, "scipy-1.15.3-cp312-cp312-macosx_11_0_arm64.whl"]) == 1
    assert _wheel_check(tmp_path, ["gsplat-1.5.2-py3-none-any.whl"]) == 1
    assert _wheel_check(tmp_path, [gsplat, "gsplat-1.5.2-py3-none-any.whl"]) == 1
    assert _wheel_check(tmp_path, [gsplat, "gsplat-1.5.3.tar.gz"]) == 1


def test_import_guard_refuses_blocked_packages_and_records_imports(tmp_path):
    site = tmp_path / "pyblock"
    site.mkdir()
    shutil.copy(SCRIPTS / "gpu_blocker.py", site / "sitecustomize.py")
    record = tmp_path / "imports.jsonl"
    env = {**os.environ, "PYTHONPATH": str(site), "GPU_CHECK_BLOCK": "numpy,bpy",
           "GPU_CHECK_IMPORTS": str(record)}
    code = ("import json\ntry:\n    import numpy.linalg\nexcept ModuleNotFoundError as e:\n"
            "    print('blocked', e.name)\nimport email\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["blocked", "numpy"]
    assert '"modules": []' in record.read_text()  # stdlib only: nothing third-party recorded


def test_train_overrides_make_a_gpu_paper_config_with_a_time_budget():
    from backend.train.config import PRESETS, make_config

    train = _load("gpu_train")
    args = train.parse_args(["--data", "d", "--out", "o", "--json", "j", "--budget", "200"])
    config = make_config("gpu-paper", **train.overrides_for(args))
    assert config.time_budget_s == 200.0 and config.iterations == 40_000
    assert [phase.images for phase in config.phases] == ["stylized"]
    assert config.model.n_face_gaussians == 50_000
    tiny = train.parse_args(["--data", "d", "--out", "o", "--json", "j", "--tiny", "--iters", "5"])
    config = make_config("gpu-paper", **train.overrides_for(tiny))
    assert config.iterations == 5
    assert config.model.n_face_gaussians == PRESETS["tiny"]["model"]["n_face_gaussians"]
