"""The splat preview: each Gaussian drawn with its exact profile, in the viewport and in renders.

A geometry-nodes modifier keeps the points themselves (so the evaluated mesh still holds the
deformed Gaussian centres, with the turned rotations in ``splat_rotation``) and adds one flat
polygon per point through its centre, facing the eye (``_camera_facing_splats``): the ``View``
object when evaluated for the viewport (an empty that ``addon/viewport.py`` keeps on the 3D
view's eye), the scene's active camera in renders (F12, batch stills; Cycles and EEVEE). The
polygon is the Gaussian's 3.33-sigma footprint seen from the eye, and its material computes the
Gaussian's exact profile along each ray in the Gaussian's whitened frame, so every splat is drawn
at its centre's depth, as the backend composites (sorted by centre depth). Ellipsoid shells,
used before, drew each splat where the ray enters it, up to 2.5 standard deviations in front of
its centre, so large splats inside the head showed through the face: 22.7-23.6 dB head PSNR
against the backend on real-clip avatars, 32.7-33.5 now (docs/ADDON.md, "Render parity").

Splats turn with the bones (``_skinned_rotation``: the joints' rotations read from bone-parented
empties, ``joint_frames``) and their colours follow the expressions (``add_expression_colours``,
a modifier of its own before this one). Like the backend's rasterizer (SPLAT_LOW_PASS_PX2, 0.1
px^2, added to every projected covariance), each Gaussian is widened by a small isotropic
low-pass, sigma^2 + LOW_PASS^2 per axis (a modifier input), so thin splats keep the width they
were trained with.
Only nodes that EEVEE and Cycles both support, all present in Blender 4.2. Nothing here runs at
register: ``add_preview`` builds the node group and material the first time an avatar is imported
and reuses them afterwards.
"""

from __future__ import annotations

import math

import bpy
import mathutils

from ..backend.formats import JOINT_NAMES, SPLAT_LOW_PASS_PX2

NODE_GROUP = "ToonSplat Splats 2"  # "ToonSplat Splats" (ellipsoids) stays in older files
MODIFIER = "Splat Preview"
# metres: the backend's low-pass at its training size (~256 px, f ~ 1.2 x size, 0.6 m): 0.6 mm
LOW_PASS = math.sqrt(SPLAT_LOW_PASS_PX2) * 0.6 / (1.2 * 256)
LOW_PASS_INPUT = "Low-pass Size"
VIEW_INPUT = "View"  # the modifier's object input: the viewport's eye (``view_object``)
ROTATION_ATTRIBUTE = "splat_rotation"  # the turned rotation, on the evaluated points
DISC_MATERIAL = "ToonSplat Splat Polygon"
DISC_VERTICES = 12
DISC_SIGMAS = 3.33  # the footprint's inner radius in standard deviations (the backend's extent)
PLANE_COLUMNS = ("splat_a1", "splat_a2", "splat_a3")  # a polygon's instance transform columns
WHITE_COLUMNS = ("splat_w1", "splat_w2", "splat_w3")  # the same in the Gaussian's whitened frame
DEFAULT_EYE = (0.0, -0.6, 0.0)  # Blender space: the face looks along -Y
JOINT_INPUT = "Frame {}"  # the modifier's object input per joint (``joint_frames``)
COLOURS_MODIFIER = "Splat Expression Colours"
DISPLAY_ATTRIBUTE = "splat_display"  # display sRGB colour before view dependence (import: neutral)
SH_ATTRIBUTES = ("splat_sh1", "splat_sh2", "splat_sh3")  # C1 x the SH band-1 coefficients
SKIN_ATTRIBUTE = "splat_skin"  # the skinning rotation alone, on the evaluated points
COLOUR_DELTA = "splat_drgb_{}"  # display sRGB change per unit of expression k

TRANSPARENT_BOUNCES = 256
# Russian roulette on the dimming transparent path turns the last layers of a head into bright
# speckles (a survivor is weighted up by 1 / p): off for every layer the limit allows. Measured on
# a trained avatar (tests/test_blender_parity.py): 64 -> 25.5 dB head PSNR, 256 -> 34.9 dB.
MIN_TRANSPARENT_BOUNCES = TRANSPARENT_BOUNCES


