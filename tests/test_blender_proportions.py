"""Toon proportions in the real Blender: the Proportions shape key, its correctives and drivers.

Every test runs once per Blender of the matrix (tests/test_blender.py). An avatar with
proportions holds the proportioned avatar in its usual arrays and the avatar before proportions
in ``rest_*`` arrays (docs/FORMAT.md); the test avatar gets the backend's own ``toon:0.8``
(``backend.formats.proportions.apply_proportions``). Checked, against references computed here from the file's
arrays (not through the add-on's own layout code):

- the keys: Basis = rest positions, ``Proportions`` (0..1, value 1), one key per expression,
  one corrective ``"<expression>.proportions"`` per expression driven by a valid simple-expression
  driver ``e * p`` (no Python auto-run needed), on the points and on the head mesh;
- evaluated points and head mesh at Proportions 0/1 x expression 0/1: the rest avatar plus its
  rest delta, and the built avatar plus its delta, within 1e-5;
- with the rig posed and every expression set (or a tracking keyframed): the backend's
  ``animate.posed_means`` of the built avatar at Proportions 1 and of the rest avatar at 0;
- an avatar without proportions imports with the keys and drivers it always had.
"""

import dataclasses
import os

import numpy as np
import pytest

from backend.formats import animate, avatar, examples
from tests.test_blender import (
    ROOT,
    _tracking_file,
    blender,  # noqa: F401  (the matrix fixture)
    run_bpy,
)

pytestmark = pytest.mark.blender

TOLERANCE = 1e-5  # metres


def _to_blender(points: np.ndarray) -> np.ndarray:
    """Head space -> Blender space, written out here (the add-on's own is addon/axes.py)."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


# Anchors of the proportions on the random example's ellipsoid face (head space, metres; the
# eye joints are at (+-0.032, 0.035, 0.06)); _R anchors mirror the _L ones.
FACE_ANCHORS = {"brow_L": (0.032, 0.055, 0.07), "nose_bridge": (0.0, 0.035, 0.085),
                "nose_tip": (0.0, 0.0, 0.095), "nose_base": (0.0, -0.01, 0.09),
                "nose_wing_L": (0.012, -0.005, 0.087), "mouth_L": (0.022, -0.035, 0.08),
                "lip_upper": (0.0, -0.028, 0.085), "lip_lower": (0.0, -0.045, 0.083)}


def _write_proportioned(folder, n_gaussians=4000, n_expressions=8, seed=11) -> str:
    """A random avatar with the backend's ``toon:0.8`` proportions (its ``apply_proportions``)."""
    from backend.formats.proportions import apply_proportions

    anchors = {name: np.asarray(point, np.float64) for name, point in FACE_ANCHORS.items()}
    anchors.update({name[:-2] + "_R": anchors[name] * [-1.0, 1.0, 1.0]
                    for name in FACE_ANCHORS if name.endswith("_L")})
    data = apply_proportions(examples.random_avatar(n_gaussians, n_expressions, seed=seed),
                             "toon:0.8", anchors)
    path = str(folder / "toon.npz")
    avatar.write(path, data)
    return path


def _rest_avatar(data):
    """The avatar before proportions, as a plain avatar (for ``animate``)."""
    return dataclasses.replace(data, means=data.rest_means, delta_means=data.rest_delta_means,
                               mesh_vertices=data.rest_mesh_vertices,
                               mesh_expression_dirs=data.rest_mesh_expression_dirs)


@pytest.fixture(scope="module")
def proportioned_file(tmp_path_factory):
    return _write_proportioned(tmp_path_factory.mktemp("proportions"))


