"""The add-on inside the real Blender (the ``bpy`` module), one fresh process per scenario.

Every test runs once per Blender of the version matrix (``MATRIX``): the venv's bpy (5.0.1) and
the LTS wheels that ``scripts/setup_venv.sh --blender-matrix`` installs beside .venv/ (.bpy-4.5/,
.bpy-4.2/), each put first on PYTHONPATH of the scenario's process. Test ids end in the version,
e.g. ``test_import_builds_the_expected_data[4.2]``. A missing folder skips its version, or fails
it under ``TOONSPLAT_BLENDER_MATRIX_REQUIRED=1`` (scripts/test.sh).

Covers: the extension validates, builds, installs into a temporary user folder, enables and
disables twice; importing a test-written avatar builds exactly the expected data; evaluated
points and head mesh equal backend.formats.animate within 1e-4 after shape keys and bone
rotations are set, and after a tracking file is keyframed; bad inputs give clear errors; the batch
scripts run headless and write a .blend and a PNG.
"""

import dataclasses
import glob
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

if importlib.util.find_spec("bpy") is None:
    pytest.skip("the bpy module is not installed", allow_module_level=True)
pytestmark = pytest.mark.blender

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backend.formats import SPLAT_LOW_PASS_PX2, avatar, examples, tracking  # noqa: E402
from tests.rotations import quat_matrix, quat_multiply  # noqa: E402

BLENDER_EXT = os.path.join(ROOT, "scripts", "blender_ext.py")
# The Blender releases the add-on is tested under: "" is the venv's own bpy, the others are
# folders beside .venv/ with an LTS bpy wheel (scripts/setup_venv.sh --blender-matrix).
MATRIX_FOLDERS = ("", ".bpy-4.5", ".bpy-4.2")


@dataclasses.dataclass(frozen=True)
class Blender:
    """One Blender release of the matrix: where its bpy lives and how to run Python with it."""

    folder: str  # "" for the venv's bpy, else the absolute path put first on PYTHONPATH

    @property
    def version(self) -> str:
        """The bpy version of this release, read from its metadata (bpy is not imported)."""
        if not self.folder:
            return importlib.metadata.version("bpy")
        (info,) = glob.glob(os.path.join(self.folder, "bpy-*.dist-info"))
        return os.path.basename(info)[len("bpy-"):-len(".dist-info")]

    def env(self, extra: dict | None = None) -> dict:
        env = {**os.environ, **(extra or {})}
        if self.folder:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.folder, env.get("PYTHONPATH")) if p)
        return env

    def run(self, argv: list[str], env: dict | None = None, timeout: float = 120,
            cwd: str = ROOT) -> subprocess.CompletedProcess:
        """Run ``python ARGV`` (this interpreter) with this release's bpy."""
        return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=self.env(env))


def _matrix_params():
    params = []
    for folder in MATRIX_FOLDERS:
        label = folder.removeprefix(".bpy-") if folder else ".".join(
            importlib.metadata.version("bpy").split(".")[:2])
        marks = ()
        if folder and not os.path.isdir(os.path.join(ROOT, folder, "bpy")):
            if os.environ.get("TOONSPLAT_BLENDER_MATRIX_REQUIRED"):
                marks = pytest.mark.xfail(reason=f"{folder}/ missing", run=False, strict=True)
            else:
                marks = pytest.mark.skip(reason=f"{folder}/ missing: run scripts/setup_venv.sh "
                                         "--blender-matrix")
        params.append(pytest.param(folder and os.path.join(ROOT, folder), id=label, marks=marks))
    return params


@pytest.fixture(scope="module", params=_matrix_params())
def blender(request) -> Blender:
    return Blender(request.param)

PRELUDE = f"""
import importlib.util, json, sys
import numpy as np
ROOT = {ROOT!r}
sys.path.insert(0, ROOT)
spec = importlib.util.spec_from_file_location("toonsplat", ROOT + "/__init__.py",
                                              submodule_search_locations=[ROOT])
module = importlib.util.module_from_spec(spec); sys.modules["toonsplat"] = module
spec.loader.exec_module(module)
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
from backend.formats import animate, avatar, tracking
from toonsplat.addon import animation, axes, importer
def evaluated(obj):
    obj.hide_set(False)
    mesh = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)
"""