def add_preview(obj: bpy.types.Object, scene: bpy.types.Scene | None = None,
                frames: dict | None = None, view: bpy.types.Object | None = None
                ) -> bpy.types.Modifier:
    """Add the splat preview modifier (after the Armature modifier) to a points object;
    ``frames`` (joint name -> object, ``joint_frames``) turn the splats with the bones, ``view``
    (``view_object``) is the viewport's eye.

    Splats overlap many layers deep: with Cycles' default of 8 transparent bounces, rays stop
    inside the head and render black speckles, so the scene's limit is raised (never lowered).
    """
    modifier = obj.modifiers.new(MODIFIER, "NODES")
    modifier.node_group = splat_node_group()
    inputs = {JOINT_INPUT.format(joint): frame for joint, frame in (frames or {}).items()}
    if view is not None:
        inputs[VIEW_INPUT] = view
    for name, target in inputs.items():
        modifier[modifier.node_group.interface.items_tree[name].identifier] = target
    scene = scene or bpy.context.scene
    if scene is not None and hasattr(scene, "cycles"):
        cycles = scene.cycles
        cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
        cycles.min_transparent_bounces = max(cycles.min_transparent_bounces,
                                             MIN_TRANSPARENT_BOUNCES)
    return modifier


def add_expression_colours(obj: bpy.types.Object, terms) -> bpy.types.Modifier:
    """The modifier that blends the splats' colour with the expressions, as the backend does
    (Eq. 1 on the colour): ``splat_display += sum_k value_k * delta_k`` in display sRGB (the
    splat preview clamps and decodes it into ``color``). A geometry-nodes modifier of its own,
    before the splat preview, with a node group per avatar whose float inputs are named as the
    expressions (``expression_inputs``; the importer drives each by its shape key).

    Args:
        obj: the points object.
        terms: (expression name, point attribute of its display sRGB change per unit) pairs.
    """
    modifier = obj.modifiers.new(COLOURS_MODIFIER, "NODES")
    modifier.node_group = _expression_colour_group(f"{NODE_GROUP} Colours {obj.name}", terms)
    return modifier


def expression_inputs(modifier: bpy.types.Modifier) -> list:
    """The float inputs of an expression-colours modifier's group (named as the expressions)."""
    return [item for item in modifier.node_group.interface.items_tree
            if item.item_type == "SOCKET" and item.in_out == "INPUT"
            and item.socket_type == "NodeSocketFloat"]


def _expression_colour_group(name: str, terms) -> bpy.types.NodeTree:
    """Geometry in, ``splat_display`` (display sRGB, not clamped) stored from its own value and
    the driven (name, attribute) terms; the splat preview clamps and decodes it."""
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    for expression, _ in terms:
        group.interface.new_socket(expression, in_out="INPUT", socket_type="NodeSocketFloat")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    total = _named_attribute(nodes, DISPLAY_ATTRIBUTE, "FLOAT_VECTOR").outputs["Attribute"]
    for index, (_, attribute) in enumerate(terms):
        term = _vector_math(nodes, links, "SCALE",
                            _named_attribute(nodes, attribute, "FLOAT_VECTOR").outputs["Attribute"])
        links.new(group_in.outputs[index + 1], term.node.inputs["Scale"])
        total = _vector_math(nodes, links, "ADD", total, term)
    links.new(_store(nodes, links, group_in.outputs[0], DISPLAY_ATTRIBUTE, total),
              group_out.inputs[0])
    return group


def _srgb_to_linear(nodes, links, value):
    """IEC 61966-2-1 on a float socket clamped to [0, 1] (as ``axes.srgb_to_linear``)."""
    clamped = _math(nodes, links, "ADD", value, 0.0)
    clamped.node.use_clamp = True
    low = _math(nodes, links, "DIVIDE", clamped, 12.92)
    high = _math(nodes, links, "POWER", _math(nodes, links, "DIVIDE", _math(
        nodes, links, "ADD", clamped, 0.055), 1.055), 2.4)
    is_low = _math(nodes, links, "LESS_THAN", clamped, 0.04045 + 1e-7)  # 1 where low
    return _math(nodes, links, "ADD", _math(nodes, links, "MULTIPLY", low, is_low),
                 _math(nodes, links, "MULTIPLY", high, _math(nodes, links, "SUBTRACT", 1.0, is_low)))


