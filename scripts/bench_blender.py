"""Bench the add-on in the real Blender: avatar import time and animated evaluation speed.

    python scripts/bench_blender.py [--gaussians 70000] [--expressions 50] [--frames 48] [--quick]
    blender -b -P scripts/bench_blender.py -- [same options]

Prints one JSON line per measurement in the backend's bench protocol (backend/bench)::

    {"bench": "blender", "case": "70k x 50", "metric": "import", "value": 1.9, "unit": "s", ...}

``import`` is reading the file plus building every object (points, shape keys, vertex groups,
armature, head mesh, splat preview). ``evaluate`` is frames per second of ``scene.frame_set`` with
a tracking keyed on every expression (all non-zero) and every bone, so all shape keys, the
armature and the splat-preview instancing are evaluated on each frame; ``evaluate_points`` is the
same without the splat preview (the deformation and the expression colours).
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from toonsplat_package import load_toonsplat  # noqa: E402


def emit(case: str, metric: str, value: float, unit: str) -> None:
    device = f"cpu ({os.cpu_count()} cores), Blender {__import__('bpy').app.version_string}"
    print(json.dumps({"bench": "blender", "case": case, "metric": metric, "value": float(value),
                      "unit": unit, "device": device}), flush=True)


def frames_per_second(scene, n_frames: int) -> float:
    """Wall-clock frames per second of ``scene.frame_set`` over ``n_frames`` distinct frames."""
    scene.frame_set(scene.frame_start)  # warm-up
    started = time.perf_counter()
    for frame in range(n_frames):
        scene.frame_set(scene.frame_start + 1 + frame % (scene.frame_end - scene.frame_start))
    return n_frames / (time.perf_counter() - started)


def bench(n_gaussians: int, n_expressions: int, n_frames: int, folder: str) -> None:
    import bpy

    toonsplat = load_toonsplat()
    sys.path.insert(0, ROOT)
    from toonsplat.addon import animation, importer
    from toonsplat.backend.formats import avatar, examples, tracking

    case = f"{n_gaussians // 1000}k x {n_expressions}"
    avatar_path, tracking_path = os.path.join(folder, "avatar.npz"), os.path.join(folder, "tracking.npz")
    avatar.write(avatar_path, examples.random_avatar(n_gaussians, n_expressions, sh_degree=3))
    take = examples.random_tracking(n_frames + 1, n_expressions, fps=25.0)
    take.expressions += 0.05  # every expression non-zero on every frame
    tracking.write(tracking_path, take)
    best = float("inf")
    for _ in range(2):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        started = time.perf_counter()
        imported = importer.import_avatar(avatar_path)
        best = min(best, time.perf_counter() - started)
    emit(case, "import", best, "s")
    animation.apply_tracking(imported.points, tracking_path)
    scene = bpy.context.scene
    emit(case, "evaluate", frames_per_second(scene, n_frames), "fps")
    imported.points.modifiers[toonsplat.addon.splats.MODIFIER].show_viewport = False
    emit(case, "evaluate_points", frames_per_second(scene, n_frames), "fps")


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="bench_blender.py", description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, default=70_000)
    parser.add_argument("--expressions", type=int, default=50)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="10k Gaussians, 12 frames")
    args = parser.parse_args(argv[argv.index("--") + 1:] if "--" in argv else argv[1:])
    if args.quick:
        args.gaussians, args.frames = 10_000, 12
    with tempfile.TemporaryDirectory() as folder:
        bench(args.gaussians, args.expressions, args.frames, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
