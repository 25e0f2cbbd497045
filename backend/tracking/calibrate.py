"""Where MediaPipe puts its landmarks on the built-in head: a measured landmark embedding.

The built-in face is MediaPipe's canonical face geometry, so landmark i starts as canonical vertex
i. On renders of that face MediaPipe's landmarks sit a consistent ~3 px (at 512) from those
vertices, pulled towards its own face prior (docs/TRACKING.md). Fitting the model to them bends
the fitted head by the same amount. This module measures, for every landmark, the surface point
MediaPipe actually reports: synthetic subjects (random identities, performances and gaze, never
the evaluation seed) are rendered with exact ground truth, ``prepare`` detects the landmarks, and
per landmark the barycentric point of the posed mesh whose projection best matches the
detections over all frames is solved by robust Gauss-Newton, then snapped back onto the rest
surface of the same part (skin or eyeball). The result is written in the layout of FLAME's
``mediapipe_landmark_embedding.npz`` (``lmk_face_idx``, ``lmk_b_coords``, ``landmark_indices``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np

EMBEDDING_FILE = os.path.join(os.path.dirname(__file__), "data", "builtin_mediapipe_embedding.npz")
HUBER_PX = 2.0        # robust weight threshold (pixels at 512)
NEIGHBOUR_VERTICES = 12


@dataclass
class Observation:
    """One prepared clip of a synthetic subject with its ground truth.

    Attributes:
        posed: (T, V, 3) the true posed head vertices (world space of ``truth``).
        pixels_per_metre_fn: not stored; see ``project``.
        detected: (T, 478, 2) MediaPipe landmarks in source-video pixels.
        valid: (T,) frames with a detection.
        intrinsics: (T, 3, 3), extrinsics: (T, 4, 4) the true cameras (source pixels).
        scale: source pixels -> pixels at 512 of the crop (for the robust threshold).
    """

    posed: np.ndarray
    detected: np.ndarray
    valid: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    scale: float


def _project_with_jacobian(points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray):
    """Pixels and d(pixel)/d(world point). (T, L, 3) -> (T, L, 2), (T, L, 2, 3)."""
    rotation = extrinsics[:, None, :3, :3]
    camera = np.einsum("tlij,tlj->tli", np.broadcast_to(rotation, points.shape[:2] + (3, 3)),
                       points) + extrinsics[:, None, :3, 3]
    fx, fy = intrinsics[:, None, 0, 0], intrinsics[:, None, 1, 1]
    cx, cy = intrinsics[:, None, 0, 2], intrinsics[:, None, 1, 2]
    x, y, z = camera[..., 0], camera[..., 1], camera[..., 2]
    pixels = np.stack([fx * x / z + cx, fy * y / z + cy], axis=-1)
    d_camera = np.zeros(points.shape[:2] + (2, 3))
    d_camera[..., 0, 0], d_camera[..., 0, 2] = fx / z, -fx * x / z ** 2
    d_camera[..., 1, 1], d_camera[..., 1, 2] = fy / z, -fy * y / z ** 2
    return pixels, d_camera @ rotation


def solve_barycentric(observations: list[Observation], corners: np.ndarray, bary: np.ndarray,
                      columns: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Robust Gauss-Newton for each landmark's barycentric point (extended beyond its triangle).

    Args:
        observations: clips with true posed vertices and detections.
        corners: (L, 3) vertex ids of each landmark's triangle; bary: (L, 3) start point.
        columns: (L,) MediaPipe id of each landmark (column of ``detected``).

    Returns:
        (L, 3) barycentric coordinates (they may leave [0, 1]) and (L,) the mean detection
        residual in pixels at 512 after the solve.
    """
    bary = bary.astype(np.float64).copy()
    residual = np.zeros(len(bary))
    for _ in range(iterations):
        hessian = np.zeros((len(bary), 2, 2))
        gradient = np.zeros((len(bary), 2))
        total, count = np.zeros(len(bary)), 0
        for obs in observations:
            tri = obs.posed[obs.valid][:, corners]                       # (T, L, 3, 3)
            points = np.einsum("tlkc,lk->tlc", tri, bary)
            pixels, d_point = _project_with_jacobian(points, obs.intrinsics[obs.valid],
                                                     obs.extrinsics[obs.valid])
            edges = np.stack([tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]], axis=-1)
            jac = d_point @ edges                                        # (T, L, 2, 2)
            error = obs.detected[obs.valid][:, columns] - pixels        # (T, L, 2)
            distance = np.linalg.norm(error, axis=-1) * obs.scale
            weight = np.minimum(1.0, HUBER_PX / np.maximum(distance, 1e-9))
            hessian += np.einsum("tl,tlai,tlaj->lij", weight, jac, jac)
            gradient += np.einsum("tl,tlai,tla->li", weight, jac, error)
            total += distance.sum(axis=0)
            count += int(obs.valid.sum())
        residual = total / max(count, 1)
        damping = 1e-6 * np.trace(hessian, axis1=1, axis2=2)[:, None, None] * np.eye(2)
        step = np.linalg.solve(hessian + damping, gradient[..., None])[..., 0]
        bary[:, 1:] += step
        bary[:, 0] = 1.0 - bary[:, 1:].sum(axis=1)
    return bary, residual