def joint_frames(rig: bpy.types.Object, name: str,
                 collection: bpy.types.Collection) -> dict[str, bpy.types.Object]:
    """An empty per bone, parented to it, placed so that at rest it coincides with the rig (its
    world matrix then is the rig's times the bone's skinning transform, pose @ rest^-1): the
    splat preview reads each joint's rotation from it. Hidden, in the avatar's collection."""
    frames = {}
    for bone in rig.data.bones:
        frame = bpy.data.objects.new(f"{name}_{bone.name}_frame", None)
        collection.objects.link(frame)
        frame.parent, frame.parent_type, frame.parent_bone = rig, "BONE", bone.name
        # a bone parent's matrix is its tail's: undo the rest one, so at rest frame = rig
        tail = bone.matrix_local @ mathutils.Matrix.Translation((0.0, bone.length, 0.0))
        frame.matrix_parent_inverse = tail.inverted()
        frame.empty_display_size = 0.01
        frame.hide_set(True)
        frame.hide_render = True
        frames[bone.name] = frame
    return frames


def view_object(name: str, collection: bpy.types.Collection,
                scene: bpy.types.Scene | None = None) -> bpy.types.Object:
    """The empty the viewport's splats face (``addon/viewport.py`` moves it to the 3D view's
    eye). Until a 3D view moves it, it sits where the scene's camera is, else 0.6 m in front of
    the face. Hidden, in the avatar's collection."""
    view = bpy.data.objects.new(f"{name}_view", None)
    collection.objects.link(view)
    scene = scene or bpy.context.scene
    camera = scene.camera if scene is not None else None
    view.location = camera.matrix_world.translation if camera is not None else DEFAULT_EYE
    view.empty_display_size = 0.02
    view.hide_set(True)
    view.hide_render = True
    return view


def set_low_pass(modifier: bpy.types.Modifier, size: float) -> None:
    """Set the isotropic low-pass (metres) that widens every Gaussian; 0 draws them unfiltered."""
    socket = modifier.node_group.interface.items_tree[LOW_PASS_INPUT]
    modifier[socket.identifier] = float(size)
    modifier.id_data.update_tag()


def splat_node_group() -> bpy.types.NodeTree:
    """The geometry-nodes group, built once per file: the points themselves and one polygon per
    point facing the eye (the ``View`` object in the viewport, the active camera in renders)."""
    group = bpy.data.node_groups.get(NODE_GROUP)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    low_pass = group.interface.new_socket(LOW_PASS_INPUT, in_out="INPUT",
                                          socket_type="NodeSocketFloat")
    low_pass.default_value, low_pass.min_value, low_pass.subtype = LOW_PASS, 0.0, "DISTANCE"
    group.interface.new_socket(VIEW_INPUT, in_out="INPUT", socket_type="NodeSocketObject")
    for joint in JOINT_NAMES:
        group.interface.new_socket(JOINT_INPUT.format(joint), in_out="INPUT",
                                   socket_type="NodeSocketObject")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_out = nodes.new("NodeGroupOutput")
    skin, rotation = _skinned_rotation(nodes, links, group_in)
    points = _store(nodes, links, group_in.outputs["Geometry"], SKIN_ATTRIBUTE, skin, "QUATERNION")
    points = _store(nodes, links, points, ROTATION_ATTRIBUTE, rotation, "QUATERNION")
    sigma = _widened_sigma(nodes, links, group_in.outputs[LOW_PASS_INPUT])
    # Each Store node evaluates its own field: read the rotations back rather than recompute
    # the skinning for every attribute stored below (70k x 50: 20 -> 29 fps).
    stored_rotation = _named_attribute(nodes, ROTATION_ATTRIBUTE, "QUATERNION").outputs["Attribute"]
    eye = _eye(nodes, links, group_in)
    points = _store(nodes, links, points, "color", _view_colour(nodes, links, eye), "FLOAT_COLOR")
    polygons = _camera_facing_splats(nodes, links, points, stored_rotation, sigma, eye)
    join = nodes.new("GeometryNodeJoinGeometry")  # instances: the evaluated mesh is the points
    links.new(points, geometry_socket(join.inputs))
    links.new(polygons, geometry_socket(join.inputs))
    links.new(geometry_socket(join.outputs), group_out.inputs[0])
    return group


