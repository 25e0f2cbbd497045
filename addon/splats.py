"""The splat preview: each Gaussian drawn as an oriented, scaled ellipsoid with a Gaussian falloff.

A geometry-nodes modifier instances a smooth icosphere on every point, rotated by the ``rotation``
attribute and scaled by ``SIGMAS`` x ``scale``, and keeps the points themselves (so the evaluated
mesh still holds the deformed Gaussian centres). The material reads the instance's ``color`` and
``opacity`` and fades with the distance between the view ray and the ellipsoid's centre:

    alpha = opacity * exp(-0.5 * SIGMAS^2 * (|p|^2 - (p . v)^2)),   back faces transparent,

with p the hit point and v the unit view direction in the instance's own space (where the
ellipsoid is a unit sphere): |p|^2 - (p . v)^2 is the squared distance of the view ray from the
centre, so the Gaussian's profile is exact wherever the ray hits the (faceted) mesh, whatever the
scales and rotation. Like the backend's rasterizer (0.3 px^2 added to every projected covariance),
each Gaussian is widened by a small isotropic low-pass, sigma^2 + LOW_PASS^2 per axis (a modifier
input), so thin splats keep the width they were trained with. It uses only nodes that EEVEE
and Cycles both support. Nothing here runs at register: ``add_preview`` builds the node group and
material the first time an avatar is imported and reuses them afterwards.
"""

from __future__ import annotations

import bpy

NODE_GROUP = "ToonSplat Splats"
MATERIAL = "ToonSplat Splat"
MODIFIER = "Splat Preview"
SIGMAS = 2.5  # the ellipsoid's inner radius in standard deviations
LOW_PASS = 0.001  # metres: the backend's 0.3 px^2 at its training size (~256 px, f ~ 1.2 x size, 0.6 m)
SUBDIVISIONS = 2
INRADIUS = 0.9341712  # of the unit icosphere with SUBDIVISIONS: its faces' nearest distance to 0
LOW_PASS_INPUT = "Low-pass Size"

TRANSPARENT_BOUNCES = 256
# Russian roulette on the dimming transparent path turns the last layers of a head into bright
# speckles (a survivor is weighted up by 1 / p): off for every layer the limit allows. Measured on
# a trained avatar (tests/test_blender_parity.py): 64 -> 25.5 dB head PSNR, 256 -> 34.9 dB.
MIN_TRANSPARENT_BOUNCES = TRANSPARENT_BOUNCES


def add_preview(obj: bpy.types.Object, scene: bpy.types.Scene | None = None) -> bpy.types.Modifier:
    """Add the splat preview modifier (after the Armature modifier) to a points object.

    Splats overlap many layers deep: with Cycles' default of 8 transparent bounces, rays stop
    inside the head and render black speckles, so the scene's limit is raised (never lowered).
    """
    modifier = obj.modifiers.new(MODIFIER, "NODES")
    modifier.node_group = splat_node_group()
    scene = scene or bpy.context.scene
    if scene is not None and hasattr(scene, "cycles"):
        cycles = scene.cycles
        cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
        cycles.min_transparent_bounces = max(cycles.min_transparent_bounces,
                                             MIN_TRANSPARENT_BOUNCES)
    return modifier


def set_low_pass(modifier: bpy.types.Modifier, size: float) -> None:
    """Set the isotropic low-pass (metres) that widens every Gaussian; 0 draws them unfiltered."""
    socket = modifier.node_group.interface.items_tree[LOW_PASS_INPUT]
    modifier[socket.identifier] = float(size)
    modifier.id_data.update_tag()


