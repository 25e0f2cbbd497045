"""metrical-tracker / INSTA and VHAP folders, written by the test in those layouts, converted."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from backend.errors import FormatError
from backend.formats import tracking as tracking_format
from backend.tracking import converters


def _six_d(matrix):
    """pytorch3d's matrix_to_rotation_6d: the first two rows."""
    return matrix[:2].reshape(6)


def _write_insta(folder, n=3, size=64):
    rng = np.random.default_rng(0)
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "images").mkdir()
    truth = []
    for i in range(n):
        jaw = Rotation.from_rotvec([0.1 * i, 0, 0]).as_matrix()
        eyes = [Rotation.from_rotvec([0, 0.05 * i, 0]).as_matrix(),
                Rotation.from_rotvec([0.02, 0.05 * i, 0]).as_matrix()]
        head = Rotation.from_rotvec([0.0, 0.3 - 0.1 * i, 0.05]).as_matrix()
        frame = {"flame": {"exp": rng.normal(size=(1, 100)).astype(np.float32),
                           "shape": np.full((1, 300), 0.5, np.float32),
                           "jaw": _six_d(jaw)[None].astype(np.float32),
                           "eyes": np.concatenate([_six_d(e) for e in eyes])[None].astype(np.float32),
                           "eyelids": np.zeros((1, 2), np.float32)},
                 "camera": {"fl": np.array([[4.0]], np.float32)},
                 "opencv": {"R": head[None].astype(np.float32), "t": np.array([[0, 0, 1.0]], np.float32),
                            "K": np.array([[[2 * size, 0, size / 2], [0, 2 * size, size / 2], [0, 0, 1]]],
                                          np.float32)},
                 "img_size": np.array([size, size]), "frame_id": i}
        torch.save(frame, folder / "checkpoint" / f"{i:05d}.frame")
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., 0] = 40 * i
        rgba[8:40, 8:40, 3] = 255
        Image.fromarray(rgba).save(folder / "images" / f"{i:05d}.png")
        truth.append((frame, jaw, eyes, head))
    return truth


def test_metrical_tracker_folder_converts(tmp_path):
    truth = _write_insta(tmp_path / "insta")
    track = converters.convert_metrical(str(tmp_path / "insta"), str(tmp_path / "out"), size=32)
    again = tracking_format.read(tmp_path / "out" / "tracking.npz")
    assert again.n_frames == 3 and again.n_expressions == 50 and again.shape.shape == (300,)
    for i, (frame, jaw, eyes, head) in enumerate(truth):
        np.testing.assert_allclose(again.expressions[i], frame["flame"]["exp"][0, :50], atol=1e-6)
        np.testing.assert_allclose(again.joint_rotations[i, 2], Rotation.from_matrix(jaw).as_rotvec(),
                                   atol=1e-5)
        np.testing.assert_allclose(again.joint_rotations[i, 4], Rotation.from_matrix(eyes[1]).as_rotvec(),
                                   atol=1e-5)
        np.testing.assert_allclose(again.extrinsics[i, :3, :3], head, atol=1e-6)
    np.testing.assert_allclose(track.intrinsics[0, 0, 0], 64.0)          # 128 px focal at 64 -> 32
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "000001.png"))
    frame = np.asarray(Image.open(tmp_path / "out" / "frames" / "000002.png"))
    assert mask.shape == (32, 32) and mask[10, 10] == 255 and mask[30, 30] == 0
    assert abs(int(frame[0, 0, 0]) - 80) <= 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "00000.frame"
    with open(path, "wb") as handle:
        pickle.dump({"flame": _Evil()}, handle)
    with pytest.raises(FormatError, match="weights_only"):
        converters.load_frame_file(str(path))


def test_vhap_export_converts(tmp_path):
    folder = tmp_path / "vhap"
    (folder / "images").mkdir(parents=True)
    n = 2
    params = {"rotation": np.array([[0, 0.2, 0], [0, -0.2, 0]], np.float32),
              "neck_pose": np.zeros((n, 3), np.float32), "jaw_pose": np.array([[0.1, 0, 0]] * n, np.float32),
              "eyes_pose": np.zeros((n, 6), np.float32), "expr": np.ones((n, 100), np.float32),
              "translation": np.array([[0, 0, 0.01]] * n, np.float32), "shape": np.zeros(300, np.float32)}
    np.savez(folder / "tracked_flame_params_30.npz", **params)
    camera_to_world = np.eye(4)
    camera_to_world[2, 3] = 1.0          # OpenGL camera on +Z looking down -Z at the head
    frames = []
    for i in range(n):
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(folder / "images" / f"{i:05d}_00.png")
        frames.append({"timestep_index": i, "file_path": f"images/{i:05d}_00.png",
                       "transform_matrix": camera_to_world.tolist(), "fl_x": 30.0, "fl_y": 30.0,
                       "cx": 8.0, "cy": 8.0, "w": 16, "h": 16})
    (folder / "transforms.json").write_text(json.dumps({"frames": frames}))
    track = converters.convert_vhap(str(folder), str(tmp_path / "out"))
    # World origin seen by an OpenCV camera at +Z: in front of it, at depth 1, y axis flipped.
    np.testing.assert_allclose(track.extrinsics[0], np.diag([1.0, -1, -1, 1]) + np.eye(4) * 0
                               + np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]]))
    np.testing.assert_allclose(track.joint_rotations[1, 0], [0, -0.2, 0], atol=1e-7)
    assert track.n_expressions == 50 and tracking_format.read(tmp_path / "out" / "tracking.npz")