def _eye(nodes, links, group_in):
    """Where the splats are seen from, in the points object's space: the ``View`` object
    (following the 3D viewport, ``addon/viewport.py``) when evaluated for the viewport, the
    scene's active camera when evaluated for a render."""
    eyes = []
    for source in (group_in.outputs[VIEW_INPUT],
                   nodes.new("GeometryNodeInputActiveCamera").outputs[0]):
        info = nodes.new("GeometryNodeObjectInfo")
        info.transform_space = "RELATIVE"
        links.new(source, info.inputs["Object"])
        eyes.append(info.outputs["Location"])
    switch = nodes.new("GeometryNodeSwitch")
    switch.input_type = "VECTOR"
    links.new(nodes.new("GeometryNodeIsViewport").outputs[0], switch.inputs["Switch"])
    links.new(eyes[0], switch.inputs["True"])
    links.new(eyes[1], switch.inputs["False"])
    return switch.outputs[0]


def _skinned_rotation(nodes, links, group_in):
    """(skinning rotation, turned rotation): each splat's rotation turned with the bones, as the
    backend's LBS turns it: the normalized weighted sum of the joints' skinning quaternions
    (weights: the vertex groups; signs aligned with the root's) applied to the ``rotation``
    attribute.

    A joint's skinning rotation is the rotation of its frame object (``joint_frames``: an empty
    bone-parented so it sits at the points object's origin at rest) relative to the points
    object. A joint input left empty counts as unrotated.
    """
    parts = []
    for joint in JOINT_NAMES:
        info = nodes.new("GeometryNodeObjectInfo")
        info.transform_space = "RELATIVE"
        links.new(group_in.outputs[JOINT_INPUT.format(joint)], info.inputs["Object"])
        quaternion = nodes.new("FunctionNodeRotationToQuaternion")
        links.new(info.outputs["Rotation"], quaternion.inputs["Rotation"])
        xyz = nodes.new("ShaderNodeCombineXYZ")
        for axis in "XYZ":
            links.new(quaternion.outputs[axis], xyz.inputs[axis])
        parts.append((quaternion.outputs["W"], xyz.outputs[0]))
    root_w, root_xyz = parts[0]
    w_sum, xyz_sum = None, None
    for joint, (w, xyz) in zip(JOINT_NAMES, parts):
        same_side = _math(nodes, links, "ADD", _math(nodes, links, "MULTIPLY", w, root_w),
                          _dot(nodes, links, xyz, root_xyz))
        sign = _math(nodes, links, "SUBTRACT", _math(nodes, links, "MULTIPLY", _math(
            nodes, links, "GREATER_THAN", same_side, -1e-12), 2.0), 1.0)
        weight = _named_attribute(nodes, joint, "FLOAT").outputs["Attribute"]  # vertex group
        signed = _math(nodes, links, "MULTIPLY", weight, sign)
        w_term = _math(nodes, links, "MULTIPLY", w, signed)
        xyz_term = _vector_math(nodes, links, "SCALE", xyz)
        links.new(signed, xyz_term.node.inputs["Scale"])
        w_sum = w_term if w_sum is None else _math(nodes, links, "ADD", w_sum, w_term)
        xyz_sum = xyz_term if xyz_sum is None else _vector_math(nodes, links, "ADD", xyz_sum, xyz_term)
    norm = _math(nodes, links, "SQRT", _math(nodes, links, "ADD", _math(
        nodes, links, "MULTIPLY", w_sum, w_sum), _dot(nodes, links, xyz_sum, xyz_sum)))
    norm = _math(nodes, links, "MAXIMUM", norm, 1e-12)
    skin = nodes.new("FunctionNodeQuaternionToRotation")
    links.new(_math(nodes, links, "DIVIDE", w_sum, norm), skin.inputs["W"])
    unit = _vector_math(nodes, links, "SCALE", xyz_sum)
    links.new(_math(nodes, links, "DIVIDE", 1.0, norm), unit.node.inputs["Scale"])
    components = nodes.new("ShaderNodeSeparateXYZ")
    links.new(unit, components.inputs[0])
    for axis in "XYZ":
        links.new(components.outputs[axis], skin.inputs[axis])
    turned = nodes.new("FunctionNodeRotateRotation")
    turned.rotation_space = "GLOBAL"
    links.new(_named_attribute(nodes, "rotation", "QUATERNION").outputs["Attribute"],
              turned.inputs["Rotation"])
    links.new(skin.outputs["Rotation"], turned.inputs["Rotate By"])
    return skin.outputs["Rotation"], turned.outputs["Rotation"]