def snap_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                    allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point on the allowed faces near each point. (L, 3) -> faces (L,), bary (L, 3).

    Candidates are the allowed faces around the nearest vertices; each point is projected on a
    candidate's plane and clamped into it; the closest result wins.
    """
    incident = [[] for _ in range(len(vertices))]
    for f in np.flatnonzero(allowed):
        for v in faces[f]:
            incident[v].append(f)
    usable = np.array([len(x) > 0 for x in incident])
    ids = np.flatnonzero(usable)
    out_faces = np.zeros(len(points), np.int64)
    out_bary = np.zeros((len(points), 3))
    for i, point in enumerate(points):
        near = ids[np.argsort(np.linalg.norm(vertices[ids] - point, axis=1))[:NEIGHBOUR_VERTICES]]
        candidates = np.unique(np.concatenate([incident[v] for v in near]))
        tri = vertices[faces[candidates]]                                # (C, 3, 3)
        b = _clamped_barycentric(point, tri)
        distance = np.linalg.norm(np.einsum("ck,ckd->cd", b, tri) - point, axis=1)
        best = int(np.argmin(distance))
        out_faces[i], out_bary[i] = candidates[best], b[best]
    return out_faces, out_bary


def _clamped_barycentric(point: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of ``point`` projected on each triangle, clamped inside. (C, 3)."""
    e1, e2, rel = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], point - tri[:, 0]
    gram = np.stack([np.stack([(e1 * e1).sum(1), (e1 * e2).sum(1)], 1),
                     np.stack([(e1 * e2).sum(1), (e2 * e2).sum(1)], 1)], 1)
    rhs = np.stack([(rel * e1).sum(1), (rel * e2).sum(1)], 1)
    uv = np.linalg.solve(gram + 1e-18 * np.eye(2), rhs[..., None])[..., 0]
    b = np.concatenate([1.0 - uv.sum(1, keepdims=True), uv], axis=1).clip(0.0, None)
    return b / b.sum(axis=1, keepdims=True)


def calibrate(model, observations: list[Observation], rounds: int = 2) -> dict:
    """The measured embedding of ``model``'s landmarks. Returns arrays and per-landmark shifts.

    Returns:
        {"lmk_face_idx" (L,), "lmk_b_coords" (L, 3), "landmark_indices" (L,),
         "shift_mm" (L,) rest-space move of each landmark, "before_px" / "after_px" (L,) the
         mean distance of the detections from the landmark's projection before and after}.
    """
    faces = model.faces.numpy()
    rest = model.v_template.double().numpy()
    eye = model.lbs_weights.numpy()[:, 3:].max(axis=1) > 0.5
    face_is_eye = eye[faces[:, 0]]
    ids = model.landmark_ids.numpy()
    lmk_faces = model.landmark_faces.numpy().copy()
    bary = model.landmark_bary.double().numpy().copy()
    start = np.einsum("lk,lkd->ld", bary, rest[faces[lmk_faces]])
    _, before = solve_barycentric(observations, faces[lmk_faces], bary, ids, iterations=1)
    for _ in range(rounds):
        solved, _ = solve_barycentric(observations, faces[lmk_faces], bary, ids)
        point = np.einsum("lk,lkd->ld", solved, rest[faces[lmk_faces]])
        for part in (False, True):
            pick = face_is_eye[lmk_faces] == part
            if pick.any():
                lmk_faces[pick], bary[pick] = snap_to_surface(point[pick], rest, faces,
                                                              face_is_eye == part)
    _, after = solve_barycentric(observations, faces[lmk_faces], bary, ids, iterations=1)
    end = np.einsum("lk,lkd->ld", bary, rest[faces[lmk_faces]])
    return {"lmk_face_idx": lmk_faces, "lmk_b_coords": bary, "landmark_indices": ids,
            "shift_mm": np.linalg.norm(end - start, axis=1) * 1000.0,
            "before_px": before, "after_px": after}