def run_bpy(blender: Blender, code: str, tmp_path, env=None, timeout=120) -> dict:
    """Run ``code`` in a fresh Python with ``blender``'s bpy; it prints one JSON object as its
    last line."""
    script = tmp_path / "scenario.py"
    script.write_text(PRELUDE + textwrap.dedent(code))
    result = blender.run([str(script)], env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("avatar") / "subject.npz"
    avatar.write(path, examples.random_avatar(n_gaussians=20_000, n_expressions=50, seed=3))
    return str(path)


def _build_extension(blender: Blender, tmp_path):
    """Validate and build the extension zip with Blender's own tool; returns the zip's path."""
    validate = blender.run([BLENDER_EXT, "validate", ROOT], timeout=60)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    dist = tmp_path / "dist"
    dist.mkdir()
    build = blender.run([BLENDER_EXT, "build", "--source-dir", ROOT, "--output-dir", str(dist)])
    assert build.returncode == 0, build.stdout + build.stderr
    (zip_path,) = dist.glob("toonsplat-*.zip")
    return zip_path


def test_extension_validates_builds_installs_enables_disables(blender, tmp_path):
    zip_path = _build_extension(blender, tmp_path)
    names = __import__("zipfile").ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "addon/importer.py" in names
    assert "backend/formats/avatar.py" in names and "requirements.txt" in names
    assert not any(n.startswith(("tests/", "docs/", ".venv/", ".git/")) for n in names)
    avatar.write(tmp_path / "tiny.npz", examples.random_avatar(300, 4))
    result = run_bpy(blender, f"""
        import addon_utils
        ok = bpy.ops.extensions.package_install_files(filepath={str(zip_path)!r},
                                                      repo="user_default", enable_on_install=True)
        name = "bl_ext.user_default.toonsplat"
        states = [hasattr(bpy.types.Scene, "toonsplat")]
        for _ in range(2):
            addon_utils.disable(name, default_set=True)
            states.append(hasattr(bpy.types.Scene, "toonsplat") or hasattr(bpy.types, "TOONSPLAT_PT_run"))
            addon_utils.enable(name, default_set=True)
            states.append(hasattr(bpy.types.Scene, "toonsplat"))
        errors = [len(bpy.data.node_groups) + len(bpy.data.materials)]  # nothing built at register
        bpy.context.scene.toonsplat.video_path = "/nonexistent/face.mp4"
        try:
            bpy.ops.toonsplat.run_pipeline()
        except RuntimeError as exc:
            errors.append(str(exc))
        bpy.context.scene.toonsplat.video_path = {str(zip_path)!r}  # exists; no interpreter set
        prefs = bpy.context.preferences.addons[name].preferences
        prefs.python_path = "/nonexistent/python3"
        prefs.work_folder = {str(tmp_path / "work")!r}
        try:
            bpy.ops.toonsplat.run_pipeline()
        except RuntimeError as exc:
            errors.append(str(exc))
        bpy.ops.toonsplat.import_avatar(filepath={str(tmp_path / "tiny.npz")!r})
        imported = [o.name for o in bpy.data.objects]
        print(json.dumps({{"ok": list(ok), "states": states, "errors": errors, "imported": imported,
                          "node_groups_after": len(bpy.data.node_groups), "panels": [
            c for c in dir(bpy.types) if c.startswith("TOONSPLAT_PT_")],
            "file": sys.modules[name].__file__}}))
    """, tmp_path, env={"BLENDER_USER_RESOURCES": str(tmp_path / "blender")})
    assert result["ok"] == ["FINISHED"]
    assert result["states"] == [True, False, True, False, True]
    assert len(result["panels"]) == 6
    assert result["file"].startswith(str(tmp_path / "blender"))
    assert result["errors"][0] == 0
    assert "video not found" in result["errors"][1]
    assert "backend interpreter not found" in result["errors"][2]
    assert sorted(result["imported"]) == sorted(["tiny", "tiny_head", "tiny_rig", "tiny_view",
                                                 *(f"tiny_{j}_frame" for j in avatar.JOINT_NAMES)])
    # the splat preview (built on first import only) and this avatar's expression colours
    assert result["node_groups_after"] == 2


@pytest.mark.slow
def test_check_tracking_prepares_and_shows_the_qa_picture(blender, tmp_path):
    """Video panel's Check Tracking: the installed add-on runs ``build --stop-after prepare`` with
    the real backend interpreter and loads the tracking QA strip as the panels' picture."""
    zip_path = _build_extension(blender, tmp_path)
    synth = subprocess.run([sys.executable, "-m", "backend", "synth", "--out", str(tmp_path / "s"),
                            "--frames", "10", "--size", "128", "--progress", "quiet"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert synth.returncode == 0, synth.stderr
    result = run_bpy(blender, f"""
        bpy.ops.extensions.package_install_files(filepath={str(zip_path)!r}, repo="user_default",
                                                 enable_on_install=True)
        prefs = bpy.context.preferences.addons["bl_ext.user_default.toonsplat"].preferences
        prefs.python_path, prefs.work_folder = {sys.executable!r}, {str(tmp_path / "work")!r}
        settings = bpy.context.scene.toonsplat
        settings.video_path = {str(tmp_path / "s" / "video.mp4")!r}
        settings.size, settings.job_name = 128, "job"
        outcome = bpy.ops.toonsplat.check_tracking()
        image = bpy.data.images.get("ToonSplat Preview")
        print(json.dumps({{"outcome": list(outcome), "image": list(image.size) if image else None,
                          "file": image.filepath if image else ""}}))
    """, tmp_path, env={"BLENDER_USER_RESOURCES": str(tmp_path / "blender")}, timeout=300)
    job = tmp_path / "work" / "job"
    assert result["outcome"] == ["FINISHED"]
    assert (job / "data" / "tracking.npz").exists() and not (job / "train").exists()
    assert result["file"].endswith("landmarks.png") and min(result["image"]) > 0


def test_import_builds_the_expected_data(blender, avatar_file, tmp_path):
    result = run_bpy(blender, f"""
        result = importer.import_avatar({avatar_file!r})
        points, rig, head = result.points, result.armature, result.head
        mesh = points.data
        n = len(mesh.vertices)
        weights = np.zeros((n, 5))
        for v in mesh.vertices:  # reading back for the test only
            for g in v.groups:
                weights[v.index, g.group] = g.weight
        keys = mesh.shape_keys.key_blocks
        opacity = np.empty(n, np.float32); mesh.attributes["opacity"].data.foreach_get("value", opacity)
        color = np.empty(n * 4, np.float32); mesh.attributes["color"].data.foreach_get("color", color)
        key7 = np.empty(n * 3, np.float32); keys[7].data.foreach_get("co", key7)
        basis = np.empty(n * 3, np.float32); keys[0].data.foreach_get("co", basis)
        np.save({str(tmp_path / "weights.npy")!r}, weights)
        np.save({str(tmp_path / "opacity.npy")!r}, opacity)
        np.save({str(tmp_path / "color.npy")!r}, color.reshape(-1, 4))
        np.save({str(tmp_path / "key7.npy")!r}, (key7 - basis).reshape(-1, 3))
        print(json.dumps({{
            "objects": sorted(o.name for o in bpy.data.objects),
            "collection": result.collection.name, "n": n, "edges": len(mesh.edges),
            "keys": [k.name for k in keys], "slider": [keys[1].slider_min, keys[1].slider_max],
            "values": sorted(set(k.value for k in keys[1:])),
            "groups": [g.name for g in points.vertex_groups],
            "bones": [b.name for b in rig.data.bones],
            "parents": [b.parent.name if b.parent else None for b in rig.data.bones],
            "heads": [list(b.head_local) for b in rig.data.bones],
            "modifiers": [(m.type, getattr(m, "object", None) and m.object.name) for m in points.modifiers],
            "attributes": sorted(a.name for a in mesh.attributes if not a.name.startswith(".")),
            "head": [len(head.data.vertices), len(head.data.polygons), head.hide_get(), head.hide_render,
                     len(head.data.shape_keys.key_blocks), [m.type for m in head.modifiers]],
        }}))
    """, tmp_path)
    data = avatar.read(avatar_file)
    frames = [f"subject_{joint}_frame" for joint in data.joint_names]  # the splats' joint frames
    assert result["objects"] == sorted(["subject", "subject_head", "subject_rig", "subject_view",
                                        *frames])
    assert result["collection"] == "subject" and result["n"] == 20_000 and result["edges"] == 0
    assert result["keys"] == ["Basis", *data.expression_names]
    assert result["slider"] == [-2.0, 2.0] and result["values"] == [0.0]
    assert result["groups"] == result["bones"] == ["root", "neck", "jaw", "eye_L", "eye_R"]
    assert result["parents"] == [None, "root", "neck", "neck", "neck"]
    joints = data.joint_positions.astype(np.float64)
    assert np.allclose(result["heads"], np.stack([joints[:, 0], -joints[:, 2], joints[:, 1]], 1), atol=1e-6)
    # rig, expression colours, splat preview
    assert result["modifiers"] == [["ARMATURE", "subject_rig"], ["NODES", None], ["NODES", None]]
    own = [a for a in result["attributes"] if not a.startswith("splat_")]
    assert own == ["color", "mouth", "opacity", "position", "rotation", "scale"]
    coloured = [k for k in range(data.n_expressions) if np.any(data.delta_sh[k][~data.mouth])]
    assert sorted(a for a in result["attributes"] if a.startswith("splat_")) == sorted(
        ["splat_display", *(f"splat_sh{band}" for band in (1, 2, 3) if data.sh.shape[1] >= 4),
         *(f"splat_drgb_{k}" for k in coloured)])
    assert result["head"] == [len(data.mesh_vertices), len(data.mesh_faces), True, True, 51,
                              ["ARMATURE"]]
    assert np.allclose(np.load(tmp_path / "weights.npy"), data.lbs_weights, atol=1e-6)
    assert np.allclose(np.load(tmp_path / "opacity.npy"), 1 / (1 + np.exp(-data.opacity_logits)), atol=1e-6)
    srgb = np.clip(0.5 + 0.28209479 * data.sh[:, 0], 0, 1)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert np.allclose(np.load(tmp_path / "color.npy")[:, :3], linear, atol=1e-5)
    delta = data.delta_means[6].astype(np.float64) * ~data.mouth[:, None]
    assert np.allclose(np.load(tmp_path / "key7.npy"), np.stack([delta[:, 0], -delta[:, 2], delta[:, 1]], 1),
                       atol=1e-6)
    assert np.abs(np.load(tmp_path / "key7.npy")[data.mouth]).max() == 0.0


def test_evaluated_points_equal_numpy_blend_and_lbs(blender, avatar_file, tmp_path):
    result = run_bpy(blender, f"""
        result = importer.import_avatar({avatar_file!r})
        data = avatar.read({avatar_file!r})
        rng = np.random.default_rng(7)
        errors = []
        for trial in range(2):
            values = rng.uniform(-1.5, 1.5, data.n_expressions)
            rotations = rng.normal(size=(5, 3)) * 0.35
            translation = rng.normal(size=3) * 0.05
            for k, value in enumerate(values):
                result.points.data.shape_keys.key_blocks[k + 1].value = value
            rests = importer.bone_rest_rotations(result.armature, data.joint_names)
            quats = axes.pose_bone_quats(rotations, rests)
            for j, name in enumerate(data.joint_names):
                result.armature.pose.bones[name].rotation_quaternion = quats[j]
            result.armature.pose.bones["root"].location = axes.root_location(translation, rests[0])
            points = animate.posed_means(data, values, rotations, translation)
            mesh = animate.posed_mesh(data, values, rotations, translation)
            moved = np.abs(points - data.means).max()
            errors.append([np.abs(evaluated(result.points) - axes.points_to_blender(points)).max(),
                           np.abs(evaluated(result.head) - axes.points_to_blender(mesh)).max(),
                           float(moved)])
        print(json.dumps({{"errors": errors}}))
    """, tmp_path)
    for points_error, mesh_error, moved in result["errors"]:
        assert moved > 0.01  # the pose is far from rest, so the comparison means something
        assert points_error < 1e-4 and mesh_error < 1e-4


def _tracking_file(tmp_path, names, n_frames=24, fps=30.0):
    data = examples.random_tracking(n_frames, len(names), fps=fps, seed=4)
    data.expression_names = list(names)
    data.translation[:] = np.random.default_rng(5).normal(size=(n_frames, 3)) * 0.02
    data.joint_rotations[:, 3:] = np.random.default_rng(6).normal(size=(n_frames, 2, 3)) * 0.1
    path = tmp_path / "tracking.npz"
    tracking.write(path, data)
    return str(path), data


def test_apply_tracking_writes_keyframes_that_reproduce_the_reference(blender, tmp_path):
    avatar_path = tmp_path / "small.npz"
    data = examples.random_avatar(3000, 12, seed=8)
    avatar.write(avatar_path, data)
    data = avatar.read(avatar_path)
    # cross-identity: the tracking has its expressions in another order, and one extra
    names = list(reversed(data.expression_names[:10])) + ["not_on_avatar"]
    tracking_path, track = _tracking_file(tmp_path, names)
    result = run_bpy(blender, f"""
        result = importer.import_avatar({str(avatar_path)!r})
        data = avatar.read({str(avatar_path)!r}); track = tracking.read({tracking_path!r})
        plan = animation.apply_tracking(result.points, {tracking_path!r}, start_frame=5)
        scene = bpy.context.scene
        key_curves = result.points.data.shape_keys.animation_data.action
        curves = animation.action_fcurves
        expression = curves(result.points.data.shape_keys).find('key_blocks["expression_03"].value')
        co = np.empty(len(expression.keyframe_points) * 2, np.float32)
        expression.keyframe_points.foreach_get("co", co)
        errors = []
        for frame in (5, 16, 28):
            scene.frame_set(frame)
            t = frame - 5
            values = np.zeros(data.n_expressions)
            for name, column in zip(track.expression_names, track.expressions[t]):
                if name in data.expression_names:
                    values[data.expression_names.index(name)] = column
            args = (values, track.joint_rotations[t], track.translation[t])
            points = axes.points_to_blender(animate.posed_means(data, *args))
            mesh = axes.points_to_blender(animate.posed_mesh(data, *args))
            errors.append([float(np.abs(evaluated(result.points) - points).max()),
                           float(np.abs(evaluated(result.head) - mesh).max())])
        print(json.dumps({{
            "frames": [scene.frame_start, scene.frame_end], "fps": scene.render.fps / scene.render.fps_base,
            "n_key_curves": len(curves(result.points.data.shape_keys)),
            "n_pose_curves": len(curves(result.armature)),
            "keys": co.reshape(-1, 2).tolist(), "unmatched": plan.unmatched, "ignored": plan.ignored,
            "errors": errors}}))
    """, tmp_path)
    assert result["frames"] == [5, 28] and abs(result["fps"] - 30.0) < 1e-6
    assert result["n_key_curves"] == 10 and result["n_pose_curves"] == 5 * 4 + 3
    keys = np.array(result["keys"])
    column = names.index("expression_03")
    assert np.allclose(keys[:, 0], np.arange(5, 29)) and np.allclose(keys[:, 1], track.expressions[:, column])
    assert result["unmatched"] == ["expression_10", "expression_11"]
    assert result["ignored"] == ["not_on_avatar"]
    for points_error, mesh_error in result["errors"]:
        assert points_error < 1e-4 and mesh_error < 1e-4


def test_bad_inputs_give_clear_errors(blender, tmp_path):
    good = tmp_path / "good.npz"
    avatar.write(good, examples.random_avatar(100, 3))
    tracking_path, _ = _tracking_file(tmp_path, ["smile", "blink"], n_frames=3)
    not_npz = tmp_path / "video.npz"
    not_npz.write_bytes(b"not a zip file")
    result = run_bpy(blender, f"""
        from toonsplat.backend.errors import ToonSplatError
        messages = {{}}
        for label, path in (("missing", {str(tmp_path / "nope.npz")!r}), ("garbage", {str(not_npz)!r}),
                            ("tracking_as_avatar", {tracking_path!r})):
            try:
                importer.import_avatar(path)
            except ToonSplatError as exc:
                messages[label] = str(exc)
        imported = importer.import_avatar({str(good)!r})
        try:
            animation.apply_tracking(imported.points, {tracking_path!r})
        except ToonSplatError as exc:
            messages["mismatch"] = str(exc)
        try:
            importer.find_avatar(None)
        except ToonSplatError as exc:
            messages["no_selection"] = str(exc)
        print(json.dumps(messages))
    """, tmp_path)
    assert "not found" in result["missing"] and "nope.npz" in result["missing"]
    assert "video.npz" in result["garbage"]
    assert "tracking.npz" in result["tracking_as_avatar"]
    assert "different head models" in result["mismatch"] and "smile" in result["mismatch"]
    assert "select" in result["no_selection"]


def test_unknown_format_version_is_refused(blender, tmp_path):
    path = tmp_path / "v99.npz"
    avatar.write(path, examples.random_avatar(50, 2))
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["__meta__"].tobytes().decode())  # backend/formats/npzio.py META_KEY
    arrays["__meta__"] = np.frombuffer(json.dumps({**meta, "version": 99}).encode(), np.uint8)
    np.savez(path, **arrays)
    result = blender.run([os.path.join(ROOT, "scripts", "import_avatar.py"),
                          "--avatar", str(path), "--out", str(tmp_path / "x.blend")])
    assert result.returncode == 2
    assert "error:" in result.stderr and "99" in result.stderr and "v99.npz" in result.stderr
    assert not (tmp_path / "x.blend").exists()


def test_batch_scripts_write_blend_and_png(blender, tmp_path):
    avatar_path = tmp_path / "cast_member.npz"
    avatar.write(avatar_path, examples.random_avatar(2000, 6, seed=9))
    tracking_path, _ = _tracking_file(tmp_path, [f"expression_{i:02d}" for i in range(6)], n_frames=8)
    out, png = tmp_path / "out" / "cast_member.blend", tmp_path / "out" / "still.png"
    result = blender.run(
        [os.path.join(ROOT, "scripts", "build_avatar.py"), "--avatar", str(avatar_path),
         "--tracking", tracking_path, "--out", str(out), "--render", str(png), "--resolution", "64",
         "--samples", "2", "--frame", "4"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.stat().st_size > 10_000
    from PIL import Image

    image = np.asarray(Image.open(png).convert("RGB")).astype(float)
    assert image.shape == (64, 64, 3)
    centre, corner = image[24:40, 24:40].mean(), image[:8, :8].mean()
    assert abs(centre - corner) > 10, "the render does not show the splats in the middle of the frame"
    reopened = run_bpy(blender, f"""
        bpy.ops.wm.open_mainfile(filepath={str(out)!r})
        points = bpy.data.objects["cast_member"]
        print(json.dumps({{"n": len(points.data.vertices), "frames": [bpy.context.scene.frame_start,
                          bpy.context.scene.frame_end], "keys": len(points.data.shape_keys.key_blocks)}}))
    """, tmp_path)
    assert reopened == {"n": 2000, "frames": [1, 8], "keys": 7}


def test_build_script_reports_pipeline_failures(blender, tmp_path):
    video = tmp_path / "face.mp4"
    video.write_bytes(b"\x00" * 64)
    base = [os.path.join(ROOT, "scripts", "build_avatar.py"), "--video", str(video),
            "--out", str(tmp_path / "a.blend"), "--timeout", "100"]
    missing = blender.run(base + ["--python", str(tmp_path / "no-python")], timeout=60)
    assert missing.returncode == 2 and "backend interpreter not found" in missing.stderr
    failed = blender.run(base + ["--python", sys.executable], timeout=150)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "error: the backend build failed" in failed.stderr and "build.log" in failed.stderr
    assert not (tmp_path / "a.blend").exists()


def _three_gaussians(path) -> avatar.Avatar:
    """Three anisotropic, rotated Gaussians of different colours and opacities (head space)."""
    def quat(axis, angle):
        axis = np.asarray(axis, float) / np.linalg.norm(axis)
        return np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis]

    data = dataclasses.replace(
        examples.random_avatar(n_gaussians=3, n_expressions=2, sh_degree=0, n_mouth=0, seed=1),
        means=np.array([[-0.05, 0.03, 0.0], [0.05, 0.02, 0.02], [0.0, -0.04, -0.01]], np.float32),
        log_scales=np.log([[0.02, 0.004, 0.008], [0.006, 0.025, 0.003],
                           [0.03, 0.01, 0.002]]).astype(np.float32),
        quats=np.stack([quat([0, 0, 1], 0.5), quat([1, 1, 0], 1.0),
                        quat([1, 0.3, 0.2], 1.2)]).astype(np.float32),
        sh=np.array([[[1.2, -1, -1]], [[-1, 1.2, -1]], [[-1, -1, 1.4]]], np.float32),
        opacity_logits=np.array([2.0, 1.0, 3.0], np.float32))
    avatar.write(path, data)
    return data


def _backend_render(data: avatar.Avatar, size: int, distance: float) -> np.ndarray:
    """The backend's render (H, W, 3) in [0, 1] from an OpenCV camera at (0, 0, distance)."""
    torch = pytest.importorskip("torch")
    from backend.render import Cameras, Gaussians, render

    gaussians = Gaussians(*(torch.tensor(v) for v in (
        data.means, data.quats, np.exp(data.log_scales), 1 / (1 + np.exp(-data.opacity_logits)), data.sh)))
    view = torch.tensor(np.diag([1.0, -1.0, -1.0, 1.0]), dtype=torch.float32)[None]
    view[0, 2, 3] = distance
    f = 2.1 * size
    ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=torch.float32)[None]
    with torch.no_grad():
        out = render(gaussians, Cameras(view, ks, size, size), background=torch.tensor([0.3, 0.3, 0.3]))
    return out.rgb[0].clamp(0, 1).numpy().astype(np.float64)


def test_splat_preview_matches_the_backend_render(blender, tmp_path):
    """Cycles draws rotated, anisotropic splats where and as the backend's rasterizer does."""
    size, distance = 64, 0.65
    data = _three_gaussians(tmp_path / "three.npz")
    # The backend widens by its low-pass (px^2): in metres at the splats' depth, the preview's.
    low_pass = np.sqrt(SPLAT_LOW_PASS_PX2) * distance / (2.1 * size)
    png = tmp_path / "three.png"
    run_bpy(blender, f"""
        import mathutils
        from toonsplat.addon import splats
        scene = bpy.context.scene
        imported = importer.import_avatar({str(tmp_path / "three.npz")!r})
        splats.set_low_pass(imported.points.modifiers[splats.MODIFIER], {low_pass})
        camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        scene.collection.objects.link(camera)
        camera.data.sensor_fit = "HORIZONTAL"
        camera.data.lens = 2.1 * camera.data.sensor_width
        head_camera = np.eye(4); head_camera[2, 3] = {distance}  # OpenCV (x, -y, -z) -> Blender's
        to_blender = np.eye(4); to_blender[:3, :3] = axes.HEAD_TO_BLENDER
        camera.matrix_world = mathutils.Matrix((to_blender @ head_camera).tolist())
        scene.camera = camera
        scene.render.engine = "CYCLES"
        scene.cycles.samples, scene.cycles.device, scene.cycles.use_denoising = 16, "CPU", False
        scene.render.resolution_x = scene.render.resolution_y = {size}
        scene.view_settings.view_transform = "Standard"
        scene.world = bpy.data.worlds.new("backdrop")
        grey = float(axes.srgb_to_linear(0.3))
        scene.world.use_nodes = True
        scene.world.node_tree.nodes["Background"].inputs[0].default_value = (grey, grey, grey, 1)
        scene.render.filepath = {str(png)!r}
        bpy.ops.render.render(write_still=True)
        print(json.dumps({{}}))
    """, tmp_path)
    from PIL import Image

    blender = np.asarray(Image.open(png).convert("RGB"), np.float64) / 255
    backend = _backend_render(data, size, distance)
    psnr = 10 * np.log10(1 / np.mean((blender - backend) ** 2))
    assert psnr > 38, f"the Blender render differs from the backend's: PSNR {psnr:.1f} dB"
    splat_pixels = np.abs(backend - 0.3).max(axis=2) > 0.05
    assert splat_pixels.sum() > 50
    assert np.abs(blender - backend)[splat_pixels].mean() < 0.04, psnr


def test_splat_colours_follow_the_expressions_and_the_view(blender, tmp_path):
    """The preview's colour is the backend's: display sRGB base + the keyed expressions' colour
    deltas (mouth Gaussians never change) + the SH degree-1 band at the view direction (eye to
    centre, head axes), clamped, then linear."""
    data = examples.random_avatar(n_gaussians=200, n_expressions=3, sh_degree=1, seed=4)
    data = dataclasses.replace(data, delta_sh=(data.delta_sh * 40).astype(np.float32))
    path = tmp_path / "colours.npz"
    avatar.write(path, data)
    data = avatar.read(path)  # the deltas as stored (float16)
    out = run_bpy(blender, f"""
        imported = importer.import_avatar({str(path)!r})
        points = imported.points
        def state():
            mesh = points.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
            values = np.empty(len(mesh.vertices) * 4, np.float32)
            mesh.attributes["color"].data.foreach_get("color", values)
            return {{"colours": values.reshape(-1, 4)[:, :3].tolist(),
                     "centres": evaluated(points).tolist()}}
        neutral = state()
        points.data.shape_keys.key_blocks[{data.expression_names[1]!r}].value = 0.7
        points.data.shape_keys.key_blocks[{data.expression_names[2]!r}].value = -0.4
        print(json.dumps({{"neutral": neutral, "keyed": state(),
                           "eye": list(imported.collection.objects["colours_view"].location),
                           "modifiers": [m.name for m in points.modifiers]}}))
    """, tmp_path)
    assert out["modifiers"] == ["Armature", "Splat Expression Colours", "Splat Preview"]
    c0, c1 = 0.28209479177387814, 0.4886025119029199
    still = ~data.mouth[:, None]
    sh = data.sh.astype(np.float64)
    base = 0.5 + c0 * sh[:, 0]
    blended = base + c0 * (0.7 * data.delta_sh[1, :, 0] - 0.4 * data.delta_sh[2, :, 0]) * still

    def seen(display, centres):
        view = np.array(centres) - np.array(out["eye"])
        view /= np.linalg.norm(view, axis=1, keepdims=True)
        x, y, z = view[:, 0], view[:, 2], -view[:, 1]  # Blender (x, y, z) = head (x, -z, y)
        band = -y[:, None] * sh[:, 1] + z[:, None] * sh[:, 2] - x[:, None] * sh[:, 3]
        return _srgb_to_linear_reference(np.clip(display + c1 * band, 0, 1))

    np.testing.assert_allclose(out["neutral"]["colours"], seen(base, out["neutral"]["centres"]),
                               atol=3e-4)
    np.testing.assert_allclose(out["keyed"]["colours"], seen(blended, out["keyed"]["centres"]),
                               atol=3e-4)
    flat = _srgb_to_linear_reference(np.clip(base, 0, 1))  # what a DC-only preview would show
    assert np.abs(np.array(out["neutral"]["colours"]) - flat).max() > 0.02
    changed = np.abs(seen(blended, out["keyed"]["centres"]) - seen(base, out["keyed"]["centres"]))
    assert (changed.max(axis=1) > 0.02).sum() > 50 and not (changed[data.mouth] > 1e-6).any()


def _srgb_to_linear_reference(srgb: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1, written here independently of the add-on's two implementations."""
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def test_splats_turn_with_the_bones(blender, tmp_path):
    """Posed bones turn each splat by its LBS-weighted skinning rotation (normalized sum of the
    joints' quaternions, as the backend's ``skinning_quats``): the preview's ``splat_rotation``
    on the evaluated points against the pose bones' own matrices."""
    data = _three_gaussians(tmp_path / "three.npz")
    weights = np.array([[1, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0], [0, 0.2, 0.8, 0, 0]], np.float32)
    avatar.write(tmp_path / "three.npz", dataclasses.replace(data, lbs_weights=weights))
    out = run_bpy(blender, f"""
        import mathutils
        imported = importer.import_avatar({str(tmp_path / "three.npz")!r})
        rig, points = imported.armature, imported.points
        for name, axis, angle in (("root", (0, 0, 1), 0.6), ("neck", (1, 0, 0), 0.3),
                                  ("jaw", (1, 0.2, 0), 0.4)):
            rig.pose.bones[name].rotation_mode = "QUATERNION"
            rig.pose.bones[name].rotation_quaternion = mathutils.Quaternion(axis, angle)
        bpy.context.view_layer.update()
        mesh = points.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        turned = np.empty(12, np.float32)
        mesh.attributes["splat_rotation"].data.foreach_get("value", turned)
        skins = [list((b.matrix @ b.bone.matrix_local.inverted()).to_quaternion())
                 for b in rig.pose.bones]
        rotation = np.empty(12, np.float32)
        points.data.attributes["rotation"].data.foreach_get("value", rotation)
        print(json.dumps({{"turned": turned.reshape(3, 4).tolist(), "skins": skins,
                           "rest": rotation.reshape(3, 4).tolist()}}))
    """, tmp_path)
    skins = np.array(out["skins"])
    skins *= np.where(skins @ skins[0] < 0, -1.0, 1.0)[:, None]  # one hemisphere, the root's
    for i, (quaternion, rest) in enumerate(zip(out["turned"], out["rest"])):
        blended = weights[i] @ skins
        expected = quat_matrix(quat_multiply(blended / np.linalg.norm(blended), np.array(rest)))
        turned = quat_matrix(np.array(quaternion))
        assert np.allclose(turned, expected, atol=1e-4), (i, turned, expected)
        unturned = quat_matrix(np.array(rest))
        assert not np.allclose(turned, unturned, atol=0.05), i  # the pose does turn it



def test_viewport_splats_face_the_view(blender, tmp_path):
    """In the viewport each splat is a flat polygon through its centre facing the avatar's View
    empty, which ``viewport.place_views`` moves to the 3D view's eye."""
    _three_gaussians(tmp_path / "three.npz")
    out = run_bpy(blender, f"""
        from toonsplat.addon import viewport
        imported = importer.import_avatar({str(tmp_path / "three.npz")!r})
        def polygons():  # each splat's instance transform: [a1 a2 a3 | centre]
            depsgraph = bpy.context.evaluated_depsgraph_get()
            return [[list(row) for row in i.matrix_world] for i in depsgraph.object_instances
                    if i.is_instance and i.parent and i.parent.original == imported.points]
        before = polygons()
        moved = [viewport.place_views((0.4, -0.5, 0.3)), viewport.place_views((0.4, -0.5, 0.3))]
        bpy.context.view_layer.update()
        print(json.dumps({{"before": before, "after": polygons(), "moved": moved,
                           "centres": evaluated(imported.points).tolist()}}))
    """, tmp_path)
    assert out["moved"] == [1, 0]  # the second call finds it there already
    for key, eye in (("before", np.array([0.0, -0.6, 0.0])), ("after", np.array([0.4, -0.5, 0.3]))):
        assert len(out[key]) == 3
        for centre, matrix in zip(out["centres"], out[key]):
            matrix = np.array(matrix)
            normal = np.cross(matrix[:3, 0], matrix[:3, 1])  # the polygon's plane
            to_eye = eye - np.array(centre)
            cosine = abs(normal @ to_eye) / np.linalg.norm(normal) / np.linalg.norm(to_eye)
            assert cosine > 0.9999, (key, cosine)
            assert np.allclose(matrix[:3, 3], centre, atol=1e-6)  # through the centre


def test_view_timer_places_new_view_empties_between_moves(blender, tmp_path):
    """The viewport timer (``viewport.follow_view``): a 3D view's eye seen for the first time
    moves the View empties there; while no view moves, an empty away from the current eye is
    placed only on every RESCAN-th tick."""
    _three_gaussians(tmp_path / "three.npz")
    out = run_bpy(blender, f"""
        from toonsplat.addon import viewport
        imported = importer.import_avatar({str(tmp_path / "three.npz")!r})
        view = imported.collection.objects["three_view"]
        at_import = list(view.location)
        viewport.follow_view()  # the first look: every 3D view counts as moved
        first = list(view.matrix_world.translation)
        viewport._current[:] = [viewport.Vector((0.2, -0.7, 0.1))]
        viewport._ticks[0] = 0
        seen = []
        for _ in range(viewport.RESCAN):
            interval = viewport.follow_view()
            seen.append(list(view.matrix_world.translation))
        viewport.unregister()
        print(json.dumps({{"at_import": at_import, "first": first, "seen": seen,
                           "interval": interval, "views": len(viewport._eyes)}}))
    """, tmp_path)
    assert out["interval"] == pytest.approx(0.1)
    assert np.allclose(out["at_import"], [0.0, -0.6, 0.0])  # no camera in the scene
    assert np.allclose(out["seen"][:-1], np.array(out["first"])[None])  # between rescans
    assert np.allclose(out["seen"][-1], [0.2, -0.7, 0.1], atol=1e-6)  # the rescan tick
