"""Import an avatar file into Blender: shape-keyed points on a FLAME-style armature.

Two named stages: ``read_avatar`` (validate the file, no Blender work) and ``build_avatar``
(create the Blender data). Bulk data goes through ``foreach_set`` as whole numpy arrays; the axis
conversion is ``axes.points_to_blender``. What is built, for an avatar called NAME:

- collection ``NAME``;
- armature object ``NAME_rig`` with bones root, neck, jaw, eye_L, eye_R at the joint positions;
- point object ``NAME`` (one vertex per Gaussian; attributes ``color`` (linear), ``opacity``,
  ``scale``, ``rotation`` (quaternion), ``mouth``), a shape key per expression named as in the
  file, vertex groups from the LBS weights, an Armature modifier and the splat preview modifier;
- mesh object ``NAME_head`` (hidden): the neutral head mesh with the same shape keys and rig.

An avatar with toon proportions (``rest_*`` arrays) gets a ``Proportions`` key (0: the face
before proportions, 1: as built) and one corrective key per expression driven to
expression x Proportions (``addon/proportions.py``), on both objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import bpy
import numpy as np

from ..backend.errors import FormatError, ToonSplatError
from ..backend.formats import avatar as avatar_format
from . import axes, proportions

SLIDER_RANGE = (-2.0, 2.0)
BONE_LENGTH = 0.03
# Direction of each bone (head -> tail) in Blender space: the neck chain up, jaw and eyes forward.
BONE_DIRECTIONS = {"root": (0.0, 0.0, 1.0), "neck": (0.0, 0.0, 1.0), "jaw": (0.0, -1.0, 0.0),
                   "eye_L": (0.0, -1.0, 0.0), "eye_R": (0.0, -1.0, 0.0)}
AVATAR_PROP = "toonsplat_avatar"   # custom property on the points object: the source file
PROPORTIONS_PROP = "toonsplat_proportions"  # on the points object: "PRESET:STRENGTH" as built
CORRECTIVE_RANGE = (-10.0, 10.0)   # Blender's widest: a driven value is clamped to its range
ROLE_PROP = "toonsplat_role"       # "points", "head" or "rig"


@dataclass
class ImportedAvatar:
    """The Blender objects made for one avatar."""

    points: bpy.types.Object
    armature: bpy.types.Object
    head: bpy.types.Object
    collection: bpy.types.Collection


def read_avatar(path: str) -> avatar_format.Avatar:
    """Stage 1: read and validate the avatar file (no Blender work).

    Raises:
        ToonSplatError: the file is missing, not an avatar file, or of an unknown version.
    """
    if not path or not os.path.isfile(path):
        raise FormatError(f"avatar file not found: {path!r}; choose the .npz file written by "
                          "'python -m backend build' or 'train'")
    return avatar_format.read(path)


def import_avatar(path: str, name: str | None = None, splat_preview: bool = True,
                  context: bpy.types.Context | None = None) -> ImportedAvatar:
    """Read ``path`` and build the avatar in the current scene. See the module docstring."""
    data = read_avatar(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    return build_avatar(data, name, source=os.path.abspath(path), splat_preview=splat_preview,
                        context=context)


def build_avatar(data: avatar_format.Avatar, name: str, source: str = "",
                 splat_preview: bool = True,
                 context: bpy.types.Context | None = None) -> ImportedAvatar:
    """Stage 2: build the Blender objects for a validated avatar."""
    context = context or bpy.context
    collection = bpy.data.collections.new(name)
    context.scene.collection.children.link(collection)
    rig = build_armature(f"{name}_rig", data, collection)
    points = build_points(name, data, collection)
    rig_object(points, rig, data.lbs_weights, data.joint_names)
    head = build_head_mesh(f"{name}_head", data, collection)
    rig_object(head, rig, data.mesh_lbs_weights, data.joint_names)
    drive_shape_keys(head, points)
    head.hide_set(True)
    head.hide_render = True
    for obj, role in ((points, "points"), (rig, "rig"), (head, "head")):
        obj[ROLE_PROP] = role
        obj[AVATAR_PROP] = source
    points["toonsplat_rig"] = rig.name
    points["toonsplat_head"] = head.name
    if proportions.label(data):
        points[PROPORTIONS_PROP] = proportions.label(data)
    if splat_preview:
        from . import splats  # node trees are built here, on first import, never at register
        add_expression_colours(points, data)
        frames = splats.joint_frames(rig, name, collection)
        view = splats.view_object(name, collection, context.scene)
        for helper, role in [*((f, "frame") for f in frames.values()), (view, "view")]:
            helper[ROLE_PROP], helper[AVATAR_PROP] = role, source
        splats.add_preview(points, context.scene, frames=frames, view=view)
    return ImportedAvatar(points=points, armature=rig, head=head, collection=collection)


def build_armature(name: str, data: avatar_format.Avatar,
                   collection: bpy.types.Collection) -> bpy.types.Object:
    """An armature with one bone per joint at its rest position, parents from the file."""
    arm = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, arm)
    collection.objects.link(rig)
    joints = axes.points_to_blender(data.joint_positions.astype(np.float64))
    previous_active = bpy.context.view_layer.objects.active
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        bones = []
        for j, joint_name in enumerate(data.joint_names):
            bone = arm.edit_bones.new(joint_name)
            bone.head = joints[j]
            bone.tail = joints[j] + BONE_LENGTH * np.asarray(BONE_DIRECTIONS[joint_name])
            bone.roll = 0.0
            bone.use_deform = True
            bones.append(bone)
        for j, parent in enumerate(data.joint_parents):
            if parent >= 0:
                bones[j].parent = bones[int(parent)]
                bones[j].use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        bpy.context.view_layer.objects.active = previous_active
    for pose_bone in rig.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    arm.display_type = "STICK"
    rig.show_in_front = True
    return rig


def bone_rest_rotations(rig: bpy.types.Object, joint_names) -> np.ndarray:
    """(J, 3, 3) rotation part of each bone's rest matrix, in ``joint_names`` order."""
    bones = rig.data.bones
    missing = [n for n in joint_names if n not in bones]
    if missing:
        raise ToonSplatError(f"armature '{rig.name}' has no bone(s) {missing}; re-import the avatar")
    return np.array([[list(row[:3]) for row in bones[n].matrix_local[:3]] for n in joint_names])


