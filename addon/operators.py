"""Operators: each polls, validates, calls one domain function and reports errors."""

from __future__ import annotations

import os
import time

import bpy
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from ..backend.errors import ToonSplatError
from . import animation, importer, jobs, pipeline, preferences, runner


def _log_path(folder: str, name: str) -> str:
    return os.path.join(folder, "logs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log")


class TOONSPLAT_OT_run_pipeline(bpy.types.Operator):
    """Run the backend on the video: prepare, stylize, train and export, then import the avatar"""

    bl_idname = "toonsplat.run_pipeline"
    bl_label = "Build Avatar"

    def execute(self, context):
        scene_name = context.scene.name
        return _start_build(self, context, "Build avatar", "",
                            lambda state, out_dir: _import_build(state, out_dir, scene_name))


class TOONSPLAT_OT_check_tracking(bpy.types.Operator):
    """Prepare the video only (crop, landmarks, head tracking) and show the tracking QA picture;
    Build Avatar then starts from there"""

    bl_idname = "toonsplat.check_tracking"
    bl_label = "Check Tracking"

    def execute(self, context):
        return _start_build(self, context, "Check tracking", "prepare", lambda state, out_dir: (
            jobs.show_picture(os.path.join(out_dir, "data", "qa", "landmarks.png"))
            if state.status == "done" else None))


def _start_build(operator, context, title: str, stop_after: str, on_done) -> set[str]:
    """Start ``build`` with the panels' settings in the job's work folder (one run at a time)."""
    settings, prefs = context.scene.toonsplat, preferences.get(context)
    out_dir = os.path.join(prefs.work(), bpy.path.clean_name(settings.job_name or "avatar"))
    device = prefs.device if settings.device == "prefs" else settings.device
    try:
        arguments = pipeline.build_arguments(
            bpy.path.abspath(settings.video_path), out_dir, settings.style,
            settings.style_strength, bpy.path.abspath(settings.exemplar_path),
            bpy.path.abspath(settings.style_model_path), bpy.path.abspath(settings.stylized_folder),
            settings.preset, settings.iterations, device, settings.frame_start,
            settings.frame_end, settings.frame_stride, settings.size, **prefs.head_model_files(),
            stop_after=stop_after, refine_tracking=settings.refine_tracking,
            eye_contact=settings.eye_contact, proportions=settings.proportions,
            proportions_strength=settings.proportions_strength)
        argv = runner.backend_argv(prefs.backend_python(), "build", arguments)
        jobs.start("pipeline", [argv], title, _log_path(prefs.work(), "build"),
                   on_done=lambda state: on_done(state, out_dir))
    except ToonSplatError as exc:
        operator.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    return {"FINISHED"}


def _import_build(state: runner.RunState, out_dir: str, scene_name: str) -> None:
    scene = bpy.data.scenes.get(scene_name)
    if state.status != "done" or scene is None or not scene.toonsplat.import_when_done:
        return
    avatar_path, tracking_path = pipeline.result_files(state, out_dir)
    scene.toonsplat.avatar_path, scene.toonsplat.tracking_path = avatar_path, tracking_path
    imported = importer.import_avatar(avatar_path, splat_preview=scene.toonsplat.splat_preview)
    if tracking_path:
        animation.apply_tracking(imported.points, tracking_path, scene.toonsplat.start_frame, scene)


class TOONSPLAT_OT_cancel_run(bpy.types.Operator):
    """Stop the running backend job (finished outputs and the last checkpoint are kept)"""

    bl_idname = "toonsplat.cancel_run"
    bl_label = "Cancel"

    slot: StringProperty(default="pipeline", options={"HIDDEN"})

    def execute(self, context):
        if not jobs.cancel(self.slot):
            self.report({"WARNING"}, "nothing is running")
        return {"FINISHED"}