def _view_colour(nodes, links, eye):
    """Linear ``color`` seen from the eye: display sRGB ``splat_display`` (the neutral colour or
    the expressions' blend) plus the SH degree-1 band (``splat_sh1..3``, C1 x the file's
    coefficients) at the view direction (eye to centre) turned back by the skinning rotation and
    written in head axes, clamped to [0, 1], then decoded (as the backend's ``eval_sh``; bands 2
    and 3 are not shown). An avatar without band 1 has no ``splat_sh*``: they read as zero."""
    position = nodes.new("GeometryNodeInputPosition").outputs["Position"]
    view = _vector_math(nodes, links, "NORMALIZE",
                        _vector_math(nodes, links, "SUBTRACT", position, eye))
    unturn = nodes.new("FunctionNodeInvertRotation")
    links.new(_named_attribute(nodes, SKIN_ATTRIBUTE, "QUATERNION").outputs["Attribute"],
              unturn.inputs["Rotation"])
    blender = nodes.new("ShaderNodeSeparateXYZ")  # Blender (x, y, z) = head (x, -z, y)
    links.new(_rotate(nodes, links, view, unturn.outputs["Rotation"]), blender.inputs[0])
    head = {"x": blender.outputs["X"], "y": blender.outputs["Z"],
            "z": _math(nodes, links, "MULTIPLY", blender.outputs["Y"], -1.0)}
    total = _named_attribute(nodes, DISPLAY_ATTRIBUTE, "FLOAT_VECTOR").outputs["Attribute"]
    for name, (axis, sign) in zip(SH_ATTRIBUTES, (("y", -1.0), ("z", 1.0), ("x", -1.0))):
        term = _vector_math(nodes, links, "SCALE",
                            _named_attribute(nodes, name, "FLOAT_VECTOR").outputs["Attribute"])
        links.new(_math(nodes, links, "MULTIPLY", head[axis], sign), term.node.inputs["Scale"])
        total = _vector_math(nodes, links, "ADD", total, term)
    return _srgb_vector_to_linear(nodes, links, total)


def _srgb_vector_to_linear(nodes, links, vector):
    channels = nodes.new("ShaderNodeSeparateXYZ")
    links.new(vector, channels.inputs[0])
    linear = nodes.new("ShaderNodeCombineXYZ")
    for axis in "XYZ":
        links.new(_srgb_to_linear(nodes, links, channels.outputs[axis]), linear.inputs[axis])
    return linear.outputs[0]


def _widened_sigma(nodes, links, low_pass):
    """Per-axis standard deviations sqrt(scale^2 + low_pass^2): R (S^2 + l^2 I) R^T is
    Sigma + l^2 I, exactly."""
    scale = _named_attribute(nodes, "scale", "FLOAT_VECTOR").outputs["Attribute"]
    variance = _vector_math(nodes, links, "MULTIPLY", scale, scale)
    low_variance = _math(nodes, links, "MULTIPLY", low_pass, low_pass)
    return _vector_sqrt(nodes, links, _vector_math(nodes, links, "ADD", variance, low_variance))