def test_import_makes_the_proportions_key_correctives_and_drivers(blender, proportioned_file,  # noqa: F811
                                                                   tmp_path):
    expressions = (0, 3, 7)
    result = run_bpy(blender, f"""
        from toonsplat.addon import proportions
        imported = importer.import_avatar({proportioned_file!r})
        points, head = imported.points, imported.head
        keys = points.data.shape_keys.key_blocks
        names = importer.expression_keys(points)
        dial = [keys["Proportions"].slider_min, keys["Proportions"].slider_max, keys["Proportions"].value]
        for p in (0.0, 1.0):
            for k in (None, *{expressions!r}):
                keys["Proportions"].value = p
                for block in names:
                    block.value = 0.0
                if k is not None:
                    names[k].value = 1.0
                np.save({str(tmp_path)!r} + f"/points_{{p}}_{{k}}.npy", evaluated(points))
                np.save({str(tmp_path)!r} + f"/head_{{p}}_{{k}}.npy", evaluated(head))
        drivers = {{}}
        for obj in (points, head):
            drivers[obj.name] = [{{
                "path": curve.data_path, "type": curve.driver.type, "valid": curve.driver.is_valid,
                "simple": curve.driver.is_simple_expression, "expression": curve.driver.expression,
                "variables": [[v.name, v.is_name_valid, v.targets[0].id.name, v.targets[0].data_path]
                              for v in curve.driver.variables]}}
                for curve in obj.data.shape_keys.animation_data.drivers]
        print(json.dumps({{
            "keys": [k.name for k in keys], "head_keys": [k.name for k in head.data.shape_keys.key_blocks],
            "proportions": dial,
            "expressions": [b.name for b in names], "drivers": drivers,
            "points_key": points.data.shape_keys.name, "record": points.get(importer.PROPORTIONS_PROP),
        }}))
    """, tmp_path)
    data = avatar.read(proportioned_file)
    names = data.expression_names
    correctives = [f"{n}.proportions" for n in names]
    assert result["keys"] == result["head_keys"] == ["Basis", "Proportions", *names, *correctives]
    assert result["expressions"] == names
    assert result["proportions"] == [0.0, 1.0, 1.0]  # range 0..1, the built avatar after import
    assert result["record"] == "toon:0.8"
    # Drivers: every corrective, on both objects, reads the points' expression and Proportions.
    for obj, drivers in result["drivers"].items():
        by_path = {d["path"]: d for d in drivers}
        for name in names:
            driver = by_path[f'key_blocks["{name}.proportions"].value']
            assert driver["valid"] and driver["simple"] and driver["type"] == "SCRIPTED"
            assert driver["expression"] == "e * p"
            assert driver["variables"] == [
                ["e", True, result["points_key"], f'key_blocks["{name}"].value'],
                ["p", True, result["points_key"], 'key_blocks["Proportions"].value']]
        if obj.endswith("_head"):  # the head's other keys follow the points' same-named keys
            assert len(drivers) == 2 * len(names) + 1 and all(d["valid"] for d in drivers)
        else:
            assert len(drivers) == len(names)
    # Positions at Proportions 0/1 x expression 0/1, against the file's arrays.
    blended = ~data.mouth[:, None]
    errors = {}
    for k in (None, *expressions):
        for p in (0.0, 1.0):
            if p == 0.0:
                points, mesh = data.rest_means.astype(np.float64), data.rest_mesh_vertices.astype(np.float64)
                if k is not None:
                    points = points + data.rest_delta_means[k] * blended
                    mesh = mesh + data.rest_mesh_expression_dirs[k]
            else:
                points, mesh = data.means.astype(np.float64), data.mesh_vertices.astype(np.float64)
                if k is not None:
                    points = points + data.delta_means[k] * blended
                    mesh = mesh + data.mesh_expression_dirs[k]
            errors[(p, k)] = (
                float(np.abs(np.load(tmp_path / f"points_{p}_{k}.npy") - _to_blender(points)).max()),
                float(np.abs(np.load(tmp_path / f"head_{p}_{k}.npy") - _to_blender(mesh)).max()))
    print("max position errors (points, head) per (Proportions, expression):", errors)
    assert max(max(e) for e in errors.values()) < TOLERANCE, errors
    # The dial moves the points, and the correctives matter: the test is not vacuous.
    assert np.abs(data.means - data.rest_means).max() > 0.002
    assert np.abs(data.delta_means.astype(np.float64) - data.rest_delta_means).max() > 1e-4
    assert np.abs(data.mesh_vertices - data.rest_mesh_vertices).max() > 0.002


