"""From cleaned landmarks to the files of the prepared-data folder: fit, tracking.npz, QA strips."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..formats import tracking as tracking_format
from .fit import FitConfig, FitResult, fit_landmarks

log = logging.getLogger("toonsplat")
FLAG_ERROR_PX = 12.0  # frames whose fitted landmarks miss by more (pixels at 512) are flagged


def load_model(spec: str, n_expressions: int = 50):
    """The head model named on the command line (``builtin`` or a FLAME file)."""
    from ..headmodel import load_head_model

    return load_head_model(spec=spec, n_expressions=n_expressions)


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
    model = load_model(options.head_model, options.n_expressions)
    config = FitConfig(iterations=options.fit_iterations, temporal=not single_image)
    result = fit_landmarks(model, landmarks.points[..., :2], landmarks.valid, intrinsics,
                           options.size, config, progress)
    scale = 512.0 / options.size
    flagged = landmarks.valid & (result.errors_px * scale > FLAG_ERROR_PX)
    valid = landmarks.valid & ~flagged
    if flagged.any():
        log.warning("%d frames fit badly (landmark error > %.0f px at 512): flagged invalid "
                    "(extreme head turn or occlusion?)", int(flagged.sum()), FLAG_ERROR_PX)
    track = to_tracking(model, result, frames, valid, options.size, info)
    tracking_format.write(os.path.join(out, "tracking.npz"), track)
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
            "head_model": {"kind": model.kind, "spec": options.head_model},
            "qa": [os.path.relpath(p, out) for p in qa_paths]}


def to_tracking(model, result: FitResult, frames: dict, valid: np.ndarray, size: int,
                info) -> tracking_format.Tracking:
    """The tracking-file record of a fit."""
    head_model = {"kind": model.kind, "source": str(getattr(model, "source", "")),
                  "n_shape": int(model.n_shape), "n_expressions": int(model.n_expressions)}
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