def splat_node_group() -> bpy.types.NodeTree:
    """The geometry-nodes group, built once per file."""
    group = bpy.data.node_groups.get(NODE_GROUP)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    low_pass = group.interface.new_socket(LOW_PASS_INPUT, in_out="INPUT",
                                          socket_type="NodeSocketFloat")
    low_pass.default_value, low_pass.min_value, low_pass.subtype = LOW_PASS, 0.0, "DISTANCE"
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in = nodes.new("NodeGroupInput")
    group_out = nodes.new("NodeGroupOutput")
    sphere = nodes.new("GeometryNodeMeshIcoSphere")  # its faces enclose the unit sphere
    sphere.inputs["Radius"].default_value = 1.0 / INRADIUS
    sphere.inputs["Subdivisions"].default_value = SUBDIVISIONS
    smooth = nodes.new("GeometryNodeSetShadeSmooth")
    links.new(geometry_socket(sphere.outputs), geometry_socket(smooth.inputs))
    material = nodes.new("GeometryNodeSetMaterial")
    material.inputs["Material"].default_value = splat_material()
    links.new(geometry_socket(smooth.outputs), geometry_socket(material.inputs))
    rotation = _named_attribute(nodes, "rotation", "QUATERNION")
    scale = _named_attribute(nodes, "scale", "FLOAT_VECTOR")
    # sqrt(scale^2 + low_pass^2) per axis: R (S^2 + l^2 I) R^T is Sigma + l^2 I, exactly.
    variance = _vector_math(nodes, links, "MULTIPLY", scale.outputs["Attribute"],
                            scale.outputs["Attribute"])
    low_variance = nodes.new("ShaderNodeMath")
    low_variance.operation = "MULTIPLY"
    links.new(group_in.outputs[LOW_PASS_INPUT], low_variance.inputs[0])
    links.new(group_in.outputs[LOW_PASS_INPUT], low_variance.inputs[1])
    widened = _vector_math(nodes, links, "ADD", variance, low_variance.outputs["Value"])
    sized = _vector_math(nodes, links, "SCALE", _vector_sqrt(nodes, links, widened))
    sized.node.inputs["Scale"].default_value = SIGMAS
    instance = nodes.new("GeometryNodeInstanceOnPoints")
    links.new(group_in.outputs["Geometry"], instance.inputs["Points"])
    links.new(geometry_socket(material.outputs), instance.inputs["Instance"])
    links.new(rotation.outputs["Attribute"], instance.inputs["Rotation"])
    links.new(sized, instance.inputs["Scale"])
    join = nodes.new("GeometryNodeJoinGeometry")
    links.new(geometry_socket(instance.outputs), geometry_socket(join.inputs))
    links.new(group_in.outputs["Geometry"], geometry_socket(join.inputs))
    links.new(geometry_socket(join.outputs), group_out.inputs[0])
    return group


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


def splat_material() -> bpy.types.Material:
    """Emission of the instance colour, mixed with transparency by the Gaussian falloff."""
    material = bpy.data.materials.get(MATERIAL)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL)
    material.use_nodes = True
    if hasattr(material, "surface_render_method"):  # EEVEE (4.2+): per-pixel stochastic alpha
        material.surface_render_method = "DITHERED"
    material.use_backface_culling = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    color = _instancer_attribute(nodes, "color")
    opacity = _instancer_attribute(nodes, "opacity")
    geometry = nodes.new("ShaderNodeNewGeometry")
    # In the instance's own space the ellipsoid is the unit sphere and the Gaussian isotropic:
    # the ray's squared distance from the centre is |p|^2 - (p . v)^2 for any hit point p on
    # the ray and the unit view direction v, both in object space (exact for any scale/rotation).
    coords = nodes.new("ShaderNodeTexCoord")
    point = coords.outputs["Object"]
    to_object = nodes.new("ShaderNodeVectorTransform")
    to_object.vector_type, to_object.convert_from, to_object.convert_to = "VECTOR", "WORLD", "OBJECT"
    links.new(geometry.outputs["Incoming"], to_object.inputs["Vector"])
    view = _vector_math(nodes, links, "NORMALIZE", to_object.outputs["Vector"])
    facing = nodes.new("ShaderNodeVectorMath")
    facing.operation = "DOT_PRODUCT"
    links.new(point, facing.inputs[0])
    links.new(view, facing.inputs[1])
    radius = nodes.new("ShaderNodeVectorMath")
    radius.operation = "DOT_PRODUCT"
    links.new(point, radius.inputs[0])
    links.new(point, radius.inputs[1])
    # exponent = -0.5 * SIGMAS^2 * (|p|^2 - (p . v)^2) = c * (p . v)^2 - c * |p|^2
    c = 0.5 * SIGMAS * SIGMAS
    squared = _math(nodes, links, "MULTIPLY", facing.outputs["Value"], facing.outputs["Value"])
    distance = _math(nodes, links, "SUBTRACT", squared, radius.outputs["Value"])
    exponent = _math(nodes, links, "MULTIPLY", distance, c)
    falloff = _math(nodes, links, "EXPONENT", exponent)
    front = _math(nodes, links, "SUBTRACT", 1.0, geometry.outputs["Backfacing"])
    alpha = _math(nodes, links, "MULTIPLY", falloff, opacity.outputs["Fac"])
    alpha = _math(nodes, links, "MULTIPLY", alpha, front)
    emission = nodes.new("ShaderNodeEmission")
    links.new(color.outputs["Color"], emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    links.new(alpha, mix.inputs["Fac"])
    links.new(transparent.outputs["BSDF"], mix.inputs[1])
    links.new(emission.outputs["Emission"], mix.inputs[2])
    links.new(mix.outputs["Shader"], output.inputs["Surface"])
    return material


def _instancer_attribute(nodes, name: str):
    node = nodes.new("ShaderNodeAttribute")
    node.attribute_type = "INSTANCER"
    node.attribute_name = name
    return node


def _vector_math(nodes, links, operation: str, *vectors):
    """A Vector Math node on output sockets; returns its Vector output."""
    node = nodes.new("ShaderNodeVectorMath")
    node.operation = operation
    for socket, vector in zip(node.inputs, vectors):
        links.new(vector, socket)
    return node.outputs["Vector"]


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