def _camera_facing_splats(nodes, links, points, rotation, sigma, eye):
    """A flat polygon per point through its centre, facing the eye: every pixel of a splat is
    drawn at its centre's depth, the order the backend composites in (by centre depth).

    The polygon is the Gaussian's DISC_SIGMAS footprint seen from the eye: the disc across the
    whitened view direction n' (the plane where each ray meets the Gaussian's peak; its point
    (x, y), in standard deviations, is centre + x e1 + y e2 with e_i = R (sigma t_i), t1, t2
    orthonormal across n'), projected along the view direction n onto the plane through the
    centre across n: centre + x a1 + y a2 with a_i = e_i - (e_i . n) n. One shared polygon
    mesh, instanced with the affine transform [a1 a2 a3] (a3 along n), so the work per frame is
    per point, not per vertex. The material needs the hit's offset and the ray's direction in
    the whitened frame (M = sigma^-1 R^T, where the Gaussian is isotropic): from instance
    coordinates u, M (a1 u_x + a2 u_y + a3 u_z), so the columns w_i = M a_i are stored per point
    (``splat_w1..3``) and the material applies them to the hit point and to the incoming ray,
    both in instance space.
    """
    position = nodes.new("GeometryNodeInputPosition").outputs["Position"]
    to_eye = _vector_math(nodes, links, "SUBTRACT", eye, position)
    inverse = nodes.new("FunctionNodeInvertRotation")
    links.new(rotation, inverse.inputs["Rotation"])
    whiten = lambda vector: _vector_math(  # noqa: E731  M v = (R^T v) / sigma
        nodes, links, "DIVIDE", _rotate(nodes, links, vector, inverse.outputs["Rotation"]), sigma)
    first, second = _across(nodes, links, _vector_math(nodes, links, "NORMALIZE", whiten(to_eye)))
    stored = _store(nodes, links, points, "splat_n", _vector_math(nodes, links, "NORMALIZE", to_eye))
    for name, axis in (("splat_e1", first), ("splat_e2", second)):
        stored = _store(nodes, links, stored, name, _rotate(
            nodes, links, _vector_math(nodes, links, "MULTIPLY", axis, sigma), rotation))
    # read back (each Store node evaluates its own field, so shared ones are stored once)
    normal = _named_attribute(nodes, "splat_n", "FLOAT_VECTOR").outputs["Attribute"]
    columns = []
    for name in ("splat_e1", "splat_e2"):
        spread = _named_attribute(nodes, name, "FLOAT_VECTOR").outputs["Attribute"]
        along = _vector_math(nodes, links, "SCALE", normal)
        links.new(_dot(nodes, links, spread, normal), along.node.inputs["Scale"])
        columns.append(_vector_math(nodes, links, "SUBTRACT", spread, along))
    depth = _vector_math(nodes, links, "SCALE", normal)  # a3: across the plane, the polygon's size
    links.new(_math(nodes, links, "SQRT", _dot(nodes, links, columns[0], columns[0])),
              depth.node.inputs["Scale"])
    columns.append(depth)
    for name, white_name, column in zip(PLANE_COLUMNS, WHITE_COLUMNS, columns):
        stored = _store(nodes, links, stored, name, column)
        stored = _store(nodes, links, stored, white_name, whiten(column))
    return _placed_polygons(nodes, links, stored)


