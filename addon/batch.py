"""Headless batch work shared by ``scripts/build_avatar.py`` and ``scripts/import_avatar.py``.

Runs the backend (blocking: timers never fire in ``blender -b``), imports the results, saves a
.blend and renders a still. Every failure is a ToonSplatError with a message to act on; the
scripts turn it into one ``error:`` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import bpy
import mathutils
import numpy as np

from ..backend.errors import ToonSplatError
from ..backend.formats import SPLAT_LOW_PASS_PX2
from . import animation, axes, importer, jobs, pipeline, proportions, runner

# Render-engine identifiers per name, tried in order: EEVEE is "BLENDER_EEVEE_NEXT" in 4.2-4.5 and
# "BLENDER_EEVEE" again in 5.0 (set_render_engine tries each).
ENGINES = {"cycles": ("CYCLES",), "eevee": ("BLENDER_EEVEE_NEXT", "BLENDER_EEVEE"),
           "workbench": ("BLENDER_WORKBENCH",)}


TRACKED_CAMERA_PROP = "toonsplat_tracked_frame"  # on a camera made by add_tracked_camera


def script_arguments(argv: list[str] | None = None) -> list[str]:
    """The script's own arguments: after ``--`` under ``blender -P``, else ``sys.argv[1:]``."""
    argv = sys.argv if argv is None else argv
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="the .blend file to write")
    parser.add_argument("--render", default="", help="also render a still to this PNG")
    parser.add_argument("--resolution", type=int, default=256, help="render width and height")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="cycles")
    parser.add_argument("--samples", type=int, default=1,
                        help="render samples (Cycles, EEVEE); the splats need one in Cycles")
    parser.add_argument("--frame", type=int, default=0, help="frame to render (0: the first)")
    parser.add_argument("--no-splats", action="store_true", help="skip the splat preview")
    parser.add_argument("--background", type=float, default=0.8,
                        help="grey level behind the avatar in the render (display, 0-1)")
    parser.add_argument("--proportions-value", type=float, default=None, metavar="P",
                        help="set the Proportions dial of an avatar built with proportions, 0 "
                             "(the face's own proportions) to 1 (as built, the import's value)")


def run_build(arguments: list[str], python: str, build_dir: str,
              timeout_s: float | None = None) -> tuple[str, str]:
    """Run ``python -m backend build`` blocking; returns the avatar and tracking paths."""
    argv = runner.backend_argv(python, "build", arguments)
    log_path = os.path.join(build_dir, "build.log")
    print(f"toonsplat: running the backend ({' '.join(argv[:4])} ...), log {log_path}", flush=True)
    run = runner.BackendRun([argv], "Build avatar", log_path).start()
    state = run.wait(timeout_s, on_event=lambda event: jobs._print_event(event, run.state))
    if state.status == "cancelled":
        raise ToonSplatError(f"the build was stopped after {timeout_s} s (log: {log_path})")
    if state.status != "done":
        raise ToonSplatError(f"the backend build failed: {state.error}")
    return pipeline.result_files(state, build_dir)


