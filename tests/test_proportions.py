"""Toon proportions in 3D (backend/formats/proportions.py, docs/STYLIZE.md).

The rig rule, stated precisely: for every expression k and joint rotations theta, the avatar with
proportions posed at coefficient 1 on expression k is LBS_theta(D(x + dx_k)), where x + dx_k is
the original avatar's rest position at expression k, D the deformation and LBS the same skinning
(weights and rest joints unchanged, D fixes the joints). So each expression's displacement is D
applied to the original one: dx'_k = D(x + dx_k) - D(x). Checked to 1e-5 m on an avatar made
from the built-in head model and on a tiny avatar trained on the synthetic subject.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.errors import FormatError, InputError
from backend.formats import animate
from backend.formats import avatar as avatar_format
from backend.formats import proportions as P
from backend.formats.npzio import atomic_write_npz, read_npz
from tests.conftest import run_backend

N_EXPRESSIONS = 8


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def builtin():
    """The built-in head's assets, rest joints and anchors."""
    from backend.headmodel import load_assets, load_head_model
    from backend.headmodel.proportions import landmark_points

    assets = load_assets("builtin", N_EXPRESSIONS)
    joints = load_head_model("builtin", N_EXPRESSIONS)().rest_joints[0].numpy().astype(np.float64)
    vertices = assets.v_template.astype(np.float64)
    anchors = P.anchors_from_landmarks(landmark_points(assets, vertices), assets.landmark_ids,
                                       "builtin")
    return assets, joints, vertices, anchors


@pytest.fixture(scope="module")
def mesh_avatar(builtin) -> avatar_format.Avatar:
    """An avatar whose Gaussians sit on the built-in head mesh (vertices and face centres) with
    the mesh's expression directions as blendshapes, random anisotropic covariances, and 60
    mouth-interior Gaussians behind the lips; float32 deltas."""
    assets, joints, vertices, _ = builtin
    rng = np.random.default_rng(0)
    faces = np.asarray(assets.faces)
    centres = vertices[faces].mean(axis=1)
    teeth = rng.uniform([-0.02, -0.05, 0.02], [0.02, -0.035, 0.04], (60, 3))
    means = np.concatenate([vertices, centres, teeth])
    dirs = np.moveaxis(assets.exprdirs, -1, 0)                       # (K, V, 3)
    deltas = np.concatenate([dirs, dirs[:, faces].mean(axis=2), np.zeros((N_EXPRESSIONS, 60, 3))],
                            axis=1)
    weights = np.concatenate([assets.lbs_weights, assets.lbs_weights[faces].mean(axis=1),
                              np.tile(np.float64([0, 0.3, 0.7, 0, 0]), (60, 1))])
    n, k = len(means), N_EXPRESSIONS
    quats = rng.normal(size=(n, 4))
    small = lambda *shape: (rng.normal(size=shape) * 0.01).astype(np.float32)  # noqa: E731
    return avatar_format.Avatar(
        means=means.astype(np.float32),
        log_scales=np.log(rng.uniform(0.0005, 0.003, (n, 3))).astype(np.float32),
        quats=(quats / np.linalg.norm(quats, axis=1, keepdims=True)).astype(np.float32),
        opacity_logits=np.full(n, 3.0, np.float32), sh=np.full((n, 1, 3), 0.3, np.float32),
        mouth=np.arange(n) >= n - 60, lbs_weights=(weights / weights.sum(1, keepdims=True)).astype(
            np.float32),
        delta_means=deltas.astype(np.float32), delta_log_scales=small(k, n, 3),
        delta_quats=small(k, n, 4), delta_opacity_logits=small(k, n), delta_sh=small(k, n, 1, 3),
        joint_positions=joints.astype(np.float32), joint_parents=np.int32([-1, 0, 1, 1, 1]),
        mesh_vertices=vertices.astype(np.float32), mesh_faces=faces.astype(np.int32),
        mesh_expression_dirs=dirs.astype(np.float32), mesh_lbs_weights=assets.lbs_weights.astype(
            np.float32), expression_names=list(assets.expression_names))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, torch_single_thread):
    """A tiny avatar trained on the synthetic subject (as tests/test_orbit.py), float32 deltas."""
    import torch

    from backend.synth.render import synthesize
    from backend.train.session import train_and_export

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("proportions")
    synthesize(str(folder / "data"), n_frames=16, size=64, seed=3, video=False)
    train_and_export(str(folder / "data"), str(folder / "run"), "tiny", {"iterations": 120})
    avatar = avatar_format.read(folder / "run" / "avatar.npz")
    return avatar_format.replace(avatar, **{name: getattr(avatar, name).astype(np.float32)
                                            for name in avatar_format.DELTA_FIELDS})


