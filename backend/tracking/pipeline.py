"""From cleaned landmarks to the files of the prepared-data folder: fit, tracking.npz, QA strips."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import InputError
from ..formats import tracking as tracking_format
from ..formats.npzio import atomic_write_npz
from .fit import FitConfig, FitResult, fit_landmarks
from .landmarks import N_LANDMARKS

log = logging.getLogger("toonsplat")
FLAG_ERROR_PX = 12.0  # frames whose fitted landmarks miss by more (pixels at 512) are flagged


def load_model(spec: str, n_expressions: int = 50, landmark_embedding: str | None = None):
    """The head model named on the command line (``builtin`` or a FLAME file), checked for fitting.

    Raises:
        InputError: the model has no MediaPipe landmarks to fit (a FLAME file without, or with a
            68-point, landmark embedding).
    """
    from ..headmodel import load_head_model

    model = load_head_model(spec=spec, n_expressions=n_expressions,
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


def fit_and_write(out: str, options, info, frames: dict, landmarks, intrinsics: np.ndarray,
                  single_image: bool, progress) -> dict:
    """Fit the head model and write tracking.npz and qa/*.png into ``out``.

    Args:
        out: the prepared-data folder.
        options: ``PrepareOptions``.
        info: the source's ``SourceInfo``.
        frames: {"indices": (T,), "timestamps": (T,), "names": [T]}.
        landmarks: ``Landmarks`` in crop pixels.
        intrinsics: (T, 3, 3) crop intrinsics from the assumed source focal length.
        single_image: unrelated images: no temporal terms.
        progress: ``Progress``.

    Returns:
        a summary for prepare.json: errors, flagged frames, focal factor, timings.
    """
    model = load_model(options.head_model, options.n_expressions, options.landmark_embedding)
    # A focal length the user gives is the lens: held; the default guess is fitted.
    fit_focal = options.focal is None
    config = FitConfig(temporal=False, fit_focal=fit_focal) if single_image else FitConfig.video(
        fit_focal=fit_focal)
    if options.fit_iterations is not None:
        config.iterations = options.fit_iterations
    eye_contact = None
    if options.eye_contact:
        from .eye_contact import calibrate_eye_contact, parse_frame_range

        eye_contact = parse_frame_range(options.eye_contact)  # bad input fails before the fit
        if eye_contact[1] >= len(landmarks.valid):
            raise InputError(f"--eye-contact {options.eye_contact}: the prepared clip has only "
                             f"{len(landmarks.valid)} frames (0-{len(landmarks.valid) - 1})")
    refine = None
    if options.refine == "photometric":
        if len(landmarks.valid) < 3:
            raise InputError("--refine photometric needs a video or at least 3 images: the colour "
                             "of each surface point is learned across frames")
        from .photometric import check_memory
        from .photometric import refine as photometric_refine

        check_memory(len(landmarks.valid), options.size)

        def refine(problem, x_frames, x_shared):  # runs after the landmark fit
            progress.stage("refine", "photometric refinement (aligning the head to the pixels)")
            return photometric_refine(model, problem, x_frames, x_shared, out, progress=progress)
    elif options.refine not in (None, "none"):
        raise InputError(f"--refine must be 'none' or 'photometric', not {options.refine!r}")
    result = fit_landmarks(model, landmarks.points[..., :2], landmarks.valid, intrinsics,
                           options.size, config, progress, refine)
    scale = 512.0 / options.size
    flagged = landmarks.valid & (result.errors_px * scale > FLAG_ERROR_PX)
    valid = landmarks.valid & ~flagged
    if flagged.any():
        log.warning("%d frames fit badly (landmark error > %.0f px at 512): flagged invalid "
                    "(extreme head turn or occlusion?)", int(flagged.sum()), FLAG_ERROR_PX)
    track = to_tracking(model, result, frames, valid, options.size, info,
                        options.landmark_embedding)
    eye_contact_report = None
    if eye_contact is not None:
        track, eye_contact_report = calibrate_eye_contact(model, track, *eye_contact)
        log.info("eye contact in frames %d-%d: gaze turned by %.1f deg (left), %.1f deg (right)",
                 *eye_contact, *eye_contact_report["correction_deg"].values())
        for name, narrowed in eye_contact_report["frames_narrowed"].items():
            if narrowed:
                log.info("eye contact: %s narrowed (blink, squint) in frames %s, not used", name,
                         ", ".join(map(str, narrowed)))
    tracking_format.write(os.path.join(out, "tracking.npz"), track)
    atomic_write_npz(os.path.join(out, "landmarks.npz"),
                     {"points": landmarks.points[..., :2].astype(np.float32),
                      "found": np.asarray(landmarks.found, bool), "valid": np.asarray(valid, bool)},
                     {"kind": "mediapipe landmarks", "units": "crop pixels", "size": options.size})
    qa_paths = []
    if options.qa:
        from .qa import write_strips

        qa_paths = write_strips(out, model, result, landmarks.points[..., :2], landmarks.found)
        for path in qa_paths:
            progress.preview(path, "landmark and mesh QA strip")
    good = landmarks.valid
    return {"landmark_error_px": float(np.mean(result.errors_px[good])) if good.any() else None,
            "landmark_error_px_at_512": float(np.mean(result.errors_px[good]) * scale) if good.any()
            else None,
            "flagged_frames": np.flatnonzero(flagged).tolist(),
            "invalid_frames": np.flatnonzero(~valid).tolist(),
            "focal_factor": result.focal_factor, "fit_timings": result.timings,
            "eye_contact": eye_contact_report,
            "head_model": {"kind": model.kind, "spec": options.head_model},
            "qa": [os.path.relpath(p, out) for p in qa_paths]}


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