def build_points(name: str, data: avatar_format.Avatar,
                 collection: bpy.types.Collection) -> bpy.types.Object:
    """A mesh of loose vertices, one per Gaussian, with the Gaussian attributes and shape keys."""
    mesh = bpy.data.meshes.new(name)
    n = data.n_gaussians
    layout = proportions.points_layout(data)
    mesh.vertices.add(n)
    mesh.vertices.foreach_set("co", axes.points_to_blender(layout.basis).astype(np.float32).ravel())
    rgb = axes.srgb_to_linear(axes.sh_dc_to_rgb(data.sh[:, 0, :]))
    rgba = np.concatenate([rgb, np.ones((n, 1))], axis=1).astype(np.float32)
    _set_attribute(mesh, "color", "FLOAT_COLOR", "color", rgba)
    # the splat preview's view-dependent colour (addon/splats.py): display sRGB, SH band 1
    sh = np.asarray(data.sh, dtype=np.float64)
    _set_attribute(mesh, "splat_display", "FLOAT_VECTOR", "vector",
                   (0.5 + axes.SH_C0 * sh[:, 0]).astype(np.float32))
    if sh.shape[1] >= 4:
        for band in (1, 2, 3):
            _set_attribute(mesh, f"splat_sh{band}", "FLOAT_VECTOR", "vector",
                           (axes.SH_C1 * sh[:, band]).astype(np.float32))
    opacity = 1.0 / (1.0 + np.exp(-data.opacity_logits.astype(np.float64)))
    _set_attribute(mesh, "opacity", "FLOAT", "value", opacity.astype(np.float32))
    _set_attribute(mesh, "scale", "FLOAT_VECTOR", "vector",
                   np.exp(data.log_scales.astype(np.float64)).astype(np.float32))
    quats = data.quats.astype(np.float64)
    quats /= np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    _set_attribute(mesh, "rotation", "QUATERNION", "value",
                   axes.gaussian_quats_to_blender(quats).astype(np.float32))
    _set_attribute(mesh, "mouth", "BOOLEAN", "value", data.mouth.astype(bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    # Mouth-interior Gaussians are skinned but never blended (3DGB): the layout has zero
    # expression deltas for them.
    add_shape_keys(obj, layout)
    drive_correctives(obj, obj)
    return obj


def add_expression_colours(points: bpy.types.Object, data: avatar_format.Avatar):
    """The splats' colour follows the expressions (the file's colour blendshapes, display sRGB
    per unit of each expression; mouth-interior Gaussians never change): a point attribute per
    expression that changes any colour and the splats' colours modifier, its inputs driven by
    the expression keys. The sum is clamped to [0, 1] after blending (by the splat preview), not
    the neutral colour before. Returns the modifier, or None when no expression changes a colour."""
    from . import splats

    deltas = axes.SH_C0 * np.asarray(data.delta_sh[:, :, 0, :], dtype=np.float64)
    deltas[:, np.asarray(data.mouth, dtype=bool)] = 0.0
    used = [k for k in range(data.n_expressions) if np.any(deltas[k])]
    if not used:
        return None
    for k in used:
        _set_attribute(points.data, splats.COLOUR_DELTA.format(k), "FLOAT_VECTOR", "vector",
                       deltas[k].astype(np.float32))
    modifier = splats.add_expression_colours(
        points, [(data.expression_names[k], splats.COLOUR_DELTA.format(k)) for k in used])
    for item in splats.expression_inputs(modifier):
        driver = modifier.driver_add(f'["{item.identifier}"]').driver
        driver.type = "AVERAGE"
        _key_variable(driver, "value", points.data.shape_keys, item.name)
    return modifier


def _set_attribute(mesh, name: str, data_type: str, key: str, values: np.ndarray) -> None:
    attribute = mesh.attributes.new(name, data_type, "POINT")
    attribute.data.foreach_set(key, np.ascontiguousarray(values).ravel())


def add_shape_keys(obj: bpy.types.Object, layout: proportions.ShapeKeyLayout) -> None:
    """A Basis plus relative shape keys: ``Proportions`` (when the layout has it, value 1), one
    per expression (value 0), one corrective per expression (values set by drivers later).

    Args:
        obj: mesh object whose vertices are ``layout.basis`` (Blender space).
        layout: the keys' offsets in head space (``proportions.points_layout``/``mesh_layout``).
    """
    count = len(obj.data.vertices)
    if layout.basis.shape != (count, 3):
        raise ValueError(f"a layout of {layout.basis.shape[0]} vertices does not fit {count}")
    basis = np.empty(count * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", basis)
    obj.shape_key_add(name="Basis", from_mix=False)
    basis = basis.reshape(count, 3)
    keys = []
    if layout.proportions is not None:
        keys.append((proportions.PROPORTIONS_KEY, layout.proportions, proportions.PROPORTIONS_RANGE,
                     1.0))
    keys += [(name, layout.expressions[k], SLIDER_RANGE, 0.0) for k, name in enumerate(layout.names)]
    if layout.correctives is not None:
        keys += [(proportions.corrective_name(name), layout.correctives[k], CORRECTIVE_RANGE, 0.0)
                 for k, name in enumerate(layout.names)]
    for key_name, offsets, (low, high), value in keys:
        key = obj.shape_key_add(name=key_name, from_mix=False)
        key.slider_min, key.slider_max = low, high
        key.value = value  # the API's default for a new key is 1.0
        key.data.foreach_set("co", (basis + axes.points_to_blender(offsets)).astype(np.float32).ravel())
    obj.data.shape_keys.use_relative = True


def add_vertex_groups(obj: bpy.types.Object, weights: np.ndarray, names) -> None:
    """One vertex group per joint from (V, J) LBS weights.

    Blender has no bulk setter for vertex-group weights: full weights (1.0) go in one call per
    group, the blended rest in one ``add`` per (vertex, group) pair, zero weights are skipped.
    """
    weights = np.asarray(weights, dtype=np.float32)
    for j, joint_name in enumerate(names):
        group = obj.vertex_groups.new(name=joint_name)
        column = weights[:, j]
        full = np.nonzero(column >= 1.0)[0]
        if len(full):
            group.add(full.tolist(), 1.0, "REPLACE")
        partial = np.nonzero((column > 0.0) & (column < 1.0))[0]
        add = group.add
        for index, weight in zip(partial.tolist(), column[partial].tolist()):
            add((index,), weight, "REPLACE")


def drive_shape_keys(follower: bpy.types.Object, leader: bpy.types.Object) -> None:
    """Drive each shape key of ``follower`` by the same-named key of ``leader`` (one source of
    truth: sliders and keyframes live on the points object, the head mesh follows); its
    proportion correctives are driven like the leader's own (``drive_correctives``)."""
    leader_key = leader.data.shape_keys
    blocks = follower.data.shape_keys.key_blocks
    followed = {proportions.PROPORTIONS_KEY,
                *proportions.expression_key_names([b.name for b in blocks])}
    for block in blocks[1:]:
        if block.name not in followed:  # a corrective: driven by e * p below
            continue
        driver = block.driver_add("value").driver
        driver.type = "AVERAGE"
        _key_variable(driver, "value", leader_key, block.name)
    drive_correctives(follower, leader)


def drive_correctives(follower: bpy.types.Object, leader: bpy.types.Object) -> None:
    """Drive each corrective key ``"<expression>.proportions"`` of ``follower`` to the product
    of ``leader``'s expression and Proportions keys: a simple expression (``e * p``), which
    Blender evaluates without Python, so it needs no script auto-run."""
    leader_key = leader.data.shape_keys
    blocks = follower.data.shape_keys.key_blocks
    if proportions.PROPORTIONS_KEY not in blocks:
        return
    for name in proportions.expression_key_names([b.name for b in blocks]):
        corrective = blocks.get(proportions.corrective_name(name))
        if corrective is None:
            continue
        driver = corrective.driver_add("value").driver
        driver.type = "SCRIPTED"
        _key_variable(driver, "e", leader_key, name)
        _key_variable(driver, "p", leader_key, proportions.PROPORTIONS_KEY)
        driver.expression = proportions.DRIVER_EXPRESSION


def _key_variable(driver, variable_name: str, key: bpy.types.Key, block_name: str) -> None:
    """A driver variable reading the value of shape key ``block_name`` of ``key``."""
    variable = driver.variables.new()
    variable.name = variable_name
    variable.type = "SINGLE_PROP"
    target = variable.targets[0]
    target.id_type = "KEY"
    target.id = key
    target.data_path = f'key_blocks["{escape_name(block_name)}"].value'


def expression_keys(obj: bpy.types.Object) -> list:
    """The expression shape keys of an avatar object (not Basis, Proportions or correctives)."""
    blocks = obj.data.shape_keys.key_blocks
    return [blocks[n] for n in proportions.expression_key_names([b.name for b in blocks])]


def escape_name(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def rig_object(obj: bpy.types.Object, rig: bpy.types.Object, weights: np.ndarray, names) -> None:
    """Vertex groups from ``weights``, parent to ``rig`` and an Armature modifier."""
    add_vertex_groups(obj, weights, names)
    obj.parent = rig
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = rig
    modifier.use_vertex_groups = True
    modifier.use_bone_envelopes = False


def build_head_mesh(name: str, data: avatar_format.Avatar,
                    collection: bpy.types.Collection) -> bpy.types.Object:
    """The neutral head mesh of the head model, with the mesh expression blendshapes."""
    mesh = bpy.data.meshes.new(name)
    layout = proportions.mesh_layout(data)
    vertices = axes.points_to_blender(layout.basis).astype(np.float32)
    mesh.from_pydata(vertices.tolist(), [], data.mesh_faces.astype(np.int64).tolist())
    mesh.validate()
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    add_shape_keys(obj, layout)
    return obj


def find_avatar(obj: bpy.types.Object | None) -> tuple[bpy.types.Object, bpy.types.Object, list]:
    """The points object, its armature and the meshes driven together, from any avatar object.

    Raises:
        ToonSplatError: ``obj`` is not part of an imported avatar.
    """
    if obj is None or ROLE_PROP not in obj:
        raise ToonSplatError("select an imported ToonSplat avatar (its points, head or rig "
                             "object) first, or import one with 'Import Avatar'")
    collection = obj.users_collection[0]
    members = {o.get(ROLE_PROP): o for o in collection.objects if ROLE_PROP in o}
    if "points" not in members or "rig" not in members:
        raise ToonSplatError(f"the avatar in collection '{collection.name}' is incomplete "
                             "(points or rig object missing); re-import it")
    meshes = [members[r] for r in ("points", "head") if r in members]
    return members["points"], members["rig"], meshes