def _placed_polygons(nodes, links, points):
    """The DISC_SIGMAS polygon instanced on every point with the transform [a1 a2 a3 | centre]
    stored on the point (``splat_a1..3``)."""
    disc = nodes.new("GeometryNodeMeshCircle")
    disc.fill_type = "TRIANGLE_FAN"
    disc.inputs["Vertices"].default_value = DISC_VERTICES
    disc.inputs["Radius"].default_value = DISC_SIGMAS / math.cos(math.pi / DISC_VERTICES)
    material = nodes.new("GeometryNodeSetMaterial")
    material.inputs["Material"].default_value = disc_material()
    links.new(geometry_socket(disc.outputs), geometry_socket(material.inputs))
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(points, instance.inputs["Points"])
    links.new(geometry_socket(material.outputs), instance.inputs["Instance"])
    matrix = nodes.new("FunctionNodeCombineMatrix")
    sources = [_named_attribute(nodes, name, "FLOAT_VECTOR").outputs["Attribute"]
               for name in PLANE_COLUMNS] + [nodes.new("GeometryNodeInputPosition").outputs[0]]
    for column, source in enumerate(sources, start=1):
        parts = nodes.new("ShaderNodeSeparateXYZ")
        links.new(source, parts.inputs[0])
        for row, axis in enumerate("XYZ", start=1):
            links.new(parts.outputs[axis], matrix.inputs[f"Column {column} Row {row}"])
    matrix.inputs["Column 4 Row 4"].default_value = 1.0
    for column in (1, 2, 3):
        matrix.inputs[f"Column {column} Row 4"].default_value = 0.0
    placed = nodes.new("GeometryNodeSetInstanceTransform")
    links.new(geometry_socket(instance.outputs), placed.inputs["Instances"])
    links.new(matrix.outputs["Matrix"], placed.inputs["Transform"])
    return placed.outputs["Instances"]


def _across(nodes, links, normal):
    """Two unit vectors orthogonal to each other and to the unit vector ``normal``."""
    z_part = nodes.new("ShaderNodeSeparateXYZ")
    links.new(normal, z_part.inputs[0])
    near_z = _math(nodes, links, "GREATER_THAN", _math(nodes, links, "ABSOLUTE", z_part.outputs["Z"]),
                   0.9)
    helper = nodes.new("GeometryNodeSwitch")  # an axis not parallel to the normal
    helper.input_type = "VECTOR"
    links.new(near_z, helper.inputs["Switch"])
    helper.inputs["False"].default_value = (0.0, 0.0, 1.0)
    helper.inputs["True"].default_value = (1.0, 0.0, 0.0)
    first = _vector_math(nodes, links, "NORMALIZE",
                         _vector_math(nodes, links, "CROSS_PRODUCT", normal, helper.outputs[0]))
    return first, _vector_math(nodes, links, "CROSS_PRODUCT", normal, first)


def _rotate(nodes, links, vector, rotation):
    node = nodes.new("FunctionNodeRotateVector")
    links.new(vector, node.inputs["Vector"])
    links.new(rotation, node.inputs["Rotation"])
    return node.outputs["Vector"]


def _store(nodes, links, geometry, name: str, value, data_type: str = "FLOAT_VECTOR"):
    """Store a field as a point attribute ``name``; returns the geometry output."""
    node = nodes.new("GeometryNodeStoreNamedAttribute")
    node.data_type, node.domain = data_type, "POINT"
    node.inputs["Name"].default_value = name
    links.new(geometry, geometry_socket(node.inputs))
    links.new(value, node.inputs["Value"])
    return geometry_socket(node.outputs)


def geometry_socket(sockets):
    """The first geometry socket of a node's inputs or outputs.

    Socket names differ between Blender versions (Set Shade Smooth's input is "Geometry" in 4.2
    and 4.5, "Mesh" in 5.0): look sockets up by type, never by name.
    """
    for socket in sockets:
        if socket.type == "GEOMETRY":
            return socket
    raise LookupError(f"no geometry socket among {[s.name for s in sockets]}")


def _vector_sqrt(nodes, links, vector):
    """Per-component square root (Vector Math has no POWER before Blender 4.3)."""
    separate = nodes.new("ShaderNodeSeparateXYZ")
    links.new(vector, separate.inputs[0])
    combine = nodes.new("ShaderNodeCombineXYZ")
    for axis in range(3):
        links.new(_math(nodes, links, "SQRT", separate.outputs[axis]), combine.inputs[axis])
    return combine.outputs[0]


def _named_attribute(nodes, name: str, data_type: str):
    node = nodes.new("GeometryNodeInputNamedAttribute")
    node.data_type = data_type
    node.inputs["Name"].default_value = name
    return node


