"""FLAME loading through the restricted unpickler, with FLAME-shaped files the tests write."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from backend.errors import FormatError
from backend.headmodel import flame, load_head_model

V, F = 12, 8


def fake_chumpy():
    """Modules chumpy / chumpy.ch with a Ch class that pickles like chumpy (state holds 'x')."""
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

        def __getstate__(self):
            return {"x": self.x, "_dirty_vars": set(), "_itr": None}

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = Ch
    package.ch = module
    return package, module, Ch


def flame_like(rng) -> dict:
    return {
        "v_template": rng.normal(size=(V, 3)), "f": rng.integers(0, V, size=(F, 3)).astype(np.uint32),
        "shapedirs": rng.normal(size=(V, 3, 400)) * 0.01, "posedirs": rng.normal(size=(V, 3, 36)) * 0.01,
        "J_regressor": scipy.sparse.random(5, V, density=0.5, format="csc", random_state=0),
        "weights": rng.dirichlet(np.ones(5), size=V), "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1],
                                                                                  [0, 1, 2, 3, 4]]),
        "bs_style": "lbs", "bs_type": "lrotmin",
    }


def write_flame_pickle(path, arrays: dict, protocol: int) -> None:
    package, module, Ch = fake_chumpy()
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = package, module
    try:
        data = dict(arrays)
        for key in ("v_template", "shapedirs", "posedirs", "weights"):
            data[key] = Ch(arrays[key])
        with open(path, "wb") as handle:
            pickle.dump(data, handle, protocol=protocol)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_flame_pickle_loads_without_chumpy(tmp_path, protocol):
    arrays = flame_like(np.random.default_rng(0))
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, arrays, protocol)
    assert "chumpy" not in sys.modules
    model = load_head_model(str(path), n_expressions=50)
    assert "chumpy" not in sys.modules
    assert model.kind == "flame2020" and model.n_shape == 300 and model.n_expressions == 50
    assert model.expression_names[:2] == ["expr00", "expr01"]
    assert np.allclose(model.v_template.numpy(), arrays["v_template"], atol=1e-6)
    assert np.allclose(model.J_regressor.numpy(), arrays["J_regressor"].toarray(), atol=1e-6)
    assert np.allclose(model.exprdirs.numpy(), arrays["shapedirs"][..., 300:350], atol=1e-6)
    posedirs = arrays["posedirs"].reshape(V * 3, 36).T
    assert np.allclose(model.posedirs.numpy(), posedirs, atol=1e-6)
    out = model(expression=torch.zeros(3, 50), joint_rotations=torch.zeros(3, 5, 3))
    assert out.vertices.shape == (3, V, 3) and out.landmarks.shape == (3, 0, 3)


def test_flame2023_name_and_npz_conversion_round_trip(tmp_path):
    arrays = flame_like(np.random.default_rng(1))
    path = tmp_path / "flame2023_Open.pkl"
    write_flame_pickle(path, arrays, 2)
    assets = flame.load_flame(str(path))
    assert assets.kind == "flame2023-open"
    converted = tmp_path / "flame.npz"
    flame.write_converted(str(converted), assets)
    again = load_head_model(str(converted), n_expressions=10)
    assert again.kind == "flame2023-open" and again.n_expressions == 10
    assert np.allclose(again.shapedirs.numpy(), arrays["shapedirs"][..., :300], atol=1e-6)


def test_plain_npz_conversion_and_mediapipe_embedding(tmp_path):
    arrays = flame_like(np.random.default_rng(2))
    arrays["J_regressor"] = arrays["J_regressor"].toarray()
    for key in ("bs_style", "bs_type"):
        arrays.pop(key)
    np.savez(tmp_path / "flame.npz", **arrays)
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=np.array([0, 3, 5]),
             lmk_b_coords=np.array([[1.0, 0, 0], [0.2, 0.3, 0.5], [0, 0, 1.0]]),
             landmark_indices=np.array([1, 33, 263]))
    model = load_head_model(str(tmp_path / "flame.npz"),
                            landmark_embedding=str(tmp_path / "mediapipe_landmark_embedding.npz"))
    assert model.kind == "flame-npz" and model.landmark_ids.tolist() == [1, 33, 263]
    lm = model().landmarks[0].numpy()
    f = arrays["f"].astype(int)
    expected = 0.2 * arrays["v_template"][f[3, 0]] + 0.3 * arrays["v_template"][f[3, 1]] \
        + 0.5 * arrays["v_template"][f[3, 2]]
    assert np.allclose(lm[1], expected, atol=1e-5)


def test_68_point_embedding_npy_is_read_safely(tmp_path):
    embedding = {"static_lmk_faces_idx": np.arange(51), "static_lmk_bary_coords": np.ones((51, 3)) / 3,
                 "full_lmk_faces_idx": np.arange(68)[None] % F,
                 "full_lmk_bary_coords": np.ones((1, 68, 3)) / 3}
    np.save(tmp_path / "landmark_embedding.npy", embedding, allow_pickle=True)
    faces, bary, ids = flame.read_landmark_embedding(str(tmp_path / "landmark_embedding.npy"))
    assert faces.shape == (68,) and bary.shape == (68, 3) and ids[0] == flame.IBUG68_ID_OFFSET


class Evil:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", [os.system, eval])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, call):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"v_template": Evil(call, command)}, handle, protocol=2)
    with pytest.raises(FormatError) as info:
        load_head_model(str(path))
    message = str(info.value)
    assert str(path) in message and ("system" in message or "eval" in message)
    assert not marker.exists()


def test_malicious_68_point_npy_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "landmark_embedding.npy"
    np.save(path, np.array([Evil(os.system, f"touch {marker}")], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="refusing"):
        flame.read_landmark_embedding(str(path))
    assert not marker.exists()


def test_truncated_pickle_and_missing_keys_are_clear_errors(tmp_path):
    path = tmp_path / "generic_model.pkl"
    write_flame_pickle(path, flame_like(np.random.default_rng(3)), 2)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FormatError, match="not a readable FLAME pickle"):
        load_head_model(str(path))
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))}))
    with pytest.raises(FormatError, match="lacks"):
        load_head_model(str(other))