def test_posed_avatar_follows_the_backend_at_both_ends_of_the_dial(blender, proportioned_file,  # noqa: F811
                                                                    tmp_path):
    """Every expression and every joint at once: Proportions 1 is the built avatar's LBS,
    Proportions 0 the rest avatar's (so blendshapes, jaw and eyes keep working)."""
    data = avatar.read(proportioned_file)
    rng = np.random.default_rng(5)
    values = rng.uniform(-1.5, 1.5, data.n_expressions)
    rotations, translation = rng.normal(size=(5, 3)) * 0.3, rng.normal(size=3) * 0.03
    result = run_bpy(blender, f"""
        imported = importer.import_avatar({proportioned_file!r})
        data = avatar.read({proportioned_file!r})
        for block, value in zip(importer.expression_keys(imported.points), {values.tolist()!r}):
            block.value = value
        rests = importer.bone_rest_rotations(imported.armature, data.joint_names)
        quats = axes.pose_bone_quats(np.array({rotations.tolist()!r}), rests)
        for j, name in enumerate(data.joint_names):
            imported.armature.pose.bones[name].rotation_quaternion = quats[j]
        imported.armature.pose.bones["root"].location = axes.root_location(
            np.array({translation.tolist()!r}), rests[0])
        keys = imported.points.data.shape_keys.key_blocks
        for p in (0.0, 1.0):
            keys["Proportions"].value = p
            np.save({str(tmp_path)!r} + f"/points_{{p}}.npy", evaluated(imported.points))
            np.save({str(tmp_path)!r} + f"/head_{{p}}.npy", evaluated(imported.head))
        print(json.dumps({{}}))
    """, tmp_path)
    assert result == {}
    errors = {}
    for p, source in ((0.0, _rest_avatar(data)), (1.0, data)):
        points = animate.posed_means(source, values, rotations, translation)
        mesh = animate.posed_mesh(source, values, rotations, translation)
        errors[p] = (float(np.abs(np.load(tmp_path / f"points_{p}.npy") - _to_blender(points)).max()),
                     float(np.abs(np.load(tmp_path / f"head_{p}.npy") - _to_blender(mesh)).max()))
    print("posed max errors (points, head) at Proportions 0 and 1:", errors)
    assert max(max(e) for e in errors.values()) < TOLERANCE, errors


def test_tracking_keys_expressions_and_leaves_the_dial(blender, proportioned_file, tmp_path):  # noqa: F811
    data = avatar.read(proportioned_file)
    tracking_path, track = _tracking_file(tmp_path, data.expression_names, n_frames=12)
    result = run_bpy(blender, f"""
        imported = importer.import_avatar({proportioned_file!r})
        plan = animation.apply_tracking(imported.points, {tracking_path!r}, start_frame=1)
        key = imported.points.data.shape_keys
        curves = [c.data_path for c in animation.action_fcurves(key)]
        scene = bpy.context.scene
        for p in (1.0, 0.0):
            key.key_blocks["Proportions"].value = p
            for frame in (1, 7):
                scene.frame_set(frame)
                np.save({str(tmp_path)!r} + f"/points_{{p}}_{{frame}}.npy", evaluated(imported.points))
                np.save({str(tmp_path)!r} + f"/head_{{p}}_{{frame}}.npy", evaluated(imported.head))
        print(json.dumps({{"curves": curves, "unmatched": plan.unmatched}}))
    """, tmp_path)
    assert result["unmatched"] == []
    assert sorted(result["curves"]) == sorted(f'key_blocks["{n}"].value' for n in data.expression_names)
    errors = {}
    for p, source in ((0.0, _rest_avatar(data)), (1.0, data)):
        for frame in (1, 7):
            t = frame - 1
            args = (track.expressions[t], track.joint_rotations[t], track.translation[t])
            points = animate.posed_means(source, *args)
            mesh = animate.posed_mesh(source, *args)
            errors[(p, frame)] = (
                float(np.abs(np.load(tmp_path / f"points_{p}_{frame}.npy") - _to_blender(points)).max()),
                float(np.abs(np.load(tmp_path / f"head_{p}_{frame}.npy") - _to_blender(mesh)).max()))
    print("keyframed max errors (points, head) per (Proportions, frame):", errors)
    assert max(max(e) for e in errors.values()) < TOLERANCE, errors


