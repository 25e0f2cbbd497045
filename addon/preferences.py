"""Add-on preferences: the backend interpreter, head model, device and work folder."""

from __future__ import annotations

import os
import sys

import bpy
from bpy.props import EnumProperty, StringProperty

from . import jobs, runner

ADDON_ID = __package__.rpartition(".")[0]  # the extension package, e.g. bl_ext.user_default.toonsplat


def get(context: bpy.types.Context | None = None) -> ToonSplatPreferences:
    """This add-on's preferences."""
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def default_work_folder() -> str:
    return os.path.join(os.path.expanduser("~"), "ToonSplat")


class ToonSplatPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_path: StringProperty(
        name="Backend Python", subtype="FILE_PATH",
        description="Python interpreter with the backend requirements (torch, ...) installed; "
                    "'Create Backend Environment' makes one")
    venv_folder: StringProperty(
        name="Environment Folder", subtype="DIR_PATH",
        description="Where 'Create Backend Environment' creates the virtual environment")
    head_model: EnumProperty(
        name="Head Model", default="builtin",
        items=[("builtin", "Built-in", "The head model that ships with ToonSplat"),
               ("flame", "FLAME File", "A FLAME 2020/2023 file you downloaded (.pkl or .npz)")])
    flame_path: StringProperty(name="FLAME File", subtype="FILE_PATH")
    landmark_embedding: StringProperty(
        name="Landmark Embedding", subtype="FILE_PATH",
        description="Optional mediapipe_landmark_embedding.npz for the FLAME file")
    device: EnumProperty(
        name="Device", default="auto",
        items=[("auto", "Auto", "CUDA when available, else CPU"),
               ("cuda", "CUDA", "NVIDIA GPU"), ("cpu", "CPU", "Slow; for small jobs")])
    work_folder: StringProperty(
        name="Work Folder", subtype="DIR_PATH",
        description="Where runs write prepared data, checkpoints, avatars and logs")

    def draw(self, context):
        layout = self.layout
        column = layout.column()
        column.prop(self, "python_path")
        row = column.row(align=True)
        row.prop(self, "venv_folder")
        row.operator("toonsplat.create_backend_env", icon="CONSOLE")
        jobs.draw_run(column, "env")
        column.separator()
        column.prop(self, "head_model")
        if self.head_model == "flame":
            column.prop(self, "flame_path")
            column.prop(self, "landmark_embedding")
        column.prop(self, "device")
        column.prop(self, "work_folder")

    # -- values with defaults -----------------------------------------------------------------
    def backend_python(self) -> str:
        if self.python_path:
            return bpy.path.abspath(self.python_path)
        folder = self.environment_folder()
        return runner.venv_python(folder) if os.path.isdir(folder) else ""

    def environment_folder(self) -> str:
        if self.venv_folder:
            return bpy.path.abspath(self.venv_folder)
        return os.path.join(bpy.utils.extension_path_user(ADDON_ID, create=False)
                            if "." in ADDON_ID else default_work_folder(), "backend-venv")

    def work(self) -> str:
        return bpy.path.abspath(self.work_folder) if self.work_folder else default_work_folder()

    def head_model_files(self) -> dict[str, str]:
        """``head_model`` and ``landmark_embedding`` for ``pipeline.build_arguments``."""
        if self.head_model == "builtin":
            return {"head_model": "builtin"}
        files = {"head_model": bpy.path.abspath(self.flame_path)}
        if self.landmark_embedding:
            files["landmark_embedding"] = bpy.path.abspath(self.landmark_embedding)
        return files


def base_python() -> str:
    """The interpreter used to create the venv: Blender's own Python."""
    return sys.executable


classes = (ToonSplatPreferences,)
