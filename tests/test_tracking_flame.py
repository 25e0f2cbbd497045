"""``prepare`` with a FLAME-format model file and a MediaPipe landmark embedding the test writes.

The FLAME file is the built-in head model written in FLAME's pickle layout (chumpy-style arrays,
a sparse joint regressor, 13 identity + 27 expression directions in ``shapedirs`` with an
``n_shape`` entry); the embedding is ``mediapipe_landmark_embedding.npz`` for 116 of its
landmarks, without irises (as the real one), so gaze comes from the pupils bound to the eyes.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from PIL import Image

from backend.cli.main import main
from backend.fileio import read_png
from backend.formats import tracking as tracking_format
from backend.headmodel import load_head_model
from backend.ingest.landmarks import FaceMeshDetector
from backend.tracking.regions import BROW_LEFT, BROW_RIGHT, EYE_LEFT, EYE_RIGHT, LIPS, NOSE
from tests.test_headmodel_flame import write_flame_pickle
from tests.test_ingest_media import astronaut
from tests.test_tracking_prepare import _fitted_landmarks

EMBEDDED = np.array(sorted(LIPS + EYE_LEFT + EYE_RIGHT + BROW_LEFT + BROW_RIGHT + NOSE))


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flame")
    builtin = load_head_model("builtin")
    n_vertices = builtin.v_template.shape[0]
    arrays = {
        "v_template": builtin.v_template.double().numpy(), "f": builtin.faces.numpy().astype(np.uint32),
        "shapedirs": torch.cat([builtin.shapedirs, builtin.exprdirs], dim=2).double().numpy(),
        "n_shape": int(builtin.n_shape),
        "posedirs": builtin.posedirs.double().numpy().T.reshape(n_vertices, 3, 36),
        "J_regressor": scipy.sparse.csc_matrix(builtin.J_regressor.double().numpy()),
        "weights": builtin.lbs_weights.double().numpy(),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
    }
    model_path = folder / "generic_model.pkl"
    write_flame_pickle(model_path, arrays, protocol=4)
    order = _rows_of(builtin, EMBEDDED)
    embedding_path = folder / "mediapipe_landmark_embedding.npz"
    np.savez(embedding_path, lmk_face_idx=builtin.landmark_faces.numpy()[order],
             lmk_b_coords=builtin.landmark_bary.double().numpy()[order], landmark_indices=EMBEDDED)
    Image.fromarray(astronaut()).save(folder / "astronaut.png")
    return folder, model_path, embedding_path


def _rows_of(model, ids: np.ndarray) -> np.ndarray:
    lookup = {int(i): row for row, i in enumerate(model.landmark_ids.numpy())}
    return np.array([lookup[int(i)] for i in ids])


def test_prepare_fits_a_flame_file_with_its_landmark_embedding(flame_files, tmp_path):
    folder, model_path, embedding_path = flame_files
    out = tmp_path / "prepared"
    assert main(["prepare", "--image", str(folder / "astronaut.png"), "--out", str(out),
                 "--head-model", str(model_path), "--landmark-embedding", str(embedding_path),
                 "--no-qa", "--progress", "quiet"]) == 0
    track = tracking_format.read(out / "tracking.npz")
    assert track.head_model["kind"] == "flame2020" and track.head_model["path"] == str(model_path)
    assert track.head_model["landmark_embedding"] == str(embedding_path)
    assert track.shape.shape == (13,) and track.expression_names[0] == "expr00" and track.valid[0]
    model = load_head_model(str(model_path), landmark_embedding=str(embedding_path))
    assert np.array_equal(model.landmark_ids.numpy(), EMBEDDED)
    fitted = _fitted_landmarks(track, model)[0]
    with FaceMeshDetector(video=False) as detector:
        reference = detector(read_png(out / "frames" / "000000.png"))
    interocular = np.linalg.norm(reference[468, :2] - reference[473, :2])
    distance = np.linalg.norm(fitted - reference[EMBEDDED, :2], axis=1) / interocular
    print(f"FLAME-format fit: {distance.mean() * 100:.2f}% of the inter-ocular distance")
    assert distance.mean() < 0.03
    # Gaze comes from the iris centres through pupils bound to the eye joints: eyes stay sane.
    assert np.abs(track.joint_rotations[0, 3:]).max() < 0.5


def test_flame_file_without_embedding_is_a_clear_error(flame_files, tmp_path, capsys):
    folder, model_path, _ = flame_files
    code = main(["prepare", "--image", str(folder / "astronaut.png"), "--out", str(tmp_path / "o"),
                 "--head-model", str(model_path), "--progress", "quiet"])
    assert code == 2 and "--landmark-embedding" in capsys.readouterr().err
