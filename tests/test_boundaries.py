"""The two worlds stay apart: backend never imports bpy, addon never imports torch, and the
contract readers work in a Python where torch cannot be imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


def _imported_modules(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


@pytest.mark.parametrize("folder, forbidden", [("backend", {"bpy", "bmesh", "mathutils"}),
                                               ("addon", {"torch", "gsplat"})])
def test_import_boundaries(folder, forbidden):
    offenders = [f"{path.relative_to(REPO)} imports {name}"
                 for path, name in _imported_modules(REPO / folder)
                 if name.split(".")[0] in forbidden]
    assert not offenders, offenders


def test_formats_only_import_numpy():
    allowed = {"numpy", "__future__", "os", "json", "zipfile", "tempfile", "dataclasses", "typing",
               "collections"}
    offenders = [f"{path.name} imports {name}"
                 for path, name in _imported_modules(REPO / "backend" / "formats")
                 if name.split(".")[0] not in allowed]
    assert not offenders, offenders


BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'scipy', 'av', 'mediapipe', 'cv2', 'PIL'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, _Block())
try:
    import torch
    raise SystemExit('torch imported')
except ImportError:
    pass
from backend.formats import avatar, tracking, animate, examples
path = sys.argv[1]
avatar.write(path, examples.random_avatar(n_gaussians=100, n_expressions=3))
a = avatar.read(path)
animate.posed_means(a, [0.5, 0, 0], [[0, 0, 0]] * 5)
print('ok', a.n_gaussians)
"""


def test_avatar_reader_works_without_torch(tmp_path):
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(tmp_path / "a.npz")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 100"
