"""Head model: LBS against independent references, and the built-in model's geometry and rig."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from backend.formats import animate
from backend.headmodel import lbs, load_head_model
from backend.headmodel.builtin import mesh


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("TOONSPLAT_CACHE", str(tmp_path_factory.mktemp("cache")))
    model = load_head_model("builtin")
    mp.undo()
    return model


def reference_lbs(vertices, weights, joints, parents, rotvecs):
    """Per-vertex loop: chain 4x4 matrices joint by joint, then blend for each vertex."""
    world = []
    for j, parent in enumerate(parents):
        local = np.eye(4)
        local[:3, :3] = Rotation.from_rotvec(rotvecs[j]).as_matrix()
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world.append(local if parent < 0 else world[parent] @ local)
    out = np.zeros_like(vertices)
    for i, v in enumerate(vertices):
        total = np.zeros(4)
        for j in range(len(parents)):
            undo = np.eye(4)
            undo[:3, 3] = -joints[j]
            total += weights[i, j] * (world[j] @ undo @ np.append(v, 1.0))
        out[i] = total[:3]
    return out


def test_lbs_equals_per_vertex_loop():
    rng = np.random.default_rng(0)
    n, parents = 40, (-1, 0, 1, 1, 1)
    template = rng.normal(size=(n, 3))
    weights = rng.random((n, 5))
    weights /= weights.sum(1, keepdims=True)
    regressor = rng.random((5, n))
    regressor /= regressor.sum(1, keepdims=True)
    dirs = rng.normal(size=(n, 3, 4)) * 0.1
    coeffs = rng.normal(size=(2, 4))
    rotvecs = rng.normal(size=(2, 5, 3)) * 0.5
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)
    verts, joints, transforms, rest = lbs.lbs(t(coeffs), t(rotvecs), t(template), t(dirs),
                                              torch.zeros(36, n * 3, dtype=torch.float64),
                                              t(regressor), parents, t(weights))
    for b in range(2):
        shaped = template + np.einsum("s,vcs->vc", coeffs[b], dirs)
        rest_joints = regressor @ shaped
        expected = reference_lbs(shaped, weights, rest_joints, parents, rotvecs[b])
        assert np.abs(verts[b].numpy() - expected).max() <= 1e-5
        assert np.allclose(rest[b].numpy(), rest_joints)


def test_rodrigues_matches_scipy():
    rotvecs = np.random.default_rng(1).normal(size=(50, 3))
    ours = lbs.batch_rodrigues(torch.as_tensor(rotvecs)).numpy()
    assert np.abs(ours - Rotation.from_rotvec(rotvecs).as_matrix()).max() < 1e-6


def test_forward_matches_numpy_animate(builtin):
    rng = np.random.default_rng(2)
    rot = torch.as_tensor(rng.normal(size=(1, 5, 3)) * 0.3, dtype=torch.float32)
    trans = torch.as_tensor([[0.01, -0.02, 0.3]])
    expr = torch.as_tensor(rng.normal(size=(1, builtin.n_expressions)), dtype=torch.float32)
    out = builtin(expression=expr, joint_rotations=rot, translation=trans)
    transforms = animate.joint_transforms(out.rest_joints[0].double().numpy(), np.array(builtin.parents),
                                          rot[0].double().numpy(), trans[0].double().numpy())
    assert np.abs(transforms - out.transforms[0].double().numpy()).max() <= 1e-5
    rest = (builtin.v_template + torch.einsum("k,vck->vc", expr[0], builtin.exprdirs)).double().numpy()
    skinned = animate.skin(rest, builtin.lbs_weights.double().numpy(), transforms)
    assert np.abs(skinned - out.vertices[0].double().numpy()).max() <= 1e-5


def test_jaw_rotation_moves_only_jaw_weighted_vertices(builtin):
    rot = torch.zeros(1, 5, 3)
    rot[0, 2, 0] = 0.3
    moved = (builtin(joint_rotations=rot).vertices - builtin(joint_rotations=torch.zeros(1, 5, 3)).vertices)
    distance = moved[0].norm(dim=1)
    jaw = builtin.lbs_weights[:, 2]
    assert distance[jaw == 0].max() < 1e-7
    assert distance[jaw > 0.9].min() > 1e-3
    assert (jaw > 0.9).sum() > 300
    # the chin (FaceMesh 152) moves down, the nose tip (1) does not move
    assert moved[0, 152, 1] < -0.005 and distance[1] < 1e-7


def test_builtin_structure(builtin):
    assert builtin.kind == "builtin" and builtin.n_vertices >= 5000
    assert builtin.n_expressions >= 16 and len(set(builtin.expression_names)) == builtin.n_expressions
    for name in ("blink_L", "blink_R", "smile_L", "smile_R", "lip_pucker", "cheek_puff", "nose_sneer_L"):
        assert name in builtin.expression_names
    assert torch.allclose(builtin.lbs_weights.sum(1), torch.ones(builtin.n_vertices), atol=1e-5)
    assert torch.equal(builtin.landmark_ids, torch.arange(478))
    joints = builtin().rest_joints[0]
    assert joints[3, 0] > 0.02 and joints[4, 0] < -0.02   # eye_L on +X (subject's left)
    assert joints[2, 1] < joints[3, 1] and joints[0, 1] < joints[1, 1]


def test_builtin_mesh_is_clean_and_closed_except_mouth_and_eyes(builtin):
    vertices, faces = builtin.v_template.double().numpy(), builtin.faces.numpy()
    corners = vertices[faces]
    areas = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]),
                                 axis=1)
    assert areas.min() > 1e-9
    assert len(np.unique(np.sort(faces, axis=1), axis=0)) == len(faces)
    _, counts = mesh.edge_face_counts(faces)
    assert set(np.unique(counts)) <= {1, 2}
    loops = mesh.boundary_loops(faces)
    assert len(loops) == 3
    holes = [set(loop.tolist()) for loop in loops]
    for a, b in ((13, 14), (159, 145), (386, 374)):   # inner lips, right and left eyelids
        assert any(a in hole and b in hole for hole in holes)


def test_landmarks_on_surface_and_canonical_layout(builtin):
    lm = builtin().landmarks[0].numpy()
    assert lm.shape == (478, 3)
    # MediaPipe layout: nose tip (4) in front, chin (152) lowest, left eye corner (263) on +X
    assert lm[4, 2] == lm[:468, 2].max() and lm[152, 1] < lm[4, 1] and lm[263, 0] > 0 > lm[33, 0]
    # iris centres sit inside their eye openings
    assert lm[468, 0] < 0 < lm[473, 0]
    assert abs(lm[473, 1] - 0.5 * (lm[386, 1] + lm[374, 1])) < 0.006


REGIONS = {  # expression -> (FaceMesh anchor ids, radius in m): independent of the generator
    "blink": ((386, 374), 0.025), "eye_wide": ((386,), 0.025), "squint": ((374,), 0.03),
    "brow_raise": ((334,), 0.04), "brow_lower": ((334,), 0.04), "smile": ((291,), 0.04),
    "frown": ((291,), 0.035), "lip_stretch": ((291,), 0.04), "nose_sneer": ((294,), 0.03),
}


def test_expressions_are_localized(builtin):
    v = builtin.v_template.numpy()
    for k, name in enumerate(builtin.expression_names):
        delta = np.linalg.norm(builtin.exprdirs[:, :, k].numpy(), axis=1)
        assert delta.max() > 1e-3, name
        base, _, side = name.rpartition("_")
        if side in ("L", "R") and base in REGIONS:
            sign = 1 if side == "L" else -1
            ids, radius = REGIONS[base]
            anchors = v[list(ids)] * [sign, 1, 1]   # the canonical face is mirror-symmetric
            centre = anchors.mean(0)
            near = np.linalg.norm(v - centre, axis=1) < radius
            assert delta[near].sum() / delta.sum() > 0.9, name
            assert delta[v[:, 0] * sign > 0].sum() / delta.sum() > 0.95, name
        else:
            assert delta[v[:, 2] > -0.01].sum() / delta.sum() > 0.95, name   # front of the face


def test_eyes_rotate_eyeballs_only(builtin):
    rot = torch.zeros(1, 5, 3)
    rot[0, 3, 1] = 0.4
    moved = (builtin(joint_rotations=rot).vertices - builtin().vertices)[0].norm(dim=1)
    eye = builtin.lbs_weights[:, 3] > 0
    assert moved[~eye].max() < 1e-7 and (moved[eye] > 1e-3).float().mean() > 0.9
    lm_moved = (builtin(joint_rotations=rot).landmarks - builtin().landmarks)[0].norm(dim=1)
    assert lm_moved[473] > 1e-3 and lm_moved[468] < 1e-7


def test_cache_is_reused_and_regenerated(tmp_path, monkeypatch):
    from backend.headmodel import builtin as builtin_module

    monkeypatch.setenv("TOONSPLAT_CACHE", str(tmp_path))
    first = builtin_module.load_builtin()
    path = builtin_module.cache_path()
    with open(path, "wb") as handle:
        handle.write(b"garbage")
    second = builtin_module.load_builtin()
    assert np.array_equal(first.v_template, second.v_template)
    assert builtin_module.load_builtin().faces.shape == first.faces.shape


def test_builtin_model_takes_a_landmark_embedding_file(tmp_path):
    """A user's MediaPipe embedding replaces the built-in correspondence; a bad one is refused."""
    from backend.errors import InputError

    own = load_head_model("builtin")
    faces = own.landmark_faces.numpy().copy()
    bary = own.landmark_bary.numpy().copy()
    faces[0], bary[0] = 5, [0.2, 0.3, 0.5]
    path = tmp_path / "embedding.npz"
    np.savez(path, lmk_face_idx=faces, lmk_b_coords=bary, landmark_indices=own.landmark_ids.numpy())
    other = load_head_model("builtin", landmark_embedding=str(path))
    assert int(other.landmark_faces[0]) == 5 and other.landmark_faces[1:].equal(own.landmark_faces[1:])
    expected = (own.v_template[own.faces[5]] * torch.tensor([0.2, 0.3, 0.5])[:, None]).sum(0)
    assert torch.allclose(other.landmarks_from(own.v_template[None])[0, 0], expected.float(), atol=1e-6)
    faces[1] = len(own.faces) + 10
    np.savez(path, lmk_face_idx=faces, lmk_b_coords=bary, landmark_indices=own.landmark_ids.numpy())
    with pytest.raises(InputError, match="names triangle"):
        load_head_model("builtin", landmark_embedding=str(path))
