"""Build an avatar from a video and save it as a .blend (optionally render a still).

    blender -b -P scripts/build_avatar.py -- --video V --style S --out OUT.blend [--render PNG]
    python scripts/build_avatar.py --video V --style S --out OUT.blend [--render PNG]   # bpy module
    python scripts/build_avatar.py --video V --proportions toon:0.8 --out OUT.blend

The pipeline runs as ``python -m backend build`` in the backend interpreter (``--python``,
default: this Python outside Blender, else ``python3``). ``--avatar FILE [--tracking FILE]``
skips the pipeline and imports existing results. Exit code 0 on success, 2 with an
``error: ...`` line on failure.
"""

import argparse
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from toonsplat_package import load_toonsplat  # noqa: E402


def default_python() -> str:
    import bpy

    if os.path.basename(sys.executable).startswith("python") and not bpy.app.binary_path:
        return sys.executable
    return shutil.which("python3") or "python3"


def parse(arguments):
    from toonsplat.addon import batch

    parser = argparse.ArgumentParser(prog="build_avatar.py", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="video file or image folder of a face")
    source.add_argument("--avatar", help="import this avatar file instead of running the pipeline")
    parser.add_argument("--tracking", default="", help="with --avatar: keyframe this tracking file")
    parser.add_argument("--style", default="cel", help="built-in style name (default cel)")
    parser.add_argument("--proportions", default="none", metavar="PRESET[:STRENGTH]",
                        help="toon proportions in 3D for the build: none (default), subtle, toon "
                             "or chibi, strength 0..1 (default 1); the imported avatar dials them "
                             "with its Proportions shape key")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--iters", type=int, default=0)
    parser.add_argument("--size", type=int, default=0, help="working resolution (0: automatic)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--head-model", default="builtin")
    parser.add_argument("--python", default="", help="backend interpreter")
    parser.add_argument("--work", default="", help="build folder (default: beside --out)")
    parser.add_argument("--timeout", type=float, default=None, help="stop the build after N s")
    batch.add_output_arguments(parser)
    return parser.parse_args(arguments)


def run(arguments):
    from toonsplat.addon import batch, pipeline
    from toonsplat.backend.errors import ToonSplatError

    args = parse(arguments)
    avatar_path, tracking_path = args.avatar, args.tracking
    if args.avatar and args.proportions != "none":
        raise ToonSplatError("--proportions is for a build (--video); give an avatar file its "
                             "proportions with 'python -m backend proportions --avatar A "
                             "--proportions PRESET[:STRENGTH] --out B' and import B")
    if args.video:
        from toonsplat.backend.formats.proportions import parse_spec

        proportions = parse_spec(args.proportions)  # InputError names the presets
        work = args.work or os.path.splitext(os.path.abspath(args.out))[0] + "_build"
        build_arguments = pipeline.build_arguments(
            os.path.abspath(args.video), work, style=args.style, preset=args.preset,
            iterations=args.iters, device=args.device, size=args.size,
            head_model=args.head_model, proportions=proportions.preset,
            proportions_strength=proportions.strength)
        avatar_path, tracking_path = batch.run_build(build_arguments, args.python or default_python(),
                                                     work, args.timeout)
    imported = batch.import_results(avatar_path, tracking_path, splats=not args.no_splats)
    args.tracking = tracking_path  # a render is from the tracking's camera
    batch.finish(imported, args)


if __name__ == "__main__":
    load_toonsplat()
    from toonsplat.addon import batch

    sys.exit(batch.main(run))
