"""Keyframe a tracking file onto an imported avatar (same or another identity).

Two stages like the import: ``read_tracking`` + ``plan_animation`` (numpy only: match expression
names, convert rotations with ``axes``) and ``write_animation`` (F-curves written in bulk with
``keyframe_points.add`` + ``foreach_set``). Shape-key values go on the points object's shape keys
(the head mesh follows through drivers; the Proportions key and its correctives are left alone);
bone rotations on the armature's pose bones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import bpy
import numpy as np

from ..backend.errors import FormatError, ToonSplatError
from ..backend.formats import tracking as tracking_format
from . import axes, importer


@dataclass
class AnimationPlan:
    """What will be keyed. T frames, E matched expressions, J joints."""

    frames: np.ndarray                 # (T,) float, scene frame numbers
    expression_names: list[str]        # (E,) names present in both the avatar and the tracking
    expression_values: np.ndarray      # (T, E)
    bone_quaternions: np.ndarray       # (T, J, 4) w, x, y, z in each bone's local frame
    root_location: np.ndarray          # (T, 3) in the root bone's local frame
    fps: float
    unmatched: list[str] = field(default_factory=list)  # avatar expressions not in the tracking
    ignored: list[str] = field(default_factory=list)    # tracking expressions not on the avatar


def read_tracking(path: str) -> tracking_format.Tracking:
    """Read and validate a tracking file (no Blender work)."""
    if not path or not os.path.isfile(path):
        raise FormatError(f"tracking file not found: {path!r}; choose the tracking.npz written "
                          "by 'python -m backend build' (beside avatar.npz) or by 'train' (in its output "
                          "folder)")
    return tracking_format.read(path)


def plan_animation(tracking: tracking_format.Tracking, avatar_expressions: list[str],
                   bone_rests: np.ndarray, start_frame: int = 1,
                   path: str = "the tracking file") -> AnimationPlan:
    """Match the tracking to an avatar by expression name and convert the rotations.

    Raises:
        ToonSplatError: no expression name is shared (different head models).
    """
    column = {name: k for k, name in enumerate(tracking.expression_names)}
    matched = [name for name in avatar_expressions if name in column]
    if avatar_expressions and not matched:
        raise ToonSplatError(
            f"{path}: none of its {tracking.n_expressions} expressions "
            f"({', '.join(tracking.expression_names[:4])}, ...) exist on the avatar "
            f"({', '.join(avatar_expressions[:4])}, ...); the tracking and the avatar come from "
            "different head models: re-track the video with the avatar's head model")
    values = tracking.expressions[:, [column[name] for name in matched]].astype(np.float64)
    quats = axes.pose_bone_quats(tracking.joint_rotations, bone_rests)
    # Keep consecutive quaternions in one hemisphere so interpolation takes the short way.
    flips = np.cumprod(np.where(np.sum(quats[1:] * quats[:-1], axis=-1) < 0, -1.0, 1.0), axis=0)
    quats[1:] *= flips[..., None]
    return AnimationPlan(
        frames=start_frame + np.arange(tracking.n_frames, dtype=np.float64),
        expression_names=matched, expression_values=values, bone_quaternions=quats,
        root_location=axes.root_location(tracking.translation, bone_rests[0]), fps=tracking.fps,
        unmatched=[name for name in avatar_expressions if name not in column],
        ignored=[name for name in tracking.expression_names if name not in set(avatar_expressions)])


def apply_tracking(obj: bpy.types.Object, path: str, start_frame: int = 1,
                   scene: bpy.types.Scene | None = None) -> AnimationPlan:
    """Keyframe the tracking file ``path`` onto the avatar that ``obj`` belongs to."""
    points, rig, _ = importer.find_avatar(obj)
    tracking = read_tracking(path)
    names = [block.name for block in importer.expression_keys(points)]
    joint_names = [bone.name for bone in rig.pose.bones]
    plan = plan_animation(tracking, names, importer.bone_rest_rotations(rig, joint_names),
                          start_frame, path)
    write_animation(points, rig, joint_names, plan, os.path.splitext(os.path.basename(path))[0])
    set_scene_timing(scene or bpy.context.scene, plan)
    return plan


def write_animation(points: bpy.types.Object, rig: bpy.types.Object, joint_names: list[str],
                    plan: AnimationPlan, label: str) -> None:
    """Write the plan as F-curves: one new action for the shape keys, one for the armature."""
    key = points.data.shape_keys
    fcurves = _new_action_fcurves(key, f"{points.name} {label} expressions")
    for block in importer.expression_keys(points):
        block.value = 0.0  # expressions the tracking does not have stay neutral (Proportions stays)
    for e, name in enumerate(plan.expression_names):
        block = key.key_blocks[name]
        low, high = plan.expression_values[:, e].min(), plan.expression_values[:, e].max()
        block.slider_min = min(block.slider_min, float(np.floor(low)))
        block.slider_max = max(block.slider_max, float(np.ceil(high)))
        path = f'key_blocks["{importer.escape_name(name)}"].value'
        _write_curve(fcurves, path, 0, plan.frames, plan.expression_values[:, e], "Expressions")
    fcurves = _new_action_fcurves(rig, f"{rig.name} {label} pose")
    for j, bone in enumerate(joint_names):
        rig.pose.bones[bone].rotation_mode = "QUATERNION"
        for i in range(4):
            _write_curve(fcurves, f'pose.bones["{bone}"].rotation_quaternion', i, plan.frames,
                         plan.bone_quaternions[:, j, i], bone)
    for i in range(3):
        _write_curve(fcurves, f'pose.bones["{joint_names[0]}"].location', i, plan.frames,
                     plan.root_location[:, i], joint_names[0])


def _new_action_fcurves(id_data: bpy.types.ID, name: str):
    """A fresh action assigned to ``id_data``; returns the collection to add F-curves to.

    Blender 4.4+ stores F-curves in a slot's channelbag; 4.2/4.3 directly on the action.
    """
    action = bpy.data.actions.new(name)
    animation = id_data.animation_data or id_data.animation_data_create()
    if hasattr(action, "slots"):
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        animation.action = action
        animation.action_slot = slot
        # The layer -> keyframe strip -> channelbag API is in 4.4, 4.5 and 5.0 alike (bpy_extras'
        # helper for it is not in 4.5).
        layer = action.layers[0] if len(action.layers) else action.layers.new("Layer")
        strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
        return strip.channelbag(slot, ensure=True).fcurves
    animation.action = action
    return action.fcurves


def action_fcurves(id_data: bpy.types.ID):
    """The F-curves of the action assigned to ``id_data`` (its slot's channelbag on 4.4+)."""
    animation = id_data.animation_data
    action = animation.action if animation else None
    if action is None:
        return []
    if hasattr(action, "slots"):
        for layer in action.layers:
            for strip in layer.strips:
                bag = strip.channelbag(animation.action_slot)
                if bag is not None:
                    return bag.fcurves
        return []
    return action.fcurves


def _write_curve(fcurves, data_path: str, index: int, frames: np.ndarray, values: np.ndarray,
                 group: str) -> None:
    """One F-curve with a linear key per frame, written in bulk."""
    # How a new curve gets its group differs: group_name= (5.0), action_group= (the legacy
    # action's curves, 4.2), or none (4.4/4.5 channelbags: add it to the channelbag's groups).
    parameters = fcurves.bl_rna.functions["new"].parameters.keys()
    if "group_name" in parameters:
        curve = fcurves.new(data_path, index=index, group_name=group)
    elif "action_group" in parameters:
        curve = fcurves.new(data_path, index=index, action_group=group)
    else:
        curve = fcurves.new(data_path, index=index)
        groups = fcurves.data.groups
        curve.group = groups.get(group) or groups.new(group)
    points = curve.keyframe_points
    points.add(len(frames))
    points.foreach_set("co", np.stack([frames, values], axis=1).astype(np.float32).ravel())
    linear = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    points.foreach_set("interpolation", np.full(len(frames), linear, dtype=np.int32))
    curve.update()


def set_scene_timing(scene: bpy.types.Scene, plan: AnimationPlan) -> None:
    """Scene fps (fps / fps_base reproduces fractional rates) and frame range of the plan."""
    fps = max(1, int(round(plan.fps)))
    scene.render.fps = fps
    scene.render.fps_base = fps / plan.fps
    scene.frame_start = int(plan.frames[0])
    scene.frame_end = int(plan.frames[-1])
    scene.frame_set(int(plan.frames[0]))
