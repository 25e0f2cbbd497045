"""The file contracts: round-trips, validation, corrupted and truncated files, size."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from backend.errors import FormatError
from backend.formats import animate, avatar, examples, tracking
from backend.formats.npzio import atomic_write_npz


@pytest.fixture
def small_avatar():
    return examples.random_avatar(n_gaussians=500, n_expressions=6, sh_degree=2, delta_sh_degree=1)


def test_avatar_round_trip(tmp_path, small_avatar):
    path = tmp_path / "a.npz"
    avatar.write(path, small_avatar, delta_dtype=np.float32)
    back = avatar.read(path)
    for name in avatar.SPECS:
        np.testing.assert_array_equal(getattr(back, name), getattr(small_avatar, name), err_msg=name)
    assert back.expression_names == small_avatar.expression_names
    assert back.head_model == small_avatar.head_model
    assert back.sh_degree == 2 and back.delta_sh_degree == 1


def test_avatar_float16_deltas_stay_close(tmp_path, small_avatar):
    path = tmp_path / "a.npz"
    avatar.write(path, small_avatar)
    back = avatar.read(path)
    assert back.delta_means.dtype == np.float16
    np.testing.assert_allclose(back.delta_means, small_avatar.delta_means, atol=2e-6)
    assert back.means.dtype == np.float32


def test_tracking_round_trip(tmp_path):
    original = examples.random_tracking(n_frames=12, n_expressions=5)
    original.vertex_offsets = np.zeros((40, 3), np.float32)
    path = tmp_path / "t.npz"
    tracking.write(path, original)
    back = tracking.read(path)
    for name in tracking.SPECS:
        np.testing.assert_array_equal(np.asarray(getattr(back, name)),
                                      np.asarray(getattr(original, name)), err_msg=name)
    assert back.fps == original.fps and back.expression_names == original.expression_names
    assert tracking.slice_frames(back, slice(2, 5)).n_frames == 3


def test_truncated_file_is_a_clear_error(tmp_path, small_avatar):
    path = tmp_path / "a.npz"
    avatar.write(path, small_avatar)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="cut.npz.*truncated or corrupted"):
        avatar.read(cut)


def test_corrupted_payload_is_detected(tmp_path, small_avatar):
    path = tmp_path / "a.npz"
    avatar.write(path, small_avatar)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("means.npy")
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF  # flip a byte inside the means array: the zip CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="corrupted"):
        avatar.read(path)


def _rewrite(path, small_avatar, mutate):
    arrays = {name: np.asarray(getattr(small_avatar, name)) for name in avatar.SPECS}
    meta = {"format": avatar.FORMAT_NAME, "version": 1, "expression_names": small_avatar.expression_names,
            "joint_names": small_avatar.joint_names}
    mutate(arrays, meta)
    atomic_write_npz(path, arrays, meta)


@pytest.mark.parametrize("mutate, message", [
    (lambda a, m: m.update(version=99), "version 99"),
    (lambda a, m: m.update(format="something-else"), "not a avatar file"),
    (lambda a, m: a.pop("lbs_weights"), "missing the array 'lbs_weights'"),
    (lambda a, m: a.update(opacity_logits=a["opacity_logits"][:-1]), "N="),
    (lambda a, m: a["means"].__setitem__((3, 1), np.nan), "NaN or Inf"),
    (lambda a, m: a.update(lbs_weights=a["lbs_weights"] * 2), "sum to 1"),
    (lambda a, m: m.update(expression_names=["only_one"]), "expression_names"),
    (lambda a, m: a.update(joint_parents=np.array([-1, 0, 3, 1, 1])), "joint_parents"),
    (lambda a, m: a.update(mesh_faces=a["mesh_faces"] + 10_000), "outside"),
    (lambda a, m: a.update(sh=np.zeros((len(a["means"]), 5, 3), np.float32)), "SH coefficients"),
])
def test_reader_rejects_inconsistent_files(tmp_path, small_avatar, mutate, message):
    path = tmp_path / "bad.npz"
    _rewrite(path, small_avatar, mutate)
    with pytest.raises(FormatError, match=message) as raised:
        avatar.read(path)
    assert "bad.npz" in str(raised.value)


def test_reader_names_missing_file_and_folder(tmp_path):
    with pytest.raises(FormatError, match="not found"):
        tracking.read(tmp_path / "nope.npz")
    with pytest.raises(FormatError, match="is a folder"):
        tracking.read(tmp_path)


def test_reader_never_unpickles(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, __meta__=np.array([{"format": avatar.FORMAT_NAME}], dtype=object))
    with pytest.raises(FormatError):
        avatar.read(path)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, small_avatar):
    path = tmp_path / "a.npz"
    avatar.write(path, small_avatar)
    before = path.read_bytes()
    broken = avatar.replace(small_avatar, means=small_avatar.means[:-1])
    with pytest.raises(FormatError):
        avatar.write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_product_size_avatar_is_under_150_mb(tmp_path):
    big = examples.random_avatar(n_gaussians=70_000, n_expressions=50, sh_degree=3, seed=1)
    path = tmp_path / "big.npz"
    avatar.write(path, big)
    size_mb = os.path.getsize(path) / 1e6
    assert size_mb < 150, f"70k x 50 avatar is {size_mb:.1f} MB"


def test_numpy_lbs_identity_and_rigid_root(small_avatar):
    zero = np.zeros(small_avatar.n_expressions)
    rest = animate.posed_means(small_avatar, zero, np.zeros((5, 3)))
    np.testing.assert_allclose(rest, small_avatar.means, atol=1e-6)
    # Rotating only the root about its own origin is a rigid rotation of everything.
    rotation = np.array([0.1, -0.4, 0.25])
    posed = animate.posed_means(small_avatar, zero, np.stack([rotation] + [np.zeros(3)] * 4),
                                translation=np.array([0.0, 0.1, 0.0]))
    expected = small_avatar.means @ animate.rodrigues(rotation).T + np.array([0.0, 0.1, 0.0])
    np.testing.assert_allclose(posed, expected, atol=1e-6)


def test_numpy_blend_skips_mouth_gaussians(small_avatar):
    weights = np.linspace(-1, 1, small_avatar.n_expressions)
    blended = animate.blend_means(small_avatar, weights)
    mouth = small_avatar.mouth
    np.testing.assert_array_equal(blended[mouth], small_avatar.means[mouth])
    expected = small_avatar.means[~mouth] + np.einsum("k,knc->nc", weights,
                                                       small_avatar.delta_means[:, ~mouth])
    np.testing.assert_allclose(blended[~mouth], expected, atol=1e-6)


def test_rodrigues_matches_scipy():
    from scipy.spatial.transform import Rotation

    vectors = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(animate.rodrigues(vectors), Rotation.from_rotvec(vectors).as_matrix(),
                               atol=1e-12)
    np.testing.assert_allclose(animate.rodrigues(np.zeros(3)), np.eye(3))