def test_avatar_without_proportions_imports_as_before(blender, tmp_path):  # noqa: F811
    path = tmp_path / "plain.npz"
    data = examples.random_avatar(500, 5, seed=2)
    avatar.write(path, data)
    result = run_bpy(blender, f"""
        imported = importer.import_avatar({str(path)!r})
        points_key, head_key = imported.points.data.shape_keys, imported.head.data.shape_keys
        print(json.dumps({{
            "keys": [k.name for k in points_key.key_blocks],
            "head_keys": [k.name for k in head_key.key_blocks],
            "points_drivers": len(points_key.animation_data.drivers) if points_key.animation_data else 0,
            "head_drivers": sorted({{(c.driver.type, c.driver.is_valid)
                                     for c in head_key.animation_data.drivers}}),
            "n_head_drivers": len(head_key.animation_data.drivers),
            "record": imported.points.get(importer.PROPORTIONS_PROP),
            "values": sorted({{k.value for k in points_key.key_blocks[1:]}}),
        }}))
    """, tmp_path)
    names = avatar.read(path).expression_names
    assert result["keys"] == result["head_keys"] == ["Basis", *names]
    assert result["points_drivers"] == 0 and result["record"] is None
    assert result["head_drivers"] == [["AVERAGE", True]] and result["n_head_drivers"] == len(names)
    assert result["values"] == [0.0]


def test_panels_show_the_dial_and_hide_the_correctives(blender, proportioned_file, tmp_path):  # noqa: F811
    """The Style panel's proportions settings and the Avatar panel's dial and expression list,
    drawn into a recording layout (no window in background mode)."""
    result = run_bpy(blender, f"""
        import types
        module.register()
        from toonsplat.addon import panels

        class Layout:  # records every prop() call; any other layout call returns a layout
            def __init__(self, calls):
                self.calls = calls
            def prop(self, data, name, **options):
                self.calls.append([name, options.get("text")])
            def template_list(self, list_type, *args, **options):
                self.calls.append(["template_list", list_type])
            def __getattr__(self, name):
                return lambda *args, **options: self

        def draw(panel, context):
            calls = []
            panel.draw(types.SimpleNamespace(layout=Layout(calls)), context)
            return calls

        imported = importer.import_avatar({proportioned_file!r})
        scene = bpy.context.scene
        context = types.SimpleNamespace(scene=scene, active_object=imported.points)
        style_none = draw(panels.TOONSPLAT_PT_style, context)
        scene.toonsplat.proportions, scene.toonsplat.proportions_strength = "chibi", 0.5
        style_chibi = draw(panels.TOONSPLAT_PT_style, context)
        avatar_panel = draw(panels.TOONSPLAT_PT_avatar, context)
        key = imported.points.data.shape_keys
        stub = types.SimpleNamespace(bitflag_filter_item=1 << 30, filter_name="")
        flags, order = panels.TOONSPLAT_UL_expressions.filter_items(stub, context, key, "key_blocks")
        shown = [b.name for b, f in zip(key.key_blocks, flags) if f]
        stub.filter_name = "_03"
        flags, _ = panels.TOONSPLAT_UL_expressions.filter_items(stub, context, key, "key_blocks")
        filtered = [b.name for b, f in zip(key.key_blocks, flags) if f]
        module.unregister()
        print(json.dumps({{"style_none": style_none, "style_chibi": style_chibi,
                          "avatar": avatar_panel, "shown": shown, "filtered": filtered,
                          "order": list(order)}}))
    """, tmp_path)
    names = avatar.read(proportioned_file).expression_names
    assert ["proportions", None] in result["style_none"]
    assert not any(call[0] == "proportions_strength" for call in result["style_none"])
    assert ["proportions_strength", "Strength"] in result["style_chibi"]
    assert ["value", "Proportions (toon:0.8)"] in result["avatar"]
    assert ["template_list", "TOONSPLAT_UL_expressions"] in result["avatar"]
    assert result["shown"] == names and result["order"] == []
    assert result["filtered"] == ["expression_03"]