class TOONSPLAT_OT_create_backend_env(bpy.types.Operator):
    """Create a Python environment for the backend and install its requirements (needs a network
    connection for pip; nothing is downloaded while the add-on runs otherwise)"""

    bl_idname = "toonsplat.create_backend_env"
    bl_label = "Create Backend Environment"

    def execute(self, context):
        prefs = preferences.get(context)
        folder = prefs.environment_folder()
        requirements = os.path.join(runner.EXTENSION_ROOT, "requirements.txt")
        if not os.path.isfile(requirements):
            self.report({"ERROR"}, f"requirements.txt is missing from {runner.EXTENSION_ROOT}; "
                                   "reinstall the extension")
            return {"CANCELLED"}

        def done(state: runner.RunState) -> None:
            if state.status == "done":
                preferences.get().python_path = runner.venv_python(folder)

        try:
            jobs.start("env", runner.venv_steps(preferences.base_python(), folder, requirements),
                       "Backend environment", _log_path(prefs.work(), "venv"), on_done=done)
        except ToonSplatError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class TOONSPLAT_OT_import_avatar(bpy.types.Operator, ImportHelper):
    """Import a ToonSplat avatar file as shape-keyed points on a FLAME-style armature"""

    bl_idname = "toonsplat.import_avatar"
    bl_label = "Import Avatar"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    def invoke(self, context, event):
        if context.scene.toonsplat.avatar_path:
            self.filepath = bpy.path.abspath(context.scene.toonsplat.avatar_path)
        return ImportHelper.invoke(self, context, event)

    def execute(self, context):
        try:
            imported = importer.import_avatar(self.filepath,
                                              splat_preview=context.scene.toonsplat.splat_preview)
        except ToonSplatError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        context.scene.toonsplat.avatar_path = self.filepath
        for obj in context.selected_objects:
            obj.select_set(False)
        imported.points.select_set(True)
        context.view_layer.objects.active = imported.points
        self.report({"INFO"}, f"imported {len(imported.points.data.vertices)} Gaussians")
        return {"FINISHED"}


class TOONSPLAT_OT_apply_tracking(bpy.types.Operator, ImportHelper):
    """Keyframe a tracking file (this or another person's video) onto the selected avatar"""

    bl_idname = "toonsplat.apply_tracking"
    bl_label = "Apply Tracking"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and importer.ROLE_PROP in context.active_object

    def execute(self, context):
        settings = context.scene.toonsplat
        try:
            plan = animation.apply_tracking(context.active_object, self.filepath,
                                            settings.start_frame, context.scene)
        except ToonSplatError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        settings.tracking_path = self.filepath
        if plan.unmatched:
            self.report({"WARNING"}, f"{len(plan.unmatched)} avatar expressions are not in the "
                                     f"tracking and stay at 0: {', '.join(plan.unmatched[:5])}")
        else:
            self.report({"INFO"}, f"keyed {len(plan.frames)} frames")
        return {"FINISHED"}


class TOONSPLAT_OT_reset_expressions(bpy.types.Operator):
    """Set every expression of the selected avatar to 0 and its bones to the rest pose"""

    bl_idname = "toonsplat.reset_expressions"
    bl_label = "Reset Pose"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            points, rig, _ = importer.find_avatar(context.active_object)
        except ToonSplatError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for block in importer.expression_keys(points):  # the Proportions dial is kept
            block.value = 0.0
        for bone in rig.pose.bones:
            bone.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
            bone.location = (0.0, 0.0, 0.0)
        return {"FINISHED"}


class TOONSPLAT_OT_export(bpy.types.Operator):
    """Export the avatar with the backend (3DGS PLY or a reenactment video)"""

    bl_idname = "toonsplat.export"
    bl_label = "Export"

    def execute(self, context):
        settings, prefs = context.scene.toonsplat, preferences.get(context)
        try:
            command, arguments = pipeline.export_arguments(
                bpy.path.abspath(settings.avatar_path), bpy.path.abspath(settings.export_path),
                settings.export_format, bpy.path.abspath(settings.tracking_path))
            argv = runner.backend_argv(prefs.backend_python(), command, arguments)
            jobs.start("export", [argv], "Export", _log_path(prefs.work(), "export"))
        except ToonSplatError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


classes = (TOONSPLAT_OT_run_pipeline, TOONSPLAT_OT_check_tracking, TOONSPLAT_OT_cancel_run,
           TOONSPLAT_OT_create_backend_env, TOONSPLAT_OT_import_avatar, TOONSPLAT_OT_apply_tracking,
           TOONSPLAT_OT_reset_expressions, TOONSPLAT_OT_export)
