"""Import the repository root as the package ``toonsplat``, as Blender imports an extension.

Shared by the batch scripts (run with ``blender -b -P`` or with the bpy module) and the tests.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_toonsplat():
    """The repository as the package ``toonsplat`` (imported once, then reused)."""
    if "toonsplat" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "toonsplat", os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["toonsplat"] = module
        spec.loader.exec_module(module)
    return sys.modules["toonsplat"]
