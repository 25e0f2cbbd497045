"""Import an existing avatar (and optionally keyframe a tracking file) and save a .blend.

    blender -b -P scripts/import_avatar.py -- --avatar A.npz [--tracking T.npz] --out OUT.blend
    python scripts/import_avatar.py --avatar A.npz [--tracking T.npz] --out OUT.blend [--render PNG]
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from toonsplat_package import load_toonsplat  # noqa: E402


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
