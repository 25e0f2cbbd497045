"""All add-on state: one PropertyGroup on the scene (``scene.toonsplat``)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

STYLES = [("cel", "Cel", "Face-aware cel shading: flat regions, drawn eyes, exposure and white "
                          "balance set per clip (built-in, no weights)"),
          ("toon", "Toon", "Flat colours and ink edges over the whole frame (built-in, no weights)"),
          ("exemplar", "Exemplar", "Transfer the colours of an exemplar image"),
          ("model", "Model File", "A TorchScript or ONNX image-to-image model you provide"),
          ("folder", "Frames Folder", "Frames you already stylized, same names as the frames"),
          ("none", "None", "No stylization (a photoreal avatar)")]
# The backend's presets of ``build --proportions PRESET[:STRENGTH]`` (backend/formats/options.py).
PROPORTIONS = [("none", "None", "The face's own proportions"),
               ("subtle", "Subtle", "Slightly larger eyes, smaller nose and mouth"),
               ("toon", "Toon", "Larger eyes, smaller nose and mouth, rounder cheeks and chin, "
                                "higher forehead"),
               ("chibi", "Chibi", "Very large eyes, tiny nose and mouth, a round face")]
PRESETS = [("default", "Default", "gpu-paper on a CUDA GPU, cpu-fast otherwise"),
           ("cpu-fast", "CPU Fast", "The schedule for a CPU: fewer Gaussians and iterations"),
           ("gpu-paper", "GPU Paper", "The papers' settings (CUDA GPU)"),
           ("tiny", "Tiny", "A few hundred iterations, for a first look")]


class ToonSplatSettings(bpy.types.PropertyGroup):
    # Video
    video_path: StringProperty(name="Video", subtype="FILE_PATH",
                               description="Video of a face (or a folder of images)")
    frame_start: IntProperty(name="Start", default=0, min=0)
    frame_end: IntProperty(name="End", default=-1, min=-1, description="-1: to the end")
    frame_stride: IntProperty(name="Stride", default=1, min=1)
    size: IntProperty(name="Size", default=0, min=0, max=2048,
                      description="Working resolution in pixels; 0: automatic (the face crop's "
                                  "size in the video, 256 to 512)")
    refine_tracking: BoolProperty(
        name="Photometric Refinement", default=False,
        description="After the landmark fit, align the head to the pixels: more accurate tracking, "
                    "about 2.5 s per frame on a 2-core CPU")
    eye_contact: StringProperty(
        name="Eye Contact", default="",
        description="Frames (A-B, counted from 0 after Start and Stride) in which the person looks "
                    "into the lens; they calibrate the gaze of the whole clip (blinks in them are "
                    "skipped). Empty: none")
    # Style
    style: EnumProperty(name="Style", items=STYLES, default="cel")
    style_strength: FloatProperty(name="Strength", default=0.8, min=0.0, max=1.0, subtype="FACTOR")
    exemplar_path: StringProperty(name="Exemplar", subtype="FILE_PATH")
    style_model_path: StringProperty(name="Model", subtype="FILE_PATH")
    stylized_folder: StringProperty(name="Frames Folder", subtype="DIR_PATH")
    proportions: EnumProperty(
        name="Proportions", items=PROPORTIONS, default="none",
        description="Toon proportions in 3D, applied to the trained avatar (its blendshapes, jaw "
                    "and eyes keep working); the imported avatar can dial them with its "
                    "Proportions shape key")
    proportions_strength: FloatProperty(
        name="Proportions Strength", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
        description="How far the preset goes: 0 the face's own proportions, 1 the full preset")
    # Train
    preset: EnumProperty(name="Preset", items=PRESETS, default="default")
    iterations: IntProperty(name="Iterations", default=0, min=0,
                            description="0: the preset's number of iterations")
    device: EnumProperty(name="Device", default="prefs",
                         items=[("prefs", "Preferences", "Use the device from the preferences"),
                                ("auto", "Auto", ""), ("cuda", "CUDA", ""), ("cpu", "CPU", "")])
    job_name: StringProperty(name="Name", default="avatar",
                             description="Sub-folder of the work folder for this avatar")
    import_when_done: BoolProperty(name="Import When Done", default=True)
    # Avatar
    avatar_path: StringProperty(name="Avatar", subtype="FILE_PATH")
    tracking_path: StringProperty(name="Tracking", subtype="FILE_PATH")
    start_frame: IntProperty(name="Start Frame", default=1)
    splat_preview: BoolProperty(name="Splat Preview", default=True)
    # Export
    export_format: EnumProperty(name="Format", default="ply",
                                items=[("ply", "3DGS PLY", "Standard Gaussian splat PLY"),
                                       ("video", "Reenactment Video", "Render the tracking")])
    export_path: StringProperty(name="Output", subtype="FILE_PATH")


classes = (ToonSplatSettings,)


def register() -> None:
    bpy.types.Scene.toonsplat = bpy.props.PointerProperty(type=ToonSplatSettings)


def unregister() -> None:
    del bpy.types.Scene.toonsplat