def disc_material() -> bpy.types.Material:
    """The polygons' material: alpha = opacity * exp(-d^2 / 2) with d the ray's distance from
    the centre in the whitened frame, |p|^2 - (p . v)^2 for the hit's whitened offset p and the
    whitened unit ray direction v, both from instance coordinates through ``splat_w1..3``."""
    material, nodes, links = _new_material(DISC_MATERIAL)
    if nodes is None:  # built earlier in this file
        return material
    columns = [_instancer_attribute(nodes, name).outputs["Vector"] for name in WHITE_COLUMNS]
    hit = nodes.new("ShaderNodeTexCoord").outputs["Object"]
    incoming = nodes.new("ShaderNodeNewGeometry").outputs["Incoming"]
    to_instance = nodes.new("ShaderNodeVectorTransform")
    to_instance.vector_type, to_instance.convert_from, to_instance.convert_to = ("VECTOR", "WORLD",
                                                                               "OBJECT")
    links.new(incoming, to_instance.inputs["Vector"])
    point = _combine(nodes, links, columns, hit)
    view = _vector_math(nodes, links, "NORMALIZE",
                        _combine(nodes, links, columns, to_instance.outputs["Vector"]))
    facing = _dot(nodes, links, point, view)
    distance = _math(nodes, links, "SUBTRACT", _dot(nodes, links, point, point),
                     _math(nodes, links, "MULTIPLY", facing, facing))
    falloff = _math(nodes, links, "EXPONENT", _math(nodes, links, "MULTIPLY", distance, -0.5))
    opacity = _instancer_attribute(nodes, "opacity").outputs["Fac"]
    _emit(nodes, links, _instancer_attribute(nodes, "color").outputs["Color"],
          _math(nodes, links, "MULTIPLY", falloff, opacity))
    material.use_backface_culling = False
    return material


def _combine(nodes, links, columns, vector):
    """sum_i vector_i * columns[i] (a 3x3 matrix given by its columns, applied to ``vector``)."""
    parts = nodes.new("ShaderNodeSeparateXYZ")
    links.new(vector, parts.inputs[0])
    terms = []
    for column, axis in zip(columns, "XYZ"):
        term = _vector_math(nodes, links, "SCALE", column)
        links.new(parts.outputs[axis], term.node.inputs["Scale"])
        terms.append(term)
    return _vector_math(nodes, links, "ADD", _vector_math(nodes, links, "ADD", terms[0], terms[1]),
                        terms[2])


def _instancer_attribute(nodes, name: str):
    node = nodes.new("ShaderNodeAttribute")
    node.attribute_type = "INSTANCER"
    node.attribute_name = name
    return node


def _new_material(name: str):
    """(material, nodes, links) for a new node material, or (existing, None, None)."""
    material = bpy.data.materials.get(name)
    if material is not None:
        return material, None, None
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    if hasattr(material, "surface_render_method"):  # EEVEE (4.2+): per-pixel stochastic alpha
        material.surface_render_method = "DITHERED"
    material.node_tree.nodes.clear()
    return material, material.node_tree.nodes, material.node_tree.links


def _emit(nodes, links, color, alpha) -> None:
    """Surface output: the colour's emission mixed with a transparent BSDF by ``alpha``."""
    output = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    links.new(color, emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    links.new(alpha, mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])
    links.new(emission.outputs["Emission"], mix.inputs[2])
    links.new(mix.outputs["Shader"], output.inputs["Surface"])


def _vector_math(nodes, links, operation: str, *vectors):
    """A Vector Math node on output sockets; returns its Vector output."""
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = operation
    for socket, vector in zip(node.inputs, vectors):
        links.new(vector, socket)
    return node.outputs["Vector"]


def _dot(nodes, links, first, second):
    """The dot product of two vector sockets (a Vector Math node's Value output)."""
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = "DOT_PRODUCT"
    links.new(first, node.inputs[0])
    links.new(second, node.inputs[1])
    return node.outputs["Value"]


def _math(nodes, links, operation: str, *inputs):
    """A Math node; each input is a number or an output socket. Returns the output socket."""
    node = nodes.new("ShaderNodeMath")
    node.operation = operation
    for socket, value in zip(node.inputs, inputs):
        if isinstance(value, (int, float)):
            socket.default_value = value
        else:
            links.new(value, socket)
    return node.outputs["Value"]