def _deformation(avatar: avatar_format.Avatar, spec: str) -> P.Deformation:
    from backend.headmodel.proportions import proportion_anchors

    return P.build_deformation(proportion_anchors(avatar), avatar.joint_positions,
                               avatar.mesh_vertices, P.parse_spec(spec).components())


def _head_grid(vertices: np.ndarray, n: int = 40, margin: float = 0.03) -> np.ndarray:
    lo, hi = vertices.min(axis=0) - margin, vertices.max(axis=0) + margin
    axes = [np.linspace(lo[i], hi[i], n) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


# -- the spec ------------------------------------------------------------------------------------
def test_spec_is_preset_and_strength_with_errors_a_user_can_act_on():
    assert P.parse_spec("toon") == P.ProportionsSpec("toon", 1.0)
    assert P.parse_spec("Chibi:0.5") == P.ProportionsSpec("chibi", 0.5)
    assert P.parse_spec("none").is_identity and P.parse_spec("toon:0").is_identity
    assert P.parse_spec("subtle:0.5").components()["eyes"] == pytest.approx(0.5 * 0.35)
    with pytest.raises(InputError, match="none, subtle, toon, chibi"):
        P.parse_spec("cartoon:0.5")
    with pytest.raises(InputError, match="outside 0..1"):
        P.parse_spec("toon:1.5")
    with pytest.raises(InputError, match="not a number"):
        P.parse_spec("toon:big")


# -- the deformation -----------------------------------------------------------------------------
@pytest.mark.parametrize("preset", [p for p in P.PRESETS if p != "none"])
def test_every_preset_is_injective_fixes_the_joints_and_is_local(builtin, preset):
    _, joints, vertices, anchors = builtin
    deformation = P.build_deformation(anchors, joints, vertices, P.PRESETS[preset])
    determinant = np.linalg.det(deformation.jacobian(_head_grid(vertices)))
    # Measured minimum over this grid: chibi 0.13, toon 0.29, subtle 0.58 (a local search
    # finds 0.11 for chibi, at the nose root between the eyes).
    assert determinant.min() > 0.05, f"{preset}: det J down to {determinant.min():.3f}"
    around = _head_grid(vertices, 30, margin=0.2)   # every field's support, coarser
    assert np.linalg.det(deformation.jacobian(around)).min() > 0.05
    assert np.abs(deformation(joints) - joints).max() < 1e-4
    far = vertices.mean(axis=0) + np.array([[0.5, 0, 0], [0, 0.6, 0], [0, 0, -0.5]])
    assert np.array_equal(deformation(far), far)


def test_jacobian_matches_finite_differences(builtin):
    _, joints, vertices, anchors = builtin
    deformation = P.build_deformation(anchors, joints, vertices, P.PRESETS["chibi"])
    points, step = _head_grid(vertices, 14), 1e-6
    numeric = np.stack([(deformation(points + step * e) - deformation(points - step * e)) / (2 * step)
                        for e in np.eye(3)], axis=-1)
    assert np.abs(numeric - deformation.jacobian(points)).max() < 1e-6


def test_an_eye_turning_about_its_joint_commutes_with_the_deformation(builtin):
    """Inside the eyeball (0.2 E around the eye joint) D is a uniform scaling about the joint
    and no other component reaches there, so rotating the eye before or after D agrees."""
    _, joints, vertices, anchors = builtin
    deformation = P.build_deformation(anchors, joints, vertices, P.PRESETS["chibi"])
    size = np.linalg.norm(joints[3] - joints[4])
    rng = np.random.default_rng(1)
    rotation = animate.rodrigues(np.array([0.3, -0.4, 0.1]))
    for j in (3, 4):
        ball = joints[j] + rng.normal(size=(500, 3)) * 0.06 * size
        ball = ball[np.linalg.norm(ball - joints[j], axis=1) < 0.2 * size]
        turned = (ball - joints[j]) @ rotation.T + joints[j]
        expected = (deformation(ball) - joints[j]) @ rotation.T + joints[j]
        assert np.abs(deformation(turned) - expected).max() < 1e-12
        assert np.allclose(deformation(ball) - joints[j], 1.45 * (ball - joints[j]))


# -- the avatar under D --------------------------------------------------------------------------
def _check_rig_rule(original, proportioned, deformation) -> float:
    """Max error of posed'(k, theta) = LBS_theta(D(rest position at expression k)) over every k,
    for the Gaussians and the mesh, with the jaw closed and open and the eyes turned."""
    worst = 0.0
    for jaw in (0.0, 0.25):
        rotations = np.zeros((5, 3))
        rotations[0] = [0.05, 0.2, 0.0]
        rotations[2, 0], rotations[3] = jaw, [0.1, 0.3, 0.0]
        rotations[4] = [0.1, 0.3, 0.0]
        transforms = animate.joint_transforms(original.joint_positions, original.joint_parents,
                                              rotations)
        for k in range(original.n_expressions):
            psi = np.eye(original.n_expressions)[k]
            expected = animate.skin(deformation(animate.blend_means(original, psi)),
                                    original.lbs_weights, transforms)
            posed = animate.posed_means(proportioned, psi, rotations)
            rest_mesh = original.mesh_vertices + original.mesh_expression_dirs[k].astype(np.float64)
            expected_mesh = animate.skin(deformation(rest_mesh), original.mesh_lbs_weights, transforms)
            posed_mesh = animate.posed_mesh(proportioned, psi, rotations)
            worst = max(worst, np.abs(posed - expected).max(), np.abs(posed_mesh - expected_mesh).max())
    return worst


@pytest.mark.parametrize("which", ["mesh_avatar", pytest.param("trained", marks=pytest.mark.slow)])
def test_every_expression_poses_the_deformed_rest_position(request, which):
    original = request.getfixturevalue(which)
    for spec in ("toon", "chibi"):
        proportioned = P.apply_proportions(original, spec, _anchors(original))
        worst = _check_rig_rule(original, proportioned, _deformation(original, spec))
        assert worst < 1e-5, f"{which} {spec}: rig rule off by {worst:.2e} m"
        # ... and the rule is not empty: the expressions' displacements did change
        assert np.abs(proportioned.delta_means - original.delta_means).max() > 1e-5
    at_zero = P.apply_proportions(original, "toon:0", _anchors(original))
    identity = P.Deformation({})
    assert _check_rig_rule(original, at_zero, identity) == 0.0


def _anchors(avatar):
    from backend.headmodel.proportions import proportion_anchors

    return proportion_anchors(avatar)


def test_strength_zero_and_none_are_the_identity_exactly(mesh_avatar):
    for spec in ("toon:0", "none", "chibi:0.0"):
        same = P.apply_proportions(mesh_avatar, spec, _anchors(mesh_avatar))
        assert not same.has_proportions and same.rest_means is None
        for name in avatar_format.SPECS:
            assert np.array_equal(getattr(same, name), getattr(mesh_avatar, name)), name


def test_covariances_follow_the_jacobian(mesh_avatar):
    proportioned = P.apply_proportions(mesh_avatar, "chibi", _anchors(mesh_avatar))
    jacobian = _deformation(mesh_avatar, "chibi").jacobian(mesh_avatar.means)
    before = _covariances(mesh_avatar.log_scales, mesh_avatar.quats)
    after = _covariances(proportioned.log_scales, proportioned.quats)
    expected = jacobian @ before @ np.swapaxes(jacobian, 1, 2)
    scale = np.linalg.norm(expected, axis=(1, 2))
    assert (np.linalg.norm(after - expected, axis=(1, 2)) / scale).max() < 1e-4
    changed = np.abs(jacobian - np.eye(3)).max(axis=(1, 2)) > 0.05
    assert changed.sum() > 500     # the test covers Gaussians that D really stretches
    # each expression's blended rotation is turned by the same rotation as the neutral one
    k = 3
    turn = _rotations(proportioned.quats) @ np.swapaxes(_rotations(mesh_avatar.quats), 1, 2)
    blended = _rotations(proportioned.quats + proportioned.delta_quats[k])
    original = _rotations(mesh_avatar.quats + mesh_avatar.delta_quats[k])
    assert np.abs(blended - turn @ original).max() < 1e-5
    assert np.array_equal(proportioned.delta_log_scales, mesh_avatar.delta_log_scales)


def _rotations(quats):
    quats = np.asarray(quats, np.float64)
    return P.quat_to_matrix(quats / np.linalg.norm(quats, axis=-1, keepdims=True))


def _covariances(log_scales, quats):
    rotation = _rotations(quats)
    return rotation @ (np.exp(2 * np.asarray(log_scales, np.float64))[:, :, None]
                       * np.swapaxes(rotation, 1, 2))


def test_a_rotation_turns_gaussians_and_keeps_their_scales_in_order():
    rng = np.random.default_rng(2)
    log_scales = np.log(rng.uniform(0.001, 0.01, (300, 3)))
    quats = rng.normal(size=(300, 4))
    turn = animate.rodrigues(rng.normal(size=(300, 3)) * 0.3)
    new_log, relative = P.transform_covariances(log_scales, quats, turn)
    assert np.abs(new_log - log_scales).max() < 1e-9
    assert np.abs(_rotations(P.quat_multiply(relative, quats)) - turn @ _rotations(quats)).max() < 1e-9
    stretch = np.broadcast_to(np.diag([1.3, 1.0, 0.8]), (300, 3, 3))
    new_log, _ = P.transform_covariances(log_scales, np.tile([1.0, 0, 0, 0], (300, 1)), stretch)
    assert np.allclose(new_log, log_scales + np.log([1.3, 1.0, 0.8]))


def test_reapplying_starts_from_the_rest_arrays(mesh_avatar):
    """Positions come back exactly from the rest arrays; covariances and rotations through the
    inverse Jacobian of the recorded deformation (float32 rounding)."""
    anchors = _anchors(mesh_avatar)
    toon = P.apply_proportions(mesh_avatar, "toon", anchors)
    assert toon.proportions["preset"] == "toon" and toon.proportions["strength"] == 1.0
    again = P.apply_proportions(toon, "toon", _anchors(toon))
    half = P.apply_proportions(toon, "chibi:0.5", _anchors(toon))
    direct_half = P.apply_proportions(mesh_avatar, "chibi:0.5", anchors)
    removed = P.apply_proportions(toon, "none", _anchors(toon))
    assert not removed.has_proportions
    exact = ("means", "delta_means", "mesh_vertices", "mesh_expression_dirs", "opacity_logits",
             "sh", "delta_log_scales", "joint_positions") + avatar_format.REST_FIELDS
    for name in exact:
        assert np.array_equal(getattr(again, name), getattr(toon, name)), name
        assert np.array_equal(getattr(half, name), getattr(direct_half, name)), name
        if name in avatar_format.SPECS:
            assert np.array_equal(getattr(removed, name), getattr(mesh_avatar, name)), name
    for one, other in ((again, toon), (half, direct_half), (removed, mesh_avatar)):
        assert np.abs(one.log_scales - other.log_scales).max() < 1e-5
        # a Gaussian's axes are defined when its scales differ (here by 5% or more; with two
        # equal scales only the covariance is)
        scales = np.sort(np.exp(other.log_scales), axis=1)
        defined = (scales[:, 1:] / scales[:, :-1]).min(axis=1) > 1.05
        for name in ("quats", "delta_quats"):   # measured: at most 3e-5
            difference = np.abs(getattr(one, name) - getattr(other, name))
            assert difference[..., defined, :].max() < 1e-4, name
        covariances = _covariances(one.log_scales, one.quats)
        expected = _covariances(other.log_scales, other.quats)
        error = np.linalg.norm(covariances - expected, axis=(1, 2))
        assert (error / np.linalg.norm(expected, axis=(1, 2))).max() < 1e-5
    assert np.array_equal(toon.rest_means, mesh_avatar.means)


# -- the file ------------------------------------------------------------------------------------
def test_file_round_trip_keeps_the_rest_arrays(mesh_avatar, tmp_path):
    toon = P.apply_proportions(mesh_avatar, "toon:0.8", _anchors(mesh_avatar))
    path = tmp_path / "toon.npz"
    avatar_format.write(path, toon)                      # float16 deltas, as train writes them
    back = avatar_format.read(path)
    assert back.has_proportions and back.proportions == toon.proportions
    assert back.rest_delta_means.dtype == np.float16 and back.rest_means.dtype == np.float32
    assert np.array_equal(back.rest_means, mesh_avatar.means)
    assert np.array_equal(back.rest_mesh_expression_dirs, mesh_avatar.mesh_expression_dirs)
    assert np.abs(back.rest_delta_means - mesh_avatar.delta_means).max() < 2e-6
    assert "proportions" in avatar_format.summary(back)
    plain = tmp_path / "plain.npz"
    avatar_format.write(plain, mesh_avatar)
    assert avatar_format.read(plain).proportions is None


def test_reader_wants_all_rest_arrays_and_the_meta_key_or_none(mesh_avatar, tmp_path):
    toon = P.apply_proportions(mesh_avatar, "toon", _anchors(mesh_avatar))
    path = tmp_path / "toon.npz"
    avatar_format.write(path, toon, delta_dtype=np.float32)
    arrays, meta = read_npz(path, "avatar file")
    broken = tmp_path / "broken.npz"
    atomic_write_npz(broken, {k: v for k, v in arrays.items() if k != "rest_mesh_vertices"}, meta)
    with pytest.raises(FormatError, match=r"broken\.npz.*rest_mesh_vertices"):
        avatar_format.read(broken)
    atomic_write_npz(broken, arrays, {k: v for k, v in meta.items() if k != "proportions"})
    with pytest.raises(FormatError, match=r"broken\.npz.*'proportions'"):
        avatar_format.read(broken)
    atomic_write_npz(broken, {**arrays, "rest_means": arrays["rest_means"][:-1]}, meta)
    with pytest.raises(FormatError, match=r"broken\.npz.*rest_means"):
        avatar_format.read(broken)
    atomic_write_npz(broken, arrays, {**meta, "proportions": {"preset": "toon", "strength": 3}})
    with pytest.raises(FormatError, match="strength"):
        avatar_format.read(broken)
    with pytest.raises(FormatError, match="together"):
        avatar_format.write(broken, avatar_format.replace(toon, rest_mesh_vertices=None))


# -- anchors -------------------------------------------------------------------------------------
def test_anchors_from_vertex_ids_and_what_a_flame_avatar_needs(mesh_avatar, builtin, tmp_path):
    from backend.headmodel.proportions import proportion_anchors

    _, _, _, anchors = builtin
    # The built-in model's landmark i is vertex i: the same anchors, given as vertex ids.
    mapping = {name: list(ids) for name, ids in P.ANCHOR_LANDMARKS.items()}
    anchor_file = tmp_path / "anchors.json"
    anchor_file.write_text(json.dumps(mapping))
    from_ids = proportion_anchors(mesh_avatar, anchors_file=str(anchor_file))
    for name in P.ANCHOR_LANDMARKS:
        assert np.allclose(from_ids[name], anchors[name], atol=1e-7), name
    anchor_file.write_text(json.dumps({k: v for k, v in mapping.items() if k != "nose_tip"}))
    with pytest.raises(InputError, match="misses nose_tip"):
        proportion_anchors(mesh_avatar, anchors_file=str(anchor_file))
    flame = avatar_format.replace(mesh_avatar, head_model={"kind": "flame2023"})
    with pytest.raises(InputError, match="--proportions-anchors"):
        proportion_anchors(flame)
    with pytest.raises(InputError, match=r"no landmarks for .*nose_tip \(FaceMesh 4\)"):
        P.anchors_from_landmarks(np.zeros((3, 3)), np.array([1, 2, 3]), "flame.pkl")


# -- command line and build ----------------------------------------------------------------------
def test_proportions_command(mesh_avatar, tmp_path):
    source, out = tmp_path / "a.npz", tmp_path / "b.npz"
    avatar_format.write(source, mesh_avatar)
    bad = run_backend("proportions", "--avatar", str(source), "--proportions", "anime",
                      "--out", str(out))
    assert bad.returncode != 0 and "none, subtle, toon, chibi" in bad.stderr + bad.stdout
    done = run_backend("proportions", "--avatar", str(source), "--proportions", "chibi:0.7",
                       "--out", str(out))
    assert done.returncode == 0, done.stderr
    result = avatar_format.read(out)
    assert result.proportions["preset"] == "chibi" and result.proportions["strength"] == 0.7


def test_build_applies_proportions_in_the_export_stage_only(mesh_avatar, tmp_path):
    from backend.formats import examples
    from backend.formats import tracking as tracking_format
    from backend.formats.options import BuildOptions
    from backend.pipeline.build import Build, _export_params, _export_proportioned, make_stages
    from backend.progress import Progress

    build = Build(BuildOptions(out=str(tmp_path)), str(tmp_path))
    assert _export_params(build) == {}          # default: older builds' export stays complete
    (tmp_path / "train").mkdir()
    (tmp_path / "data").mkdir()
    avatar_format.write(tmp_path / "train" / "avatar.npz", mesh_avatar)
    tracking = examples.random_tracking(n_frames=2, n_expressions=N_EXPRESSIONS)
    tracking.head_model = {"kind": "builtin"}
    tracking_format.write(tmp_path / "data" / "tracking.npz", tracking)
    assert not _export_proportioned(build, str(tmp_path / "avatar.npz"), Progress("quiet"))
    build.options.proportions = "toon:0.8"
    assert _export_params(build) == {"proportions": "toon:0.8"}
    assert _export_proportioned(build, str(tmp_path / "avatar.npz"), Progress("quiet"))
    exported = avatar_format.read(tmp_path / "avatar.npz")
    assert exported.proportions["strength"] == 0.8
    assert np.array_equal(exported.rest_means, mesh_avatar.means)
    assert not avatar_format.read(tmp_path / "train" / "avatar.npz").has_proportions
    build.options.proportions = "toon:2"
    with pytest.raises(InputError, match="outside 0..1"):
        make_stages(build, Progress("quiet"))


def test_a_flame_file_anchors_from_its_landmark_embedding(mesh_avatar, builtin, tmp_path):
    """The built-in model written as a FLAME pickle with a MediaPipe embedding of the landmarks
    FLAME's has (lips, eyes, brows, nose: no face contour): the same anchors, the same avatar."""
    import scipy.sparse

    from backend.headmodel.proportions import apply_proportions
    from backend.tracking.regions import BROW_LEFT, BROW_RIGHT, EYE_LEFT, EYE_RIGHT, LIPS, NOSE
    from tests.test_headmodel_flame import write_flame_pickle

    assets, _, _, _ = builtin
    n_vertices = len(assets.v_template)
    model_path = tmp_path / "generic_model.pkl"
    write_flame_pickle(model_path, {
        "v_template": assets.v_template.astype(np.float64), "f": assets.faces.astype(np.uint32),
        "shapedirs": np.concatenate([assets.shapedirs, assets.exprdirs], axis=2).astype(np.float64),
        "n_shape": int(assets.shapedirs.shape[-1]),
        "posedirs": assets.posedirs.T.reshape(n_vertices, 3, 36).astype(np.float64),
        "J_regressor": scipy.sparse.csc_matrix(assets.J_regressor.astype(np.float64)),
        "weights": assets.lbs_weights.astype(np.float64),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]])}, protocol=4)
    embedded = np.array(sorted(set(LIPS + EYE_LEFT + EYE_RIGHT + BROW_LEFT + BROW_RIGHT + NOSE)))
    rows = np.array([list(assets.landmark_ids).index(i) for i in embedded])
    embedding = tmp_path / "mediapipe_landmark_embedding.npz"
    np.savez(embedding, lmk_face_idx=assets.landmark_faces[rows],
             lmk_b_coords=assets.landmark_bary[rows].astype(np.float64), landmark_indices=embedded)
    flame_avatar = avatar_format.replace(mesh_avatar, head_model={"kind": "flame2020"})
    with pytest.raises(InputError, match="--landmark-embedding"):
        apply_proportions(flame_avatar, "toon", head_model=str(model_path))
    from_flame = apply_proportions(flame_avatar, "toon", head_model=str(model_path),
                                   landmark_embedding=str(embedding))
    from_builtin = P.apply_proportions(mesh_avatar, "toon", _anchors(mesh_avatar))
    for name in ("means", "delta_means", "mesh_vertices", "log_scales"):
        assert np.abs(getattr(from_flame, name) - getattr(from_builtin, name)).max() < 1e-6, name


