"""Fit the head model to 2D landmarks of all frames at once.

Unknowns: identity shape (shared), per-frame expression coefficients, joint rotations (root, neck,
jaw, eyes) and translation, and one focal-length factor shared by all frames. The camera is fixed:
it looks at the head from +Z at distance ``depth`` (world -> camera = diag(1, -1, -1) plus
(0, 0, depth)); the head moves in front of it with its root joint and translation.

Every frame's parameters are optimised together (full-batch L-BFGS), after a closed-form start:
per-frame PnP of the neutral head's landmarks (cv2.solvePnP) gives rotation and translation.
Loss: region-weighted robust 2D landmark error (pixels at 512), temporal smoothness (second
differences), and Gaussian priors on shape, expression, jaw, neck, eyes and the focal factor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from .landmark_head import LandmarkHead, neutral_landmarks
from .regions import landmark_weights

log = logging.getLogger("toonsplat")
CAMERA_ROTATION = np.diag([1.0, -1.0, -1.0])  # head space (+Y up, +Z to the camera) -> OpenCV


@dataclass
class FitConfig:
    """Weights and schedule of the landmark fit."""

    rigid_iterations: int = 30       # L-BFGS steps on root pose, translation, focal, shape
    iterations: int = 100            # L-BFGS steps on everything
    n_shape: int = 100               # identity coefficients fitted (the rest stay zero)
    fit_focal: bool = True           # optimise one focal factor shared by all frames
    temporal: bool = True            # smoothness over time (False for unrelated images)
    shape_prior: float = 0.002       # weight of |shape|^2
    expression_prior: float = 0.002  # weight of |expression|^2 per frame
    jaw_prior: float = 0.2           # weight of |jaw|^2 (radians)
    neck_prior: float = 100.0        # the neck and the root both turn the head; prefer the root
    eye_prior: float = 0.5           # weight of |eye rotation|^2 (radians)
    focal_prior: float = 2.0         # weight of log(focal factor)^2
    smooth_pose: float = 200.0       # second differences of rotations (rad) and translation (dm)
    smooth_expression: float = 0.5   # second differences of expressions
    robust_px: float = 2.0           # Charbonnier scale of the landmark residual, pixels at 512


@dataclass
class FitResult:
    """Fitted parameters for T frames (see FitConfig for the camera convention)."""

    shape: np.ndarray            # (S,)
    expressions: np.ndarray      # (T, K)
    joint_rotations: np.ndarray  # (T, 5, 3) axis-angle
    translation: np.ndarray      # (T, 3) metres
    intrinsics: np.ndarray       # (T, 3, 3) pixels of the crop
    extrinsics: np.ndarray       # (T, 4, 4) world -> camera, OpenCV
    landmark_ids: np.ndarray     # (L,) mediapipe ids of the fitted landmarks
    projected: np.ndarray        # (T, L, 2) fitted landmarks in crop pixels
    errors_px: np.ndarray        # (T,) mean landmark distance per frame, pixels of the crop
    focal_factor: float = 1.0
    timings: dict = field(default_factory=dict)


def fit_landmarks(model, observed: np.ndarray, valid: np.ndarray, intrinsics: np.ndarray,
                  image_size: int, config: FitConfig | None = None, progress=None) -> FitResult:
    """Fit ``model`` to mediapipe landmarks of T frames.

    Args:
        model: a ``HeadModel``.
        observed: (T, 478, 2) landmarks in crop pixels (gaps already filled).
        valid: (T,) bool, False for frames whose landmarks were filled in (they get no data term).
        intrinsics: (T, 3, 3) initial pinhole matrices of the crops (pixels).
        image_size: crop side in pixels (residuals are measured in pixels at 512).
        config: weights and schedule.
        progress: optional ``Progress`` for step reports.

    Returns:
        FitResult.
    """
    # One intra-op thread: the batched ops are small and, next to mediapipe's threads and a
    # busy machine, OpenMP spin-waiting made the fit up to 20x slower with more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(model, observed, valid, intrinsics, image_size, config or FitConfig(), progress)
    finally:
        torch.set_num_threads(threads)


def _fit(model, observed, valid, intrinsics, image_size: int, config: FitConfig,
         progress) -> FitResult:
    observed = np.asarray(observed, dtype=np.float64)
    if observed.ndim != 3 or observed.shape[1:] != (478, 2):
        raise InputError(f"landmarks must be (T, 478, 2), got {observed.shape}")
    if not np.asarray(valid).any():
        raise InputError("no frame has detected landmarks to fit")
    started = time.perf_counter()
    head = LandmarkHead(model)
    ids = head.ids.numpy()
    target = observed[:, ids]
    rotations, translation, depth = initial_poses(head, target, valid, intrinsics)
    timings = {"init_s": time.perf_counter() - started}
    problem = _Problem(head, target, valid, intrinsics, image_size, depth, config)
    problem.set_initial(rotations, translation)
    started = time.perf_counter()
    # Few frames are cheap per step: spend more steps on them (a portrait gets 8x).
    boost = int(np.clip(32 // max(len(target), 1), 1, 8))
    problem.optimise(rigid=True, iterations=config.rigid_iterations * boost, progress=progress)
    problem.optimise(rigid=False, iterations=config.iterations * boost, progress=progress)
    timings["optimise_s"] = time.perf_counter() - started
    return problem.result(ids, timings)


def initial_poses(head: LandmarkHead, target: np.ndarray, valid: np.ndarray,
                  intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-frame root rotation and translation from PnP of the neutral landmarks.

    Args:
        head: the landmark head.
        target: (T, L, 2) observed landmarks in the order of ``head.ids``.
        valid: (T,) bool.
        intrinsics: (T, 3, 3).

    Returns:
        rotations (T, 3) root axis-angle, translation (T, 3) in the fit's world, camera depth.
    """
    import cv2

    points = neutral_landmarks(head)
    n_model = head.n_model_landmarks
    rest_root = head.joint_template[0].double().numpy()
    frames = np.flatnonzero(valid)
    poses = np.zeros((len(target), 6))
    for t in frames:
        ok, rvec, tvec = cv2.solvePnP(points[:n_model], target[t, :n_model].astype(np.float64),
                                      np.asarray(intrinsics[t], np.float64), None,
                                      flags=cv2.SOLVEPNP_SQPNP)
        if not ok:
            ok, rvec, tvec = cv2.solvePnP(points[:n_model], target[t, :n_model], intrinsics[t], None)
        poses[t] = np.concatenate([rvec.ravel(), tvec.ravel()])
    depth = float(np.median(poses[frames, 5]))
    rotations = np.zeros((len(target), 3))
    translation = np.zeros((len(target), 3))
    for t in frames:
        rotation_camera = cv2.Rodrigues(poses[t, :3])[0]
        rotation = CAMERA_ROTATION.T @ rotation_camera
        rotations[t] = cv2.Rodrigues(rotation)[0].ravel()
        shift = CAMERA_ROTATION.T @ (poses[t, 3:] - np.array([0.0, 0.0, depth]))
        translation[t] = shift + rotation @ rest_root - rest_root
    for values in (rotations, translation):
        for d in range(3):
            values[~valid, d] = np.interp(np.flatnonzero(~valid), frames, values[frames, d])
    return rotations, translation, depth


