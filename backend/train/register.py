"""Pose registration: every frame's rigid head pose refined against the avatar being trained.

The landmark fit's rigid pose drifts by a degree or two over a clip (docs/TRAINING.md, "Pose
registration"): on cap12 the pitch moves 1-1.5 deg between its first and last seconds about
a point below the head, which no landmark term sees but the avatar's outline and features do.
Halfway through training (``RegisterConfig.at``) the avatar is a good appearance model of the
subject, so the trainer stops, freezes it, and asks of every key frame (every ``every``-th frame
of the clip, training and held-out frames alike, as any tracker treats a clip) the small rigid
motion of the head that makes its render match the frame best:

    min_x  sum_p w_p (|rgb_p(x) - I_p|^2 + a (alpha_p(x) - M_p)^2) + x^T P x

x = (rotation vector about the head's centre, translation) in camera axes, w the frame's target
weight (data.py), I its image, M its head-region mask, a ``alpha`` and P a weak prior that keeps a
frame with little to see at its tracked pose. Gauss-Newton with a forward-difference Jacobian
(seven renders per step at ``scale``), a step kept only if it lowers the cost (Levenberg's
damping otherwise). The key frames' corrections are median-filtered over ``window`` keys (one
frame's blink or hand does not move the head) and interpolated to every frame, then written into
the tracking itself (root rotation and translation), so the rest of the run, the evaluation, the
preview, the turntable and Blender's animation all use the registered poses. Only the six pose
numbers of a frame see its pixels here; no Gaussian is trained on a held-out frame.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

log = logging.getLogger("toonsplat")
ROTATION_STEP = 2e-3     # radians: the Jacobian's forward difference for the rotation
TRANSLATION_STEP = 5e-4  # metres: and for the translation
MAX_ROTATION_DEG = 6.0   # a key frame that wants more than this (or MAX_TRANSLATION) is left out:
MAX_TRANSLATION = 0.03   # the drift is 1-2 deg and a few mm; that much is a bad fit, not a drift


def rigid_matrix(x: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """(4, 4) rotation by the rotation vector ``x[:3]`` about ``pivot`` (3,), then the
    translation ``x[3:]``: the correction in camera axes."""
    from ..headmodel.lbs import batch_rodrigues

    x = x.to(device=pivot.device, dtype=torch.float64)
    rotation = batch_rodrigues(x[None, :3])[0].to(pivot.dtype)
    matrix = torch.eye(4, dtype=pivot.dtype, device=pivot.device)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = pivot - rotation @ pivot + x[3:].to(pivot.dtype)
    return matrix


class _FrameProblem:
    """The render-and-compare residual of one key frame with the avatar frozen."""

    def __init__(self, trainer, index: int, images: str, config):
        from .trainer import _mask_box, _resize

        data, scale = trainer.data, config.scale
        self.trainer, self.config = trainer, config
        self.background = trainer.background
        target, mask = data.target(index, self.background, images)
        weight = data.weight(index)
        target, mask, weight = _resize(target, scale), _resize(mask, scale), _resize(weight, scale)
        box = _mask_box(mask, margin=0.15)
        if box is None:
            raise ValueError("empty mask")
        x0, y0, x1, y1 = box
        self.target, self.mask = target[y0:y1, x0:x1], mask[y0:y1, x0:x1]
        self.weight = weight[y0:y1, x0:x1]
        viewmat, intrinsics = data.camera(index)
        _, _, intrinsics = trainer._scaled_camera(intrinsics, scale)
        intrinsics[0, 2] -= x0
        intrinsics[1, 2] -= y0
        self.viewmat, self.intrinsics, self.size = viewmat, intrinsics, (x1 - x0, y1 - y0)
        center = torch.linalg.inv(viewmat)[:3, 3]
        expressions = torch.as_tensor(data.tracking.expressions[index], device=trainer.device).float()
        self.gaussians, _ = trainer.model.gaussians(expressions, trainer.transforms[index], center)
        self.pivot = frame_pivot(trainer, index)
        self.visible = float(self.mask.sum())

    @torch.no_grad()
    def residual(self, x: torch.Tensor) -> torch.Tensor:
        from ..render import Cameras, render

        viewmat = rigid_matrix(x, self.pivot) @ self.viewmat
        out = render(self.gaussians, Cameras(viewmat[None], self.intrinsics[None], *self.size),
                     background=self.background, backend=self.trainer.config.render_backend)
        colour = (out.rgb[0] - self.target) * self.weight
        alpha = (out.alpha[0] - self.mask) * self.weight * self.config.alpha ** 0.5
        return torch.cat([colour.flatten(), alpha.flatten()]).double().cpu()  # the solver's side


def frame_pivot(trainer, index: int) -> torch.Tensor:
    """(3,) the head's centre in camera axes in frame ``index``: the rest head's centre moved by
    the neck joint's skinning transform (the joint that carries the head)."""
    viewmat, _ = trainer.data.camera(index)
    centre = trainer.rest_head_centre()
    moved = trainer.transforms[index, 1, :3, :3] @ centre + trainer.transforms[index, 1, :3, 3]
    return viewmat[:3, :3] @ moved + viewmat[:3, 3]