def observation(model, synth_folder: str, prepared_folder: str) -> Observation:
    """Ground truth from ``synth`` and detections from ``prepare`` of the same clip."""
    from ..fileio import read_json
    from ..formats import tracking as tracking_format
    from ..formats.npzio import read_npz
    from .evaluate import pose

    truth = tracking_format.read(os.path.join(synth_folder, "tracking.npz"))
    arrays, meta = read_npz(os.path.join(prepared_folder, "landmarks.npz"), "landmarks file")
    boxes = np.asarray(read_json(os.path.join(prepared_folder, "prepare.json"))["crop_boxes"])
    size = float(meta["size"])
    side = boxes[:, 2][:, None, None]
    detected = (arrays["points"].astype(np.float64) - size / 2) * side / size + boxes[:, None, :2]
    return Observation(posed=pose(model, truth).vertices.double().numpy(), detected=detected,
                       valid=arrays["found"].astype(bool) & truth.valid.astype(bool),
                       intrinsics=truth.intrinsics.astype(np.float64),
                       extrinsics=truth.extrinsics.astype(np.float64),
                       scale=float(512.0 / np.median(boxes[:, 2])))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=EMBEDDING_FILE,
                        help="embedding file to write (default: the one the tracker ships with)")
    parser.add_argument("--work", required=True, help="folder for the synthetic clips")
    parser.add_argument("--subjects", type=int, default=4, help="synthetic subjects (default 4)")
    parser.add_argument("--frames", type=int, default=60, help="frames per subject (default 60)")
    parser.add_argument("--size", type=int, default=512, help="render size (default 512)")
    parser.add_argument("--first-seed", type=int, default=100,
                        help="seed of the first subject (default 100; the tests evaluate seed 0)")


def run(args: argparse.Namespace, progress) -> int:
    from ..formats.npzio import atomic_write_npz
    from ..headmodel import load_head_model
    from ..ingest.prepare import PrepareOptions, prepare
    from ..progress import Progress
    from ..synth.render import synthesize

    model = load_head_model("builtin")
    observations = []
    quiet = Progress(mode="quiet")
    for n in range(args.subjects):
        seed = args.first_seed + n
        progress.stage("calibrate", f"subject {n + 1}/{args.subjects} (seed {seed})")
        synth = os.path.join(args.work, f"synth_{seed}")
        prepared = os.path.join(args.work, f"prepared_{seed}")
        synthesize(synth, n_frames=args.frames, size=args.size, seed=seed, progress=quiet)
        prepare(PrepareOptions(video=os.path.join(synth, "video.mp4"), out=prepared, size=512,
                               landmark_embedding="canonical", qa=False), quiet)
        observations.append(observation(model, synth, prepared))
    result = calibrate(model, observations)
    atomic_write_npz(args.out, {k: result[k] for k in ("lmk_face_idx", "lmk_b_coords",
                                                        "landmark_indices")},
                     {"kind": "mediapipe landmark embedding", "head_model": "builtin",
                      "subjects": args.subjects, "frames": args.frames,
                      "first_seed": args.first_seed,
                      "before_px": float(result["before_px"].mean()),
                      "after_px": float(result["after_px"].mean()),
                      "mean_shift_mm": float(result["shift_mm"].mean())})
    progress.result(f"landmark embedding: detections {result['before_px'].mean():.2f} px -> "
                    f"{result['after_px'].mean():.2f} px from the landmarks (at 512), mean shift "
                    f"{result['shift_mm'].mean():.2f} mm", path=os.path.abspath(args.out))
    return 0
