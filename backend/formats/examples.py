"""Small, valid contract files made from random numbers: for tests, benches and demos of the
readers. Not a head model: shapes and value ranges are realistic, the content is not."""

from __future__ import annotations

import numpy as np

from . import JOINT_NAMES, JOINT_PARENTS
from .avatar import Avatar
from .tracking import Tracking

# Rest joint positions of a head about 0.2 m tall, in metres (head space, see avatar.AXES).
REST_JOINTS = np.array([[0.0, 0.0, 0.0], [0.0, -0.05, -0.02], [0.0, -0.03, 0.01],
                        [0.032, 0.035, 0.06], [-0.032, 0.035, 0.06]], dtype=np.float32)


def _weights_for(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible skinning weights: jaw below the mouth at the front, neck at the bottom."""
    weights = np.zeros((len(points), len(JOINT_NAMES)), dtype=np.float32)
    y, z = points[:, 1], points[:, 2]
    jaw = np.clip((-y - 0.02) / 0.03, 0, 1) * np.clip(z / 0.04, 0, 1)
    neck = np.clip((-y - 0.07) / 0.03, 0, 1) * (1 - jaw)
    weights[:, 2] = jaw
    weights[:, 1] = neck
    weights[:, 0] = 1 - jaw - neck
    near_eye = [np.linalg.norm(points - REST_JOINTS[j], axis=1) < 0.012 for j in (3, 4)]
    for j, mask in zip((3, 4), near_eye):
        weights[mask] = 0
        weights[mask, j] = 1
    return weights


def uv_sphere(n_lat: int = 12, n_lon: int = 16, radii=(0.08, 0.11, 0.09)):
    """A closed UV-sphere mesh: (V, 3) float32 vertices and (F, 3) int32 faces."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack(np.meshgrid(lat, lon, indexing="ij"), axis=-1).reshape(-1, 2)
    body = np.stack([np.sin(ring[:, 0]) * np.cos(ring[:, 1]), np.cos(ring[:, 0]),
                     np.sin(ring[:, 0]) * np.sin(ring[:, 1])], axis=1)
    vertices = np.concatenate([[[0, 1, 0]], body, [[0, -1, 0]]]) * np.asarray(radii)
    faces = []
    top, bottom = 0, len(vertices) - 1
    index = lambda i, j: 1 + i * n_lon + j % n_lon  # noqa: E731
    for j in range(n_lon):
        faces.append((top, index(0, j + 1), index(0, j)))
        faces.append((bottom, index(n_lat - 2, j), index(n_lat - 2, j + 1)))
        for i in range(n_lat - 2):
            faces.append((index(i, j), index(i, j + 1), index(i + 1, j + 1)))
            faces.append((index(i, j), index(i + 1, j + 1), index(i + 1, j)))
    return vertices.astype(np.float32), np.asarray(faces, dtype=np.int32)


def random_avatar(n_gaussians: int = 2000, n_expressions: int = 8, sh_degree: int = 1,
                  delta_sh_degree: int = 0, n_mouth: int | None = None, seed: int = 0) -> Avatar:
    """A valid avatar with Gaussians on an ellipsoid head and random blendshape deltas."""
    rng = np.random.default_rng(seed)
    n_mouth = n_gaussians // 10 if n_mouth is None else n_mouth
    direction = rng.normal(size=(n_gaussians, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    means = (direction * np.array([0.08, 0.11, 0.09])).astype(np.float32)
    mouth = np.zeros(n_gaussians, dtype=bool)
    mouth[rng.choice(n_gaussians, n_mouth, replace=False)] = True
    means[mouth] = rng.uniform([-0.02, -0.04, 0.03], [0.02, -0.02, 0.06], (n_mouth, 3))
    quats = rng.normal(size=(n_gaussians, 4)).astype(np.float32)
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    k, c, cd = n_expressions, (sh_degree + 1) ** 2, (delta_sh_degree + 1) ** 2
    vertices, faces = uv_sphere()
    names = [f"expression_{i:02d}" for i in range(k)]
    small = lambda *shape: (rng.normal(size=shape) * 0.002).astype(np.float32)  # noqa: E731
    return Avatar(
        means=means,
        log_scales=np.log(rng.uniform(0.001, 0.004, (n_gaussians, 3))).astype(np.float32),
        quats=quats,
        opacity_logits=rng.normal(1.0, 1.0, n_gaussians).astype(np.float32),
        sh=(rng.normal(size=(n_gaussians, c, 3)) * 0.3).astype(np.float32),
        mouth=mouth,
        lbs_weights=_weights_for(means, rng),
        delta_means=small(k, n_gaussians, 3) * ~mouth[None, :, None],
        delta_log_scales=small(k, n_gaussians, 3),
        delta_quats=small(k, n_gaussians, 4),
        delta_opacity_logits=small(k, n_gaussians),
        delta_sh=small(k, n_gaussians, cd, 3),
        joint_positions=REST_JOINTS.copy(),
        joint_parents=np.asarray(JOINT_PARENTS, dtype=np.int32),
        mesh_vertices=vertices,
        mesh_faces=faces,
        mesh_expression_dirs=small(k, len(vertices), 3),
        mesh_lbs_weights=_weights_for(vertices, rng),
        expression_names=names,
        head_model={"kind": "random-example"},
        training={"note": "random example, not trained"},
    )


def random_tracking(n_frames: int = 30, n_expressions: int = 8, fps: float = 25.0,
                    size: int = 512, seed: int = 0) -> Tracking:
    """A valid tracking file: smooth random expressions and small head rotations."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    phases = rng.uniform(0, 2 * np.pi, (1, n_expressions))
    expressions = (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t[:, None] + phases)).astype(np.float32)
    rotations = np.zeros((n_frames, 5, 3), dtype=np.float32)
    rotations[:, 0, 1] = 0.3 * np.sin(2 * np.pi * 0.2 * t)   # head yaw
    rotations[:, 2, 0] = 0.15 * (1 + np.sin(2 * np.pi * 0.7 * t))  # jaw opening
    focal = 4.0 * size
    intrinsics = np.tile(np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]],
                                  dtype=np.float32), (n_frames, 1, 1))
    extrinsics = np.tile(np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32), (n_frames, 1, 1))
    extrinsics[:, 2, 3] = 1.0  # camera 1 m in front of the face, looking along -Z (head space)
    valid = np.ones(n_frames, dtype=bool)
    return Tracking(
        fps=fps, frame_ids=np.arange(n_frames, dtype=np.int32), timestamps=t,
        image_size=np.array([size, size], dtype=np.int32), expressions=expressions,
        joint_rotations=rotations, translation=np.zeros((n_frames, 3), dtype=np.float32),
        intrinsics=intrinsics, extrinsics=extrinsics, valid=valid,
        shape=np.zeros(10, dtype=np.float32),
        expression_names=[f"expression_{i:02d}" for i in range(n_expressions)],
        head_model={"kind": "random-example"}, source={"note": "random example"})