@torch.no_grad()
def solve_frame(problem: _FrameProblem, config) -> tuple[np.ndarray, float, float]:
    """Gauss-Newton for one key frame. Returns (x (6,), cost before, cost after) per pixel."""
    steps = torch.tensor([ROTATION_STEP] * 3 + [TRANSLATION_STEP] * 3, dtype=torch.float64)
    # The prior: one unit of cost per pixel of the head for prior_deg / prior_mm of correction.
    scale = torch.tensor([np.radians(config.prior_deg)] * 3 + [config.prior_mm * 1e-3] * 3,
                         dtype=torch.float64)
    prior = torch.diag(config.prior * max(problem.visible, 1.0) / scale ** 2)
    x = torch.zeros(6, dtype=torch.float64)
    residual = problem.residual(x)
    cost = float(residual @ residual + x @ prior @ x)
    first, damping = cost, 1e-3
    for _ in range(config.iterations):
        columns = [(problem.residual(x + steps[k] * torch.eye(6, dtype=torch.float64)[k]) - residual)
                   / steps[k] for k in range(6)]
        jacobian = torch.stack(columns, dim=1)
        normal = jacobian.T @ jacobian + prior
        gradient = jacobian.T @ residual + prior @ x
        improved = False
        for _ in range(4):
            step = torch.linalg.solve(normal + damping * torch.diag(normal.diagonal()), -gradient)
            trial = x + step
            trial_residual = problem.residual(trial)
            trial_cost = float(trial_residual @ trial_residual + trial @ prior @ trial)
            if trial_cost < cost:
                x, residual, cost, improved = trial, trial_residual, trial_cost, True
                damping = max(damping / 10, 1e-6)
                break
            damping *= 10
        if not improved or float(step.abs().max()) < 1e-5:
            break
    pixels = max(problem.visible, 1.0)
    return x.numpy(), first / pixels, cost / pixels


