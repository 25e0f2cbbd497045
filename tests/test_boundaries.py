"""The two worlds stay apart: backend never imports bpy, addon never imports torch, and the
contract readers work in a Python where torch cannot be imported. Inside the backend, the
sub-packages form layers (docs/DEVELOPING.md): each imports only those below it, relative
imports counted, and the import graph has no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

# What each backend sub-package (or top-level module) may import: the layering table of
# docs/DEVELOPING.md. "__init__" is the backend package itself (its __version__).
BASE = {"__init__", "errors"}
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "fileio": BASE,
    "formats": BASE | {"fileio"},
    "progress": BASE | {"formats"},
    "bench": BASE | {"formats"},
    "geometry": BASE,
    "headmodel": BASE | {"fileio", "formats", "bench", "geometry"},
    "render": BASE | {"formats", "bench", "geometry", "headmodel"},
    "ingest": BASE | {"fileio", "formats", "progress"},
    "tracking": BASE | {"fileio", "formats", "progress", "geometry", "headmodel"},
    "stylize": BASE | {"fileio", "formats", "bench"},
    "train": BASE | {"fileio", "formats", "geometry", "headmodel", "render"},
    "synth": BASE | {"fileio", "formats", "geometry", "headmodel", "render", "tracking", "train"},
    "export": BASE | {"fileio", "formats", "bench", "geometry", "headmodel", "render", "train",
               "synth"},
    "pipeline": BASE | {"fileio", "formats", "progress", "bench", "headmodel", "ingest",
                        "tracking", "stylize", "train", "synth", "export"},
    "cli": BASE | {"formats", "progress", "bench"},
    "__main__": {"cli"},
}


def backend_import_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """part -> {imported part: [files]} over every .py under ``root`` (the backend package);
    a part is a sub-package or a top-level module; absolute (backend.x) and relative imports."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        source = parts[0]
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[tuple[str, ...]] = []
            if isinstance(node, ast.Import):
                targets = [tuple(a.name.split("."))[1:] for a in node.names
                           if a.name.split(".")[0] == root.name]
            elif isinstance(node, ast.ImportFrom):
                module = tuple(node.module.split(".")) if node.module else ()
                if node.level == 0:
                    if not module or module[0] != root.name:
                        continue
                    base = module[1:]
                else:
                    base = package[:len(package) - (node.level - 1)] + module
                targets = [base] if base else [(a.name,) for a in node.names]
            for target in targets:
                name = target[0] if target else "__init__"
                if not ((root / name).is_dir() or (root / f"{name}.py").is_file()):
                    name = "__init__"   # a name defined in the package itself (__version__)
                if name != source:
                    graph.setdefault(source, {}).setdefault(name, []).append(
                        str(path.relative_to(root.parent)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as [a, b, ..., a], or None when it has none (depth-first search)."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_backend_layers_hold():
    graph = backend_import_graph(REPO / "backend")
    unknown = sorted(set(graph) - set(LAYERS))
    assert not unknown, f"backend parts missing from the layering table: {unknown}"
    offenders = [f"{source} imports {target} ({', '.join(files[:2])})"
                 for source, targets in graph.items() for target, files in targets.items()
                 if target not in LAYERS[source]]
    assert not offenders, "imports against the layering table (docs/DEVELOPING.md):\n" + \
        "\n".join(offenders)


def test_backend_import_graph_is_acyclic():
    graph = backend_import_graph(REPO / "backend")
    cycle = find_cycle({source: set(targets) for source, targets in graph.items()})
    assert cycle is None, f"import cycle between backend parts: {' -> '.join(cycle)}"


def test_the_layering_table_itself_has_no_cycle():
    assert find_cycle(LAYERS) is None


def test_a_planted_cycle_is_found(tmp_path):
    """Two packages importing each other through relative imports fail the check."""
    root = tmp_path / "backend"
    for name, text in {"a/__init__.py": "", "a/x.py": "from ..b import y\n",
                       "b/__init__.py": "", "b/y.py": "def f():\n    from ..a.x import g\n",
                       "c.py": "from .a import x\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    graph = backend_import_graph(root)
    assert graph == {"a": {"b": ["backend/a/x.py"]}, "b": {"a": ["backend/b/y.py"]},
                     "c": {"a": ["backend/c.py"]}}
    assert find_cycle({s: set(t) for s, t in graph.items()}) in (["a", "b", "a"], ["b", "a", "b"])


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
               "collections", "argparse"}
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
