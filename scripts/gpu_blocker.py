"""Import guard of scripts/gpu_check.sh: the GPU machine has no mediapipe, bpy or av.

gpu_check.sh copies this file as ``sitecustomize.py`` into a folder it puts on PYTHONPATH, so
every Python process of the check (pytest, ``python -m backend``, the gpu_*.py helpers) starts
with it. With ``GPU_CHECK_BLOCK=mediapipe,bpy,av`` set, importing one of those names raises
ModuleNotFoundError, as it would on the GPU machine, so a dry run on the dev machine fails
where the device run would. With ``GPU_CHECK_IMPORTS=FILE`` set, each process appends one JSON
line at exit: its command line and the third-party top-level modules it imported (the dry run
compares them against the GPU machine's package list).
"""

from __future__ import annotations

import atexit
import json
import os
import sys


class _Blocker:
    """A meta-path finder that refuses the blocked top-level packages."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in self.names:
            raise ModuleNotFoundError(f"No module named {top!r} (gpu_check: not on the GPU machine)",
                                      name=top)
        return None


def third_party_modules() -> list[str]:
    """Top-level names in sys.modules that are neither stdlib nor this repository's."""
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    own = {"backend", "tests", "addon", "scripts", "sitecustomize", "conftest", "__main__",
           "__mp_main__"}
    names = {name.split(".")[0] for name in list(sys.modules)}
    return sorted(n for n in names if n not in stdlib and n not in own and not n.startswith("_")
                  and not n.startswith("gpu_"))


def _record(path: str) -> None:
    line = json.dumps({"argv": sys.argv[:4], "modules": third_party_modules()})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def install() -> None:
    blocked = {n for n in os.environ.get("GPU_CHECK_BLOCK", "").split(",") if n}
    if blocked and not any(isinstance(f, _Blocker) for f in sys.meta_path):
        sys.meta_path.insert(0, _Blocker(blocked))
    record = os.environ.get("GPU_CHECK_IMPORTS")
    if record:
        atexit.register(_record, record)


install()