@pytest.mark.slow
def test_changing_build_proportions_reruns_the_export_only(tmp_path):
    """A real build of a tiny synthetic clip, then the same build with --proportions: prepare,
    stylize and train are skipped, export re-runs; back to none, export re-runs again."""
    subject = tmp_path / "subject"
    made = run_backend("synth", "--out", str(subject), "--frames", "12", "--size", "128",
                       "--seed", "3")
    assert made.returncode == 0, made.stderr[-2000:]
    out = tmp_path / "build"
    build = ["build", "--video", str(subject / "video.mp4"), "--out", str(out), "--size", "128",
             "--preset", "tiny", "--iters", "40", "--device", "cpu", "--log-level", "info"]
    first = run_backend(*build, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not avatar_format.read(out / "avatar.npz").has_proportions
    toon = run_backend(*build, "--proportions", "toon:0.5", timeout=900)
    assert toon.returncode == 0, toon.stderr[-3000:]
    for stage in ("prepare", "stylize", "train"):
        assert f"{stage}: complete, skipped" in toon.stderr, toon.stderr[-3000:]
    assert "export: running (its parameters changed)" in toon.stderr
    exported = avatar_format.read(out / "avatar.npz")
    assert exported.proportions["preset"] == "toon" and exported.proportions["strength"] == 0.5
    trained = avatar_format.read(out / "train" / "avatar.npz")
    assert not trained.has_proportions and np.array_equal(exported.rest_means, trained.means)
    plain = run_backend(*build, timeout=900)
    assert plain.returncode == 0 and "export: running (its parameters changed)" in plain.stderr
    assert "train: complete, skipped" in plain.stderr
    assert not avatar_format.read(out / "avatar.npz").has_proportions
