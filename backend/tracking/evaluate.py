"""Tracking accuracy against a ground truth (the synthetic subject's tracking file).

Both tracking files must use the same head model. The fitted file lives in the pixels of the
prepared crops, the truth in the pixels of the source video; ``crop_boxes`` (from prepare.json)
maps one to the other. Reported, per frame and averaged over valid frames:

- ``reprojection_px``: fitted landmarks (projected by the fitted camera) against the true ones
  (projected by the true camera, then cropped), in crop pixels scaled to 512, per region too;
- ``rotation_deg``: the angle between fitted and true rotations of each joint;
- ``vertex_mm``: mean vertex distance in head space (root rotation and translation removed:
  the space the avatar is trained in);
- ``vertex_mm_aligned``: the same after removing one offset for the whole clip (the mean
  difference). No image can show that offset: moving every vertex of the identity, and with
  them the joints the model regresses from them, by one vector while the translation moves
  back by it changes no pixel, so a fit can only take it from its prior;
- ``gaze_deg``: per eye, the angle between fitted and true optical axes (the eye's +Z after
  root, neck and eye rotations), which ignores the roll about that axis a round iris cannot show;
- ``gaze_signed_deg``: per eye, the mean signed error of that axis as [yaw, pitch] (yaw towards
  the image's right, pitch upwards), and ``eye_centre_px``: per eye, the mean signed image offset
  [x, y] (crop pixels at 512, y down) of the fitted eyeball centre from the true one. A steady
  gaze error with the iris in place is an eyeball centre in the wrong place: these two tell a
  misplaced eye socket from a misread iris.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..formats.tracking import Tracking
from .regions import region_of

JOINTS = ("root", "neck", "jaw", "eye_L", "eye_R")


def project_tracking(points: np.ndarray, tracking: Tracking) -> np.ndarray:
    """Project world points with a tracking file's cameras. (T, N, 3) -> (T, N, 2) pixels."""
    camera = np.einsum("tij,tnj->tni", tracking.extrinsics[:, :3, :3].astype(np.float64), points)
    camera = camera + tracking.extrinsics[:, None, :3, 3]
    pixels = np.einsum("tij,tnj->tni", tracking.intrinsics.astype(np.float64), camera)
    return pixels[..., :2] / pixels[..., 2:3]


def to_crop(pixels: np.ndarray, crop_boxes: np.ndarray, size: int) -> np.ndarray:
    """Source pixels to crop pixels. (T, N, 2), boxes (T, 3) centre_x, centre_y, side -> (T, N, 2)."""
    boxes = np.asarray(crop_boxes, dtype=np.float64)
    scale = (size / boxes[:, 2])[:, None, None]
    return (pixels - boxes[:, None, :2]) * scale + size / 2


def pose(model, tracking: Tracking, head_space: bool = False):
    """The head model posed by a tracking file (root and translation dropped in head space)."""
    import torch

    rotations = torch.as_tensor(tracking.joint_rotations, dtype=torch.float32)
    translation = torch.as_tensor(tracking.translation, dtype=torch.float32)
    if head_space:
        rotations = rotations.clone()
        rotations[:, 0] = 0
        translation = torch.zeros_like(translation)
    offsets = None if tracking.vertex_offsets is None else torch.as_tensor(tracking.vertex_offsets)
    frames = tracking.n_frames
    with torch.no_grad():
        return model(shape=torch.as_tensor(tracking.shape)[None].expand(frames, -1),
                     expression=torch.as_tensor(tracking.expressions),
                     joint_rotations=rotations, translation=translation, vertex_offsets=offsets)


