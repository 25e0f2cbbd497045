"""Gaze calibration from frames in which the subject looks into the lens (``--eye-contact``).

The landmark fit reads the gaze from the iris relative to the eye socket, and the socket from the
eyelid and face landmarks: a socket placed half a pixel off turns every frame's gaze by a few
degrees the same way, and nothing in the pixels can tell (docs/TRACKING.md). Frames in which the
person looks into the lens fix that constant part: there each optical axis must pass through the
camera centre. Per eye, the smallest rotation (in the eye's parent frame) that takes the fitted
optical axes of those frames, averaged, onto the directions from the fitted eyeball centres to
the camera is applied to the eye in every frame. The per-frame motion of the eyes stays the
fit's. No roll about the mean direction is estimated: it shows only in how the frames' axes
spread, which is the fit's per-frame noise on these few frames (estimating it made the gaze of
the rendered clips worse: docs/TRACKING.md).

Frames of the range in which an eye is narrowed (a blink, a squint: the lids' opening under
``OPEN_SHARE`` of its median over the clip) are left out for that eye: a lid over the iris puts
the fitted gaze off by several degrees (docs/TRACKING.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..errors import InputError
from ..formats.tracking import Tracking, slice_frames
from ..headmodel.gaze import camera_centres, look_directions, rotation_between
from .evaluate import pose

log = logging.getLogger(__name__)

EYE_NAMES = ("eye_L", "eye_R")
SPREAD_WARNING_DEG = 4.0  # mean disagreement of the calibration frames that earns a warning
OPEN_SHARE = 0.8          # an eye opened less than this share of its median is not used
# (upper, lower) eyelid landmarks whose distance is an eye's opening: MediaPipe ids, then the
# 68-point embedding's (1000 + iBUG index); whichever the head model carries.
LID_PAIRS = ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373),
             (1037, 1041), (1038, 1040), (1043, 1047), (1044, 1046))


def parse_frame_range(text: str) -> tuple[int, int]:
    """``"A-B"`` (inclusive frame numbers of the prepared clip) or ``"A"`` -> (A, B)."""
    parts = str(text).split("-")
    try:
        if len(parts) == 1:
            first = last = int(parts[0])
        elif len(parts) == 2:
            first, last = int(parts[0]), int(parts[1])
        else:
            raise ValueError(text)
    except ValueError:
        raise InputError(f"--eye-contact takes frame numbers of the prepared clip as A-B (for "
                         f"example 0-24) or one frame A, not {text!r}") from None
    if first < 0 or last < first:
        raise InputError(f"--eye-contact {text}: the range must start at 0 or later and end at or "
                         "after its start")
    return first, last


def calibrate_eye_contact(model, tracking: Tracking, first: int, last: int
                          ) -> tuple[Tracking, dict]:
    """Turn each eye by one constant rotation so that frames first..last look into the lens.

    Args:
        model: the head model of ``tracking``.
        tracking: a fitted tracking (its cameras and poses).
        first, last: inclusive frame numbers (0-based, of this tracking) of the eye contact.

    Returns:
        (the tracking with corrected eye rotations, a report per eye: the frames used and those
        left out as narrowed, the correction in degrees and as axis-angle, and the used frames'
        remaining spread).

    Raises:
        InputError: a range outside the clip, without a valid frame, or with an eye narrowed in
        all of it.
    """
    if last >= tracking.n_frames:
        raise InputError(f"--eye-contact {first}-{last}: the prepared clip has only "
                         f"{tracking.n_frames} frames (0-{tracking.n_frames - 1})")
    chosen = np.arange(first, last + 1)
    chosen = chosen[np.asarray(tracking.valid, bool)[chosen]]
    if chosen.size == 0:
        raise InputError(f"--eye-contact {first}-{last}: no frame in that range has a valid fit "
                         "(no face found or flagged); pick frames where the face is visible")
    opening = eye_openings(model, tracking)
    have, want = _axes_in_parent_frame(model, tracking, chosen)
    corrected = tracking.joint_rotations.astype(np.float64).copy()
    report = {"frames": [int(first), int(last)], "frames_used": {}, "frames_narrowed": {},
              "correction_deg": {}, "correction_axis_angle": {}, "spread_deg": {}}
    for index, name in enumerate(EYE_NAMES):
        open_enough = np.ones(chosen.size, bool)
        if opening is not None:
            typical = np.median(opening[np.asarray(tracking.valid, bool), index])
            open_enough = opening[chosen, index] >= OPEN_SHARE * typical
        if not open_enough.any():
            raise InputError(f"--eye-contact {first}-{last}: the {name} is narrowed or closed in "
                             "every frame of that range (a blink, a squint); pick frames where the "
                             "eyes are open and look into the lens")
        used = torch.from_numpy(open_enough)
        mean_have = _unit(have[used, index].mean(dim=0))
        mean_want = _unit(want[used, index].mean(dim=0))
        correction = rotation_between(mean_have, mean_want)
        turn = Rotation.from_rotvec(correction.numpy())
        joint = 3 + index
        corrected[:, joint] = (turn * Rotation.from_rotvec(corrected[:, joint])).as_rotvec()
        residual = _angles_deg(torch.from_numpy(turn.apply(have[used, index].numpy())),
                               want[used, index])
        report["frames_used"][name] = int(open_enough.sum())
        report["frames_narrowed"][name] = chosen[~open_enough].tolist()
        report["correction_deg"][name] = float(np.rad2deg(correction.norm()))
        report["correction_axis_angle"][name] = correction.tolist()
        report["spread_deg"][name] = float(residual.mean())
    worst = max(report["spread_deg"].values())
    if worst > SPREAD_WARNING_DEG:
        log.warning("--eye-contact %d-%d: after the correction the eyes still miss the lens by "
                    "%.1f deg on average in those frames; was the person looking into the lens "
                    "throughout?", first, last, worst)
    return _with_eyes(tracking, corrected), report


def eye_openings(model, tracking: Tracking) -> np.ndarray | None:
    """Per frame and eye, the mean distance (m) between the head model's upper and lower eyelid
    landmarks (``LID_PAIRS``), expressions applied. -> (T, 2) for ``EYE_NAMES``, or None when the
    model's landmarks do not include a lid pair for each eye (the calibration then uses every
    frame of the range)."""
    ids = model.landmark_ids.tolist()
    pairs = [(ids.index(upper), ids.index(lower)) for upper, lower in LID_PAIRS
             if upper in ids and lower in ids]
    if not pairs:
        return None
    posed = pose(model, tracking, head_space=True)
    landmarks, eyes = posed.landmarks.double(), posed.joints[0, 3:5].double()
    sums, counts = np.zeros((tracking.n_frames, 2)), np.zeros(2)
    for upper, lower in pairs:
        middle = 0.5 * (landmarks[0, upper] + landmarks[0, lower])
        eye = int((eyes - middle).norm(dim=-1).argmin())
        sums[:, eye] += (landmarks[:, upper] - landmarks[:, lower]).norm(dim=-1).numpy()
        counts[eye] += 1
    if not counts.all():
        return None
    return sums / counts


def _axes_in_parent_frame(model, tracking: Tracking, frames: np.ndarray):
    """Fitted optical axes and the directions to the camera, both in the eyes' parent frames.

    Returns:
        (have, want): (F, 2, 3) each, unit vectors.
    """
    chosen = slice_frames(tracking, frames)
    posed = pose(model, chosen)
    camera = camera_centres(torch.as_tensor(chosen.extrinsics, dtype=torch.float64))
    want = look_directions(posed.transforms.double(), posed.joints.double(), model.parents, camera)
    return _optical(np.asarray(chosen.joint_rotations, np.float64)[:, 3:5]), want


def _optical(axis_angle: np.ndarray) -> torch.Tensor:
    """Where rotations (..., 3) take the rest optical axis +Z. -> (..., 3) unit vectors."""
    flat = Rotation.from_rotvec(axis_angle.reshape(-1, 3)).apply([0.0, 0.0, 1.0])
    return torch.from_numpy(flat.reshape(axis_angle.shape))


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return vector / vector.norm(dim=-1, keepdim=True)


def _angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos((a * b).sum(dim=-1).clamp(-1.0, 1.0)))


def _with_eyes(tracking: Tracking, joint_rotations: np.ndarray) -> Tracking:
    return replace(tracking, joint_rotations=joint_rotations.astype(np.float32))
