"""Import an existing avatar (and optionally keyframe a tracking file) and save a .blend.

    blender -b -P scripts/import_avatar.py -- --avatar A.npz [--tracking T.npz] --out OUT.blend
    python scripts/import_avatar.py --avatar A.npz [--tracking T.npz] --out OUT.blend [--render PNG]
"""

import argparse
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_toonsplat():
    """Import the repository root as the package ``toonsplat`` (as Blender does an extension)."""
    if "toonsplat" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "toonsplat", os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules["toonsplat"] = module
        spec.loader.exec_module(module)
    return sys.modules["toonsplat"]


def run(arguments):
    from toonsplat.addon import batch

    parser = argparse.ArgumentParser(prog="import_avatar.py", description=__doc__.split("\n")[0])
    parser.add_argument("--avatar", required=True, help="avatar file (.npz)")
    parser.add_argument("--tracking", default="", help="tracking file to keyframe (.npz)")
    parser.add_argument("--start-frame", type=int, default=1)
    batch.add_output_arguments(parser)
    args = parser.parse_args(arguments)
    imported = batch.import_results(args.avatar, args.tracking, not args.no_splats, args.start_frame)
    batch.finish(imported, args)


if __name__ == "__main__":
    load_toonsplat()
    from toonsplat.addon import batch

    sys.exit(batch.main(run))