def extrinsic_matrix(depth: float) -> np.ndarray:
    """World -> camera for a camera on +Z at ``depth`` metres looking at the origin. (4, 4)."""
    matrix = np.eye(4)
    matrix[:3, :3] = CAMERA_ROTATION
    matrix[2, 3] = depth
    return matrix


def project(points: torch.Tensor, intrinsics: torch.Tensor, depth: float) -> torch.Tensor:
    """Project world points through the fixed camera. (T, N, 3), (T, 3, 3) -> (T, N, 2) pixels."""
    x, y = points[..., 0], -points[..., 1]
    z = (depth - points[..., 2]).clamp_min(1e-3)
    u = intrinsics[:, None, 0, 0] * x / z + intrinsics[:, None, 0, 2]
    v = intrinsics[:, None, 1, 1] * y / z + intrinsics[:, None, 1, 2]
    return torch.stack([u, v], dim=-1)


class _Problem:
    """The parameters, the loss and the L-BFGS loop of one fit.

    Scaling matters for L-BFGS: the loss is a sum over frames, translations are optimised in
    decimetres, and the shared unknowns (shape, focal factor) are divided by sqrt(frames) so that
    their curvature is comparable to that of one frame's unknowns.
    """

    def __init__(self, head: LandmarkHead, target: np.ndarray, valid: np.ndarray,
                 intrinsics: np.ndarray, image_size: int, depth: float, config: FitConfig):
        self.head, self.config, self.depth = head, config, depth
        frames = len(target)
        self.pixel_scale = 512.0 / image_size
        self.target = torch.as_tensor(target, dtype=torch.float32)
        self.frame_weight = torch.as_tensor(np.asarray(valid, dtype=np.float32))
        self.shared_scale = 1.0 / float(np.sqrt(max(1.0, float(np.sum(valid)))))
        weights = torch.as_tensor(landmark_weights(head.ids.numpy()))
        self.landmark_weight = weights / weights.sum()
        self.intrinsics = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float32)
        self.shape_u = torch.zeros(min(config.n_shape, head.n_shape))
        self.expression = torch.zeros(frames, head.n_expressions)
        self.rotations = torch.zeros(frames, 5, 3)
        self.translation_dm = torch.zeros(frames, 3)
        self.focal_u = torch.zeros(1)

    def set_initial(self, root: np.ndarray, translation: np.ndarray) -> None:
        self.rotations[:, 0] = torch.as_tensor(root, dtype=torch.float32)
        self.translation_dm[:] = torch.as_tensor(translation, dtype=torch.float32) * 10.0

    @property
    def translation(self) -> torch.Tensor:
        return self.translation_dm * 0.1

    @property
    def log_focal(self) -> torch.Tensor:
        return self.focal_u * self.shared_scale

    def full_shape(self) -> torch.Tensor:
        shape = self.shape_u * self.shared_scale
        pad = self.head.n_shape - shape.shape[0]
        return torch.cat([shape, shape.new_zeros(pad)]) if pad else shape

    def scaled_intrinsics(self) -> torch.Tensor:
        """(T, 3, 3) intrinsics with the shared focal factor applied to fx and fy."""
        focal_entries = torch.zeros(3, 3)
        focal_entries[0, 0] = focal_entries[1, 1] = 1.0
        return self.intrinsics * (1.0 + (torch.exp(self.log_focal) - 1.0) * focal_entries)

    def projected(self) -> torch.Tensor:
        points = self.head(self.full_shape(), self.expression, self.rotations, self.translation)
        return project(points, self.scaled_intrinsics(), self.depth)

    def loss(self, rigid: bool) -> torch.Tensor:
        config = self.config
        residual = (self.projected() - self.target) * self.pixel_scale
        robust = torch.sqrt((residual ** 2).sum(-1) + config.robust_px ** 2) - config.robust_px
        data = ((robust * self.landmark_weight).sum(-1) * self.frame_weight).sum()
        priors = (config.shape_prior * self.full_shape().pow(2).sum()
                  + config.focal_prior * self.log_focal.pow(2).sum())
        if not rigid:
            rot = self.rotations
            priors = priors + (config.expression_prior * self.expression.pow(2).sum()
                               + config.jaw_prior * rot[:, 2].pow(2).sum()
                               + config.neck_prior * rot[:, 1].pow(2).sum()
                               + config.eye_prior * rot[:, 3:].pow(2).sum())
        return data + priors + self._temporal(rigid)

    def _temporal(self, rigid: bool) -> torch.Tensor:
        config = self.config
        if not config.temporal or self.rotations.shape[0] < 3:
            return self.rotations.new_zeros(())
        second = lambda x: (x[2:] - 2 * x[1:-1] + x[:-2]).pow(2).sum()
        total = config.smooth_pose * (second(self.rotations) + second(self.translation_dm))
        if not rigid:
            total = total + config.smooth_expression * second(self.expression)
        return total

    def optimise(self, rigid: bool, iterations: int, progress=None) -> None:
        if iterations <= 0:
            return
        variables = [self.rotations, self.translation_dm, self.shape_u]
        if self.config.fit_focal:
            variables.append(self.focal_u)
        if not rigid:
            variables.append(self.expression)
        for tensor in (self.rotations, self.translation_dm, self.shape_u, self.focal_u, self.expression):
            tensor.requires_grad_(any(tensor is v for v in variables))
        optimiser = torch.optim.LBFGS(variables, lr=1.0, max_iter=iterations, history_size=40,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                                      tolerance_change=1e-12)
        mask = None
        if rigid:  # only the root rotation moves in the rigid stage
            mask = torch.zeros_like(self.rotations)
            mask[:, 0] = 1.0
        count = [0]

        def closure():
            optimiser.zero_grad()
            loss = self.loss(rigid)
            loss.backward()
            if mask is not None:
                self.rotations.grad.mul_(mask)
            count[0] += 1
            if progress is not None:
                progress.progress(min(count[0], iterations), iterations,
                                  "rigid fit" if rigid else "full fit")
            return loss

        optimiser.step(closure)
        with torch.no_grad():
            log.debug("fit (%s): %d evaluations, loss %.4f", "rigid" if rigid else "full", count[0],
                      float(self.loss(rigid)))

    @torch.no_grad()
    def result(self, ids: np.ndarray, timings: dict) -> FitResult:
        projected = self.projected()
        distance = (projected - self.target).norm(dim=-1)            # (T, L) pixels of the crop
        errors = distance[:, : self.head.n_model_landmarks].mean(-1)
        frames = self.target.shape[0]
        return FitResult(
            shape=self.full_shape().numpy().copy(), expressions=self.expression.numpy().copy(),
            joint_rotations=self.rotations.numpy().copy(), translation=self.translation.numpy().copy(),
            intrinsics=self.scaled_intrinsics().numpy().copy(),
            extrinsics=np.repeat(extrinsic_matrix(self.depth)[None], frames, axis=0),
            landmark_ids=ids, projected=projected.numpy().copy(), errors_px=errors.numpy().copy(),
            focal_factor=float(torch.exp(self.log_focal)), timings=timings)