@torch.no_grad()
def register_poses(trainer, images: str, progress=None) -> dict:
    """Register every frame's rigid pose against ``trainer``'s avatar and write the corrections
    into ``trainer.data.tracking`` (and the trainer's frame transforms and neck cuts).

    Returns a summary: key frames registered and left out (no head, or a correction past the
    limits), mean / largest correction (deg, mm), cost per head pixel before / after.
    """
    config = trainer.config.register
    data = trainer.data
    started = time.monotonic()
    n_frames = data.n_frames
    keys = np.unique(np.r_[np.arange(0, n_frames, key_step(n_frames, config)), n_frames - 1])
    found, costs, left_out = {}, [], 0
    for count, index in enumerate(keys):
        try:
            problem = _FrameProblem(trainer, int(index), images, config)
        except ValueError:  # no head in the frame: nothing to register against
            left_out += 1
            continue
        x, before, after = solve_frame(problem, config)
        angle, shift = np.degrees(np.linalg.norm(x[:3])), np.linalg.norm(x[3:])
        if angle > MAX_ROTATION_DEG or shift > MAX_TRANSLATION:
            log.info("register: key frame %d wants %.1f deg / %.0f mm; not trusted, interpolated",
                     index, angle, 1e3 * shift)
            left_out += 1
            continue
        found[int(index)] = x
        costs.append((before, after))
        if progress is not None and count % 25 == 0:
            progress.log(f"register: key frame {count + 1} of {len(keys)}")
    if not found:
        log.warning("register: no key frame could be registered; poses unchanged")
        return {"keys": 0, "left_out": left_out}
    known = np.array(sorted(found))
    values = np.stack([found[k] for k in known])
    values = _median_filter(values, config.window)
    corrections = np.stack([np.interp(np.arange(n_frames), known, values[:, k]) for k in range(6)], 1)
    apply_corrections(trainer, corrections)
    costs = np.asarray(costs)
    angles = np.degrees(np.linalg.norm(corrections[:, :3], axis=1))
    shifts = 1e3 * np.linalg.norm(corrections[:, 3:], axis=1)
    axes = np.abs(corrections).mean(axis=0)
    summary = {"keys": len(found), "left_out": left_out,
               "seconds": round(time.monotonic() - started, 1),
               "pitch_yaw_roll_deg": [round(float(np.degrees(v)), 3) for v in axes[:3]],
               "xyz_mm": [round(float(1e3 * v), 3) for v in axes[3:]],
               "rotation_deg_mean": round(float(angles.mean()), 3),
               "rotation_deg_max": round(float(angles.max()), 3),
               "translation_mm_mean": round(float(shifts.mean()), 3),
               "translation_mm_max": round(float(shifts.max()), 3),
               "cost_before": round(float(costs[:, 0].mean()), 6),
               "cost_after": round(float(costs[:, 1].mean()), 6)}
    log.info("register: %s", summary)
    return summary


def key_step(n_frames: int, config) -> int:
    """Frames between two key frames: ``every``, or more on a long clip, so that there are at
    most about ``max_keys`` (the time is linear in them: ~0.5 s a key frame on 2 CPU cores)."""
    return max(config.every, 1, -(-n_frames // max(config.max_keys, 1)))


def _median_filter(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < 3:
        return values
    from scipy.ndimage import median_filter

    return median_filter(values, size=(min(window, len(values) | 1), 1), mode="nearest")


def apply_corrections(trainer, corrections: np.ndarray) -> None:
    """Move every frame's head by its correction (T, 6) (camera axes, about ``frame_pivot``):
    the root joint's rotation and the translation of the tracking change, then the trainer's
    frame transforms and neck cuts are recomputed from it."""
    tracking = trainer.data.tracking
    rotations = tracking.joint_rotations.astype(np.float64).copy()
    translation = tracking.translation.astype(np.float64).copy()
    rest_roots = trainer.rest_root_joints()
    for index in range(tracking.n_frames):
        viewmat, _ = trainer.data.camera(index)
        viewmat = viewmat.double()
        x = torch.as_tensor(corrections[index], dtype=torch.float64)
        camera = rigid_matrix(x, frame_pivot(trainer, index).double())
        world = torch.linalg.inv(viewmat) @ camera @ viewmat  # the correction in head-model axes
        rotations[index, 0], translation[index] = _moved_root(
            rotations[index, 0], translation[index], rest_roots[index], world.cpu().numpy())
    trainer.data.tracking = dataclasses.replace(
        tracking, joint_rotations=rotations.astype(np.float32), translation=translation.astype(np.float32))
    trainer.transforms = trainer._frame_transforms()


def _moved_root(rotvec: np.ndarray, translation: np.ndarray, root: np.ndarray,
                world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The root's rotation vector and the translation after the rigid motion ``world`` (4, 4):
    the root's skinning transform is [R, J - R J + t] (J its rest position), so W times it is
    [Rw R, J - Rw R J + t'] with t' = Rw (J + t) + tw - J."""
    from scipy.spatial.transform import Rotation

    turn, shift = world[:3, :3], world[:3, 3]
    rotation = Rotation.from_matrix(turn @ Rotation.from_rotvec(rotvec).as_matrix())
    return rotation.as_rotvec(), turn @ (root + translation) + shift - root
