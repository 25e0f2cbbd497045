"""Run Blender's extension tool (``blender_ext.py``) from the installed ``bpy`` module.

    python scripts/blender_ext.py validate .
    python scripts/blender_ext.py build --source-dir . --output-dir dist

The tool ships inside every ``bpy`` wheel under ``bpy/<major.minor>/scripts/addons_core/bl_pkg/
cli/``; the version folder differs per release, so it is looked up, not spelled out. The ``bpy``
found is the one this Python would import (``PYTHONPATH`` first): the tests run it once per
Blender of their version matrix. ``bpy`` itself is not imported.
"""

import glob
import importlib.util
import os
import runpy
import sys

TOOL = os.path.join("scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")


def find_tool() -> str:
    """The path of ``blender_ext.py`` in the ``bpy`` this Python imports."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        raise SystemExit("error: the bpy module is not installed in this Python "
                         "(pip install bpy, or run scripts/setup_venv.sh requirements-demo.txt)")
    folder = os.path.dirname(spec.origin)
    found = sorted(glob.glob(os.path.join(folder, "[0-9]*.[0-9]*", TOOL)))
    if not found:
        raise SystemExit(f"error: no {TOOL} under {folder}; is this a complete bpy install?")
    return found[-1]


def main() -> None:
    tool = find_tool()
    sys.argv = [tool, *sys.argv[1:]]
    runpy.run_path(tool, run_name="__main__")


if __name__ == "__main__":
    main()
