"""From cleaned landmarks to a tracking: the model, the fit, the gaze calibration, the files.

Each step is its own function; ``backend/pipeline/prepare.py`` runs them in order.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import InputError
from ..formats import tracking as tracking_format
from ..formats.npzio import atomic_write_npz
from ..formats.options import TrackOptions
from ..formats.prepared import N_LANDMARKS, PreparedData
from .fit import FitConfig, FitResult, fit_landmarks

log = logging.getLogger("toonsplat")
FLAG_ERROR_PX = 12.0  # frames whose fitted landmarks miss by more (pixels at 512) are flagged


def load_model(track: TrackOptions):
    """The head model the options name (``builtin`` or a FLAME file), checked for fitting.

    Raises:
        InputError: the model has no MediaPipe landmarks to fit (a FLAME file without, or with a
            68-point, landmark embedding).
    """
    from ..headmodel import load_head_model

    spec, landmark_embedding = track.head_model, track.landmark_embedding
    model = load_head_model(spec=spec, n_expressions=track.n_expressions,
                            landmark_embedding=landmark_embedding)
    ids = model.landmark_ids.numpy()
    if len(ids) == 0:
        raise InputError(f"the head model {spec} has no landmark correspondence, so it cannot be "
                         "fitted to video; pass --landmark-embedding mediapipe_landmark_embedding.npz "
                         "(the file that comes with FLAME trackers such as metrical-tracker)")
    if (ids >= N_LANDMARKS).any() or len(ids) < 40:
        raise InputError(f"the landmark embedding {landmark_embedding} has {len(ids)} points "
                         f"{'with' if (ids >= N_LANDMARKS).any() else 'and no'} non-MediaPipe ids; "
                         "the tracker fits MediaPipe FaceMesh landmarks and needs at least 40 of them: "
                         "use mediapipe_landmark_embedding.npz, not the 68-point landmark_embedding.npy")
    return model


def check_options(track: TrackOptions, n_frames: int, size: int) -> tuple[int, int] | None:
    """Reject options the clip cannot satisfy before the fit starts; returns the eye-contact
    frame range (or None).

    Raises:
        InputError: a bad eye-contact range, too few frames or too little memory for the
            photometric refinement.
    """
    eye_contact = None
    if track.eye_contact:
        from .eye_contact import parse_frame_range

        eye_contact = parse_frame_range(track.eye_contact)
        if eye_contact[1] >= n_frames:
            raise InputError(f"--eye-contact {track.eye_contact}: the prepared clip has only "
                             f"{n_frames} frames (0-{n_frames - 1})")
    if track.refine == "photometric":
        if n_frames < 3:
            raise InputError("--refine photometric needs a video or at least 3 images: the colour "
                             "of each surface point is learned across frames")
        from .photometric import check_memory

        check_memory(n_frames, size)
    elif track.refine not in (None, "none"):
        raise InputError(f"--refine must be 'none' or 'photometric', not {track.refine!r}")
    return eye_contact


def fit(model, points: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray, size: int,
        track: TrackOptions, single_image: bool, data: PreparedData, progress) -> FitResult:
    """Fit the head model to the landmarks of all frames at once (then to the pixels of
    ``data``'s frames when ``track.refine`` is photometric).

    Args:
        points: (T, L, 2) landmarks in crop pixels; valid: (T,) frames to fit.
        intrinsics: (T, 3, 3) crop intrinsics from the assumed source focal length.
        single_image: unrelated images: no temporal terms.
    """
    # A focal length the user gives is the lens: held; the default guess is fitted.
    fit_focal = track.focal is None
    config = FitConfig(temporal=False, fit_focal=fit_focal) if single_image else FitConfig.video(
        fit_focal=fit_focal)
    if track.fit_iterations is not None:
        config.iterations = track.fit_iterations
    refine = None
    if track.refine == "photometric":
        from .photometric import refine as photometric_refine

        def refine(problem, x_frames, x_shared):  # runs after the landmark fit
            progress.stage("refine", "photometric refinement (aligning the head to the pixels)")
            return photometric_refine(model, problem, x_frames, x_shared, data.root,
                                      progress=progress)
    return fit_landmarks(model, points, valid, intrinsics, size, config, progress, refine)


def flag_bad_fits(result: FitResult, valid: np.ndarray, size: int) -> np.ndarray:
    """Frames whose fitted landmarks miss by more than FLAG_ERROR_PX (at 512 pixels)."""
    flagged = valid & (result.errors_px * 512.0 / size > FLAG_ERROR_PX)
    if flagged.any():
        log.warning("%d frames fit badly (landmark error > %.0f px at 512): flagged invalid "
                    "(extreme head turn or occlusion?)", int(flagged.sum()), FLAG_ERROR_PX)
    return flagged


def calibrate_gaze(model, track: tracking_format.Tracking, frames: tuple[int, int]
                   ) -> tuple[tracking_format.Tracking, dict]:
    """The eye-contact calibration of ``track`` from the frames first..last, with its log lines."""
    from .eye_contact import calibrate_eye_contact

    track, report = calibrate_eye_contact(model, track, *frames)
    log.info("eye contact in frames %d-%d: gaze turned by %.1f deg (left), %.1f deg (right)",
             *frames, *report["correction_deg"].values())
    for name, narrowed in report["frames_narrowed"].items():
        if narrowed:
            log.info("eye contact: %s narrowed (blink, squint) in frames %s, not used", name,
                     ", ".join(map(str, narrowed)))
    return track, report


def write_tracking(data: PreparedData, track: tracking_format.Tracking, points: np.ndarray,
                   found: np.ndarray, size: int) -> None:
    """tracking.npz and landmarks.npz (the landmarks the fit used, in crop pixels)."""
    tracking_format.write(data.tracking, track)
    atomic_write_npz(data.landmarks,
                     {"points": points.astype(np.float32), "found": np.asarray(found, bool),
                      "valid": np.asarray(track.valid, bool)},
                     {"kind": "mediapipe landmarks", "units": "crop pixels", "size": size})


def fit_summary(model, result: FitResult, fitted: np.ndarray, valid: np.ndarray,
                flagged: np.ndarray, size: int) -> dict:
    """prepare.json's account of the fit: errors on the ``fitted`` frames, flagged and invalid
    frames, focal factor, timings."""
    error = float(np.mean(result.errors_px[fitted])) if fitted.any() else None
    return {"landmark_error_px": error,
            "landmark_error_px_at_512": None if error is None else error * 512.0 / size,
            "flagged_frames": np.flatnonzero(flagged).tolist(),
            "invalid_frames": np.flatnonzero(~valid).tolist(),
            "focal_factor": result.focal_factor, "fit_timings": result.timings,
            "head_model": {"kind": model.kind}}


def to_tracking(model, result: FitResult, frames: dict, valid: np.ndarray, size: int,
                info, landmark_embedding: str | None = None) -> tracking_format.Tracking:
    """The tracking-file record of a fit (``head_model.path``: the FLAME file, for the trainer)."""
    head_model = {"kind": model.kind, "source": str(getattr(model, "source", "")),
                  "n_shape": int(model.n_shape), "n_expressions": int(model.n_expressions)}
    if model.kind != "builtin":
        head_model["path"] = os.path.abspath(str(getattr(model, "source", "")))
    if landmark_embedding:
        head_model["landmark_embedding"] = os.path.abspath(landmark_embedding)
    return tracking_format.Tracking(
        fps=float(info.fps), frame_ids=np.asarray(frames["indices"], np.int32),
        timestamps=np.asarray(frames["timestamps"], np.float64),
        image_size=np.array([size, size], np.int32),
        expressions=result.expressions.astype(np.float32),
        joint_rotations=result.joint_rotations.astype(np.float32),
        translation=result.translation.astype(np.float32),
        intrinsics=result.intrinsics.astype(np.float32),
        extrinsics=result.extrinsics.astype(np.float32), valid=np.asarray(valid, bool),
        shape=result.shape.astype(np.float32), expression_names=list(model.expression_names),
        head_model=head_model,
        source={"kind": info.kind, "path": info.path, "width": info.width, "height": info.height,
                "rotation": info.rotation, "tracker": "toonsplat-landmarks"})