def test_batch_script_renders_both_ends_of_the_dial(blender, proportioned_file, tmp_path):  # noqa: F811
    """``build_avatar.py --avatar A --proportions-value P --render PNG`` saves the dial in the
    .blend and renders it; a plain avatar has no dial to set (exit 2 with a message)."""
    from PIL import Image

    images = {}
    for value in (0.0, 1.0):
        out, png = tmp_path / f"p{value:g}.blend", tmp_path / f"p{value:g}.png"
        result = blender.run([os.path.join(ROOT, "scripts", "build_avatar.py"), "--avatar",
                              proportioned_file, "--out", str(out), "--render", str(png),
                              "--resolution", "96", "--proportions-value", f"{value:g}"])
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        images[value] = np.asarray(Image.open(png).convert("RGB"), np.float64)
        saved = run_bpy(blender, f"""
            bpy.ops.wm.open_mainfile(filepath={str(out)!r})
            key = bpy.data.objects["toon"].data.shape_keys
            drivers = [c.driver for o in ("toon", "toon_head")
                       for c in bpy.data.objects[o].data.shape_keys.animation_data.drivers]
            print(json.dumps({{"value": key.key_blocks["Proportions"].value,
                              "drivers": [len(drivers), all(d.is_valid for d in drivers)]}}))
        """, tmp_path)
        n = len(avatar.read(proportioned_file).expression_names)
        assert saved == {"value": value, "drivers": [n + (2 * n + 1), True]}  # valid after reload
    changed = np.abs(images[1.0] - images[0.0]).max(axis=2) > 8
    print(f"pixels changed by the dial: {int(changed.sum())} of {changed.size}")
    assert changed.sum() > 20, "the dial does not change the render"
    plain = tmp_path / "plain.npz"
    avatar.write(plain, examples.random_avatar(200, 3, seed=1))
    refused = blender.run([os.path.join(ROOT, "scripts", "build_avatar.py"), "--avatar", str(plain),
                           "--out", str(tmp_path / "plain.blend"), "--proportions-value", "0"])
    assert refused.returncode == 2 and "has no proportions to dial" in refused.stderr


def test_build_script_checks_the_proportions_spec(blender, tmp_path):  # noqa: F811
    video = tmp_path / "face.mp4"
    video.write_bytes(b"\x00" * 64)
    script = os.path.join(ROOT, "scripts", "build_avatar.py")
    unknown = blender.run([script, "--video", str(video), "--proportions", "manga:0.5",
                           "--out", str(tmp_path / "a.blend"), "--python", "/nonexistent"], timeout=60)
    assert unknown.returncode == 2 and "unknown proportions preset 'manga'" in unknown.stderr
    assert "toon" in unknown.stderr
    with_avatar = blender.run([script, "--avatar", str(tmp_path / "a.npz"), "--proportions", "toon",
                               "--out", str(tmp_path / "a.blend")], timeout=60)
    assert with_avatar.returncode == 2 and "python -m backend proportions" in with_avatar.stderr