def import_results(avatar_path: str, tracking_path: str = "", splats: bool = True,
                   start_frame: int = 1) -> importer.ImportedAvatar:
    """Import an avatar (and keyframe a tracking onto it) into a fresh, empty scene."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    imported = importer.import_avatar(avatar_path, splat_preview=splats)
    if tracking_path:
        plan = animation.apply_tracking(imported.points, tracking_path, start_frame)
        print(f"toonsplat: keyed {len(plan.frames)} frames of {tracking_path}", flush=True)
        if plan.unmatched:
            print(f"toonsplat: warning: {len(plan.unmatched)} expressions are not in the tracking",
                  flush=True)
    print(f"toonsplat: imported {len(imported.points.data.vertices)} Gaussians, "
          f"{len(importer.expression_keys(imported.points))} expressions", flush=True)
    return imported


def add_camera(scene: bpy.types.Scene, imported: importer.ImportedAvatar) -> bpy.types.Object:
    """A camera in front of the face (the face looks along -Y), framing the neutral points."""
    corners = [imported.points.matrix_world @ mathutils.Vector(c) for c in imported.points.bound_box]
    centre = [sum(c[i] for c in corners) / 8 for i in range(3)]
    size = max(max(c[i] for c in corners) - min(c[i] for c in corners) for i in (0, 2)) or 0.25
    camera_data = bpy.data.cameras.new("ToonSplat Camera")
    camera_data.lens = 50.0
    camera = bpy.data.objects.new("ToonSplat Camera", camera_data)
    scene.collection.objects.link(camera)
    distance = 1.2 * size / (2 * math.tan(camera_data.angle / 2)) + 0.1
    camera.location = (centre[0], centre[1] - distance, centre[2])
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.camera = camera
    return camera


def add_tracked_camera(scene: bpy.types.Scene, tracking_path: str, index: int,
                       resolution: int) -> bpy.types.Object:
    """The camera of frame ``index`` of a tracking file (the view the backend renders), with the
    render size set to the tracking's image size scaled so its longer side is ``resolution``."""
    track = animation.read_tracking(tracking_path)
    index = min(max(index, 0), track.n_frames - 1)
    width, height = (int(v) for v in track.image_size)
    scale = resolution / max(width, height)
    camera_data = bpy.data.cameras.new("ToonSplat Tracked Camera")
    camera_data.sensor_fit = "AUTO"
    camera_data.lens, camera_data.shift_x, camera_data.shift_y = axes.camera_lens(
        track.intrinsics[index], width, height, camera_data.sensor_width)
    camera_data.clip_start = 0.01
    camera = bpy.data.objects.new("ToonSplat Tracked Camera", camera_data)
    scene.collection.objects.link(camera)
    camera[TRACKED_CAMERA_PROP] = index
    camera.matrix_world = mathutils.Matrix(axes.camera_matrix_world(track.extrinsics[index]).tolist())
    scene.camera = camera
    scene.render.resolution_x = max(2, round(width * scale))
    scene.render.resolution_y = max(2, round(height * scale))
    # The backend widens every splat by its low-pass (px^2) at the size it renders: the same in metres at
    # the head's depth (its origin) for this camera's pixels.
    depth = float(np.linalg.norm(np.linalg.inv(track.extrinsics[index])[:3, 3]))
    focal_px = 0.5 * (track.intrinsics[index][0, 0] + track.intrinsics[index][1, 1]) * scale
    from . import splats
    for obj in scene.objects:
        modifier = obj.modifiers.get(splats.MODIFIER)
        if modifier is not None and modifier.node_group is not None:
            splats.set_low_pass(modifier, np.sqrt(SPLAT_LOW_PASS_PX2) * depth / focal_px)
    return camera