def rotation_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between axis-angle rotations. (..., 3), (..., 3) -> (...) degrees."""
    from scipy.spatial.transform import Rotation

    shape = np.shape(a)[:-1]
    ra = Rotation.from_rotvec(np.reshape(a, (-1, 3)).astype(np.float64))
    rb = Rotation.from_rotvec(np.reshape(b, (-1, 3)).astype(np.float64))
    return np.rad2deg((ra.inv() * rb).magnitude()).reshape(shape)


def evaluate(model, truth: Tracking, fitted: Tracking, crop_boxes: np.ndarray) -> dict:
    """Accuracy of ``fitted`` against ``truth`` (same frames, same head model).

    Args:
        model: the head model both files use.
        truth: ground-truth tracking in source-video pixels; fitted: a prepared tracking file.
        crop_boxes: (T, 3) the crops of the prepared frames (prepare.json ``crop_boxes``).

    Returns:
        {"frames", "reprojection_px", "reprojection_px_by_region", "rotation_deg" (per joint),
         "vertex_mm", "per_frame": {...}} with averages over frames valid in ``fitted``.
    """
    if truth.n_frames != fitted.n_frames:
        raise InputError(f"the truth has {truth.n_frames} frames and the prepared tracking "
                         f"{fitted.n_frames}: prepare the whole clip (no --start/--end/--stride) "
                         "to compare it with its ground truth")
    if len(crop_boxes) != fitted.n_frames:
        raise InputError(f"prepare.json has {len(crop_boxes)} crop boxes for {fitted.n_frames} "
                         "frames; re-run prepare")
    if truth.n_expressions != fitted.n_expressions:
        raise InputError(f"the truth has {truth.n_expressions} expressions and the prepared "
                         f"tracking {fitted.n_expressions}: both must use the same head model")
    size = int(fitted.image_size[0])
    ids = model.landmark_ids.numpy()
    true_posed, fit_posed = pose(model, truth), pose(model, fitted)
    true_px = to_crop(project_tracking(true_posed.landmarks.double().numpy(), truth),
                      crop_boxes, size)
    fit_px = project_tracking(fit_posed.landmarks.double().numpy(), fitted)
    scale = 512.0 / size
    distance = np.linalg.norm(fit_px - true_px, axis=-1) * scale          # (T, L)
    good = np.asarray(fitted.valid, bool)
    regions = region_of(ids)
    by_region = {name: float(distance[good][:, regions == name].mean())
                 for name in sorted(set(regions))}
    angles = rotation_angles_deg(fitted.joint_rotations, truth.joint_rotations)  # (T, 5)
    vertex = (pose(model, fitted, True).vertices - pose(model, truth, True).vertices).double()
    vertex_mm = vertex.norm(dim=-1).mean(dim=1).numpy() * 1000.0                   # (T,)
    offset = vertex[good].mean(dim=(0, 1))
    aligned_mm = (vertex - offset).norm(dim=-1).mean(dim=1).numpy() * 1000.0      # (T,)
    gaze = gaze_errors_deg(fitted.joint_rotations, truth.joint_rotations)       # (T, 2)
    signed = (_yaw_pitch_deg(fitted.joint_rotations) - _yaw_pitch_deg(truth.joint_rotations))[good]
    true_centres = to_crop(project_tracking(true_posed.joints[:, 3:5].double().numpy(), truth),
                           crop_boxes, size)
    fit_centres = project_tracking(fit_posed.joints[:, 3:5].double().numpy(), fitted)
    centre_offset = ((fit_centres - true_centres) * scale)[good]                # (T', 2, 2)
    return {"frames": int(good.sum()),
            "reprojection_px": float(distance[good].mean()),
            "reprojection_px_by_region": by_region,
            "rotation_deg": {name: float(angles[good, j].mean()) for j, name in enumerate(JOINTS)},
            "gaze_deg": {name: float(gaze[good, e].mean()) for e, name in enumerate(JOINTS[3:])},
            "gaze_signed_deg": {name: signed[:, e].mean(axis=0).tolist()
                                for e, name in enumerate(JOINTS[3:])},
            "eye_centre_px": {name: centre_offset[:, e].mean(axis=0).tolist()
                              for e, name in enumerate(JOINTS[3:])},
            "vertex_mm": float(vertex_mm[good].mean()),
            "vertex_mm_aligned": float(aligned_mm[good].mean()),
            "per_frame": {"reprojection_px": distance.mean(axis=1).tolist(),
                          "vertex_mm": vertex_mm.tolist()}}


def optical_axes(rotations: np.ndarray) -> np.ndarray:
    """The eyes' optical axes (+Z after root, neck and eye rotations). (T, 5, 3) -> (T, 2, 3)."""
    from scipy.spatial.transform import Rotation

    rotations = np.asarray(rotations, np.float64)
    chain = Rotation.from_rotvec(rotations[:, 0]) * Rotation.from_rotvec(rotations[:, 1])
    return np.stack([(chain * Rotation.from_rotvec(rotations[:, j])).apply([0.0, 0.0, 1.0])
                     for j in (3, 4)], axis=1)


def gaze_errors_deg(fitted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Angle between the eyes' optical axes. (T, 5, 3) x 2 -> (T, 2) degrees."""
    cosine = (optical_axes(fitted) * optical_axes(truth)).sum(-1)
    return np.rad2deg(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _yaw_pitch_deg(rotations: np.ndarray) -> np.ndarray:
    """Each optical axis as [yaw, pitch] in degrees (yaw towards +x, pitch towards +y: the image's
    right and up with the camera on +Z). (T, 5, 3) -> (T, 2, 2)."""
    axes = optical_axes(rotations)
    return np.rad2deg(np.stack([np.arctan2(axes[..., 0], axes[..., 2]),
                                np.arctan2(axes[..., 1], axes[..., 2])], axis=-1))


def add_arguments(parser) -> None:
    parser.add_argument("--truth", required=True, help="the ground-truth tracking.npz (from synth)")
    parser.add_argument("--data", required=True,
                        help="the prepared-data folder of the same clip (tracking.npz, prepare.json)")
    parser.add_argument("--json", help="also write the full report (per frame too) to this file")


def run(args, progress) -> int:
    import os

    from ..fileio import read_json, write_json
    from ..formats import tracking as tracking_format
    from ..formats.prepared import PreparedData
    from ..headmodel import load_head_model

    data = PreparedData(args.data)
    fitted = tracking_format.read(data.tracking)
    truth = tracking_format.read(args.truth)
    boxes = read_json(data.prepare_report, "prepare report")["crop_boxes"]
    model = load_head_model(fitted.head_model.get("path", "builtin"),
                            n_expressions=fitted.n_expressions,
                            landmark_embedding=fitted.head_model.get("landmark_embedding"))
    report = evaluate(model, truth, fitted, np.asarray(boxes))
    if args.json:
        write_json(args.json, report)
    regions = ", ".join(f"{k} {v:.2f}" for k, v in report["reprojection_px_by_region"].items())
    joints = ", ".join(f"{k} {v:.2f}" for k, v in report["rotation_deg"].items())
    gaze = ", ".join(f"{k} {v:.2f} (yaw {report['gaze_signed_deg'][k][0]:+.2f}, pitch "
                     f"{report['gaze_signed_deg'][k][1]:+.2f}; eyeball centre "
                     f"{report['eye_centre_px'][k][0]:+.2f}, {report['eye_centre_px'][k][1]:+.2f} px)"
                     for k, v in report["gaze_deg"].items())
    progress.result(f"{report['frames']} frames: reprojection {report['reprojection_px']:.2f} px at "
                    f"512 ({regions}); rotation error deg: {joints}; gaze direction deg: {gaze}; "
                    f"head-space vertices {report['vertex_mm']:.2f} mm "
                    f"({report['vertex_mm_aligned']:.2f} mm without the clip's unobservable offset)",
                    path=os.path.abspath(args.json or args.data))
    return 0