def save_blend(path: str) -> None:
    """Save the current file atomically (Blender writes a temp file and renames it)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(path), check_existing=False)
    if not os.path.isfile(path):
        raise ToonSplatError(f"Blender did not write {path}; check the folder is writable")


def render_still(path: str, imported: importer.ImportedAvatar, resolution: int = 256,
                 engine: str = "cycles", samples: int = 1, frame: int = 0,
                 background: tuple[float, float, float] = (0.8, 0.8, 0.8)) -> None:
    """Render one frame of the avatar to a PNG in front of a plain ``background`` (display sRGB).

    The render size is ``resolution`` square, or the tracking's aspect for a tracked camera.
    """
    scene = bpy.context.scene
    if scene.camera is None:
        add_camera(scene, imported)
    if not scene.camera.get(TRACKED_CAMERA_PROP):
        scene.render.resolution_x = scene.render.resolution_y = resolution
    set_render_engine(scene, engine)
    if engine == "cycles":
        scene.cycles.samples = samples
        scene.cycles.device = "CPU"
        scene.cycles.use_denoising = False
        # Sample each pixel at its centre, as the backend's rasterizer does (its low-pass
        # is the splats' own anti-aliasing): the splat render is then deterministic,
        # one sample is enough, and the default 1.5 px Blackman-Harris filter does not blur it.
        scene.cycles.filter_width = 0.01
    elif engine == "eevee" and hasattr(scene, "eevee"):
        scene.eevee.taa_render_samples = samples
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    # The splats carry display colours: show them as they are (AgX/Filmic would tone-map them),
    # in front of a light grey backdrop like the backend's renders.
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    world = bpy.data.worlds.get("ToonSplat backdrop") or bpy.data.worlds.new("ToonSplat backdrop")
    world.use_nodes = True
    backdrop = next((n for n in world.node_tree.nodes if n.type == "BACKGROUND"), None)
    if backdrop is None:
        backdrop = world.node_tree.nodes.new("ShaderNodeBackground")
        output = next((n for n in world.node_tree.nodes if n.type == "OUTPUT_WORLD"), None)
        output = output or world.node_tree.nodes.new("ShaderNodeOutputWorld")
        world.node_tree.links.new(backdrop.outputs["Background"], output.inputs["Surface"])
    backdrop.inputs["Color"].default_value = (*axes.srgb_to_linear(background).tolist(), 1.0)
    scene.world = world
    scene.frame_set(frame or scene.frame_start)
    scene.render.filepath = os.path.abspath(path)
    try:
        bpy.ops.render.render(write_still=True)
    except RuntimeError as exc:
        raise ToonSplatError(f"rendering with {engine} failed ({exc}); try --engine cycles") from exc
    if not os.path.isfile(path):
        raise ToonSplatError(f"the render did not write {path}")


def set_render_engine(scene: bpy.types.Scene, engine: str) -> str:
    """Set the scene's engine by name (cycles, eevee, workbench); returns the identifier used."""
    for identifier in ENGINES[engine]:
        try:
            scene.render.engine = identifier
            return identifier
        except TypeError:  # not an engine of this Blender version
            continue
    raise ToonSplatError(f"this Blender ({bpy.app.version_string}) has no {engine} render engine "
                         f"(tried {', '.join(ENGINES[engine])}); use --engine cycles")


def set_proportions_value(imported: importer.ImportedAvatar, value: float) -> None:
    """Set the avatar's Proportions dial (its shape key; the head mesh follows by drivers).

    Raises:
        ToonSplatError: the avatar has no proportions, or ``value`` is outside 0..1.
    """
    key = imported.points.data.shape_keys.key_blocks.get(proportions.PROPORTIONS_KEY)
    if key is None:
        raise ToonSplatError(f"the avatar '{imported.points.name}' has no proportions to dial; "
                             "build it with --proportions PRESET[:STRENGTH] or apply them with "
                             "'python -m backend proportions'")
    low, high = proportions.PROPORTIONS_RANGE
    if not low <= value <= high:
        raise ToonSplatError(f"--proportions-value {value:g} is outside {low:g}..{high:g}")
    key.value = value


def finish(imported: importer.ImportedAvatar, args: argparse.Namespace) -> None:
    """Save the .blend, then render if asked (the saved file has no render settings changes)."""
    if getattr(args, "proportions_value", None) is not None:
        set_proportions_value(imported, args.proportions_value)
    if args.render and getattr(args, "tracking", ""):
        # The tracking's own camera: the render shows the frame as the backend renders it.
        scene = bpy.context.scene
        frame = args.frame or scene.frame_start
        add_tracked_camera(scene, args.tracking, frame - scene.frame_start, args.resolution)
    elif args.render:
        add_camera(bpy.context.scene, imported)
    save_blend(args.out)
    print(f"toonsplat: wrote {args.out}", flush=True)
    if args.render:
        render_still(args.render, imported, args.resolution, args.engine, args.samples, args.frame,
                     (args.background,) * 3)
        print(f"toonsplat: rendered {args.render}", flush=True)


def main(run, argv: list[str] | None = None) -> int:
    """Call ``run(arguments)`` and turn errors into one line on stderr and an exit code."""
    try:
        run(script_arguments(argv))
    except ToonSplatError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
