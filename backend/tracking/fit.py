"""Fit the head model to 2D landmarks of all frames at once.

Unknowns: identity shape (shared), per-frame expression coefficients, joint rotations (root, neck,
jaw, eyes) and translation, and one focal-length factor shared by all frames. The camera is fixed:
it looks at the head from +Z at distance ``depth`` (world -> camera = diag(1, -1, -1) plus
(0, 0, depth)); the head moves in front of it with its root joint and translation.

The start is closed form: per-frame PnP of the neutral head's landmarks (cv2.solvePnP) gives
rotation and translation. Then Levenberg-Marquardt (``solver.py``) with the exact Jacobian of the
projected landmarks (``LandmarkHead.jacobian``): per-frame blocks, a Schur complement for the
shared unknowns, conjugate gradients for the time coupling. A few rigid steps (root pose,
translation, shape, focal) come first, then everything.
Loss: region-weighted robust (Charbonnier, by IRLS) 2D landmark error in pixels at 512, temporal
smoothness (second differences) and Gaussian priors on shape, expression, jaw, neck, eyes and the
focal factor.
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
from .solver import LevenbergMarquardt, NormalBlocks, Regularizer

log = logging.getLogger("toonsplat")
CAMERA_ROTATION = np.diag([1.0, -1.0, -1.0])  # head space (+Y up, +Z to the camera) -> OpenCV
CHUNK_FRAMES = 64   # frames per Jacobian chunk (bounds memory)


@dataclass
class FitConfig:
    """Weights and schedule of the landmark fit (loss in pixels at 512, per frame)."""

    rigid_iterations: int = 0        # first steps on root pose, translation, shape, focal only
    iterations: int = 12             # most steps on everything (stops earlier when converged)
    n_shape: int = 100               # identity coefficients fitted (the rest stay zero)
    fit_focal: bool = True           # optimise one focal factor shared by all frames
    temporal: bool = True            # smoothness over time (False for unrelated images)
    shape_prior: float = 0.001       # weight of |shape|^2 per valid frame (identity errors of
                                     # real detections are systematic: they do not average out)
    expression_prior: float = 0.001  # weight of |expression|^2 per frame
    jaw_prior: float = 0.05          # weight of the jaw's opening^2 (rotation about x, radians)
    jaw_side_prior: float = 100.0    # weight of the jaw's sideways turn and roll^2 (y, z): the
                                     # mandible mostly hinges, and these absorb detector bias
    neck_prior: float = 100.0        # the neck and the root both turn the head; prefer the root
    eye_prior: float = 0.02          # weight of |eye rotation|^2 (radians)
    eye_roll_prior: float = 10.0     # weight of the eyes' roll about their optical axis (z): a
                                     # round iris cannot show it, so without this it drifts
    focal_prior: float = 2.0         # weight of log(focal factor)^2
    smooth_pose: float = 50.0        # second differences of root, neck (rad) and translation (dm)
    smooth_jaw: float = 2.0          # second differences of the jaw rotation (rad)
    smooth_eyes: float = 0.2         # second differences of the eye rotations (saccades are fast)
    smooth_expression: float = 0.1   # second differences of expressions
    robust_px: float = 2.0           # Charbonnier scale of the landmark residual, pixels at 512

    @classmethod
    def video(cls, **changes) -> FitConfig:
        """The configuration for a video: MediaPipe's steady per-landmark bias repeats in every
        frame, and with the weak priors above identity and expressions bend to it (a rendered
        clip with the true focal length: 16 mm of vertex error). Shape and expression priors of
        0.3 were chosen on rendered clips of seeds 1-3 (docs/TRACKING.md; seed 0 is the test).
        One photo keeps the weak priors, so the fit follows the detector where nothing else
        tells it more."""
        return cls(**{"shape_prior": 0.3, "expression_prior": 0.3, **changes})


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
                  image_size: int, config: FitConfig | None = None, progress=None,
                  refine=None) -> FitResult:
    """Fit ``model`` to mediapipe landmarks of T frames.

    Args:
        model: a ``HeadModel``.
        observed: (T, 478, 2) landmarks in crop pixels (gaps already filled).
        valid: (T,) bool, False for frames whose landmarks were filled in (they get no data term).
        intrinsics: (T, 3, 3) initial pinhole matrices of the crops (pixels).
        image_size: crop side in pixels (residuals are measured in pixels at 512).
        config: weights and schedule.
        progress: optional ``Progress`` for step reports.
        refine: optional ``(problem, x_frames, x_shared) -> (x_frames, x_shared, report)`` run
            after the landmark fit (the photometric refinement); its report lands in
            ``timings["refine"]``.

    Returns:
        FitResult.
    """
    # One intra-op thread: the batched ops are small and, next to mediapipe's threads and a
    # busy machine, OpenMP spin-waiting made the fit up to 20x slower with more threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return _fit(model, observed, valid, intrinsics, image_size, config or FitConfig(),
                        progress, refine)
    finally:
        torch.set_num_threads(threads)


def _fit(model, observed, valid, intrinsics, image_size: int, config: FitConfig,
         progress, refine=None) -> FitResult:
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
    problem = LandmarkProblem(head, target, valid, intrinsics, image_size, depth, config)
    x_frames, x_shared = problem.initial(rotations, translation)
    started = time.perf_counter()
    total = config.rigid_iterations + config.iterations

    def report(offset):
        def callback(step, loss):
            if progress is not None:
                progress.progress(min(offset + step, total), total, "fit")
        return callback

    steps = 0
    for rigid, iterations in ((True, config.rigid_iterations), (False, config.iterations)):
        if iterations <= 0:
            continue
        solver = LevenbergMarquardt(problem.linearize, problem.regularizer(rigid), problem.loss)
        x_frames, x_shared, loss, taken = solver.run(x_frames, x_shared, iterations,
                                                     callback=report(steps))
        steps += taken
    timings["optimise_s"] = time.perf_counter() - started
    timings["steps"] = steps
    if refine is not None:
        x_frames, x_shared, timings["refine"] = refine(problem, x_frames, x_shared)
    return problem.result(x_frames, x_shared, ids, timings)


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


class LandmarkProblem:
    """The landmark fit as a Levenberg-Marquardt problem.

    Per-frame unknowns (P = K + 18): expression (K), joint rotations (15, axis-angle, joint-major),
    translation in decimetres (3). Shared unknowns: the first ``n_shape`` identity coefficients,
    then log(focal factor) when the focal length is fitted.
    """

    def __init__(self, head: LandmarkHead, target: np.ndarray, valid: np.ndarray,
                 intrinsics: np.ndarray, image_size: int, depth: float, config: FitConfig):
        self.head, self.config, self.depth = head, config, depth
        self.image_size = image_size
        self.pixel_scale = 512.0 / image_size
        self.target = torch.as_tensor(target, dtype=torch.float32)
        self.frame_weight = torch.as_tensor(np.asarray(valid, dtype=np.float32))
        weights = torch.as_tensor(landmark_weights(head.ids.numpy()))
        self.landmark_weight = weights / weights.sum()
        self.intrinsics = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float32)
        self.n_fit_shape = min(config.n_shape, head.n_shape)
        self.n_expressions = head.n_expressions
        self.n_frame = head.n_expressions + 18
        self.n_shared = self.n_fit_shape + int(config.fit_focal)

    def initial(self, root: np.ndarray, translation: np.ndarray) -> tuple:
        """(T, P) and (S,) float64 unknowns at the PnP start."""
        x_frames = torch.zeros(len(root), self.n_frame, dtype=torch.float64)
        k = self.n_expressions
        x_frames[:, k:k + 3] = torch.as_tensor(root)
        x_frames[:, k + 15:] = torch.as_tensor(translation) * 10.0
        return x_frames, torch.zeros(self.n_shared, dtype=torch.float64)

    def regularizer(self, rigid: bool) -> Regularizer:
        config, k = self.config, self.n_expressions
        prior = torch.zeros(self.n_frame, dtype=torch.float64)
        prior[:k] = config.expression_prior
        prior[k + 3:k + 6] = config.neck_prior
        prior[k + 6] = config.jaw_prior
        prior[k + 7:k + 9] = config.jaw_side_prior
        prior[k + 9:k + 15] = config.eye_prior
        prior[[k + 11, k + 14]] = config.eye_roll_prior
        valid_frames = max(float(self.frame_weight.sum()), 1.0)
        shared = torch.full((self.n_shared,), config.shape_prior * valid_frames, dtype=torch.float64)
        if config.fit_focal:
            shared[-1] = config.focal_prior
        smooth = torch.zeros(self.n_frame, dtype=torch.float64)
        if config.temporal:
            smooth[:k] = config.smooth_expression
            smooth[k:] = config.smooth_pose
            smooth[k + 6:k + 9] = config.smooth_jaw
            smooth[k + 9:k + 15] = config.smooth_eyes
        free = torch.ones(self.n_frame, dtype=torch.float64)
        if rigid:  # root rotation and translation only
            free[:k] = 0.0
            free[k + 3:k + 15] = 0.0
        return Regularizer(prior, shared, smooth, free, torch.ones(self.n_shared, dtype=torch.float64))

    def unpack(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> tuple:
        """Model inputs: shape (n_shape,), expression (T, K), rotations (T, 5, 3),
        translation (T, 3) metres, log focal factor (scalar tensor)."""
        k = self.n_expressions
        shape = torch.zeros(self.head.n_shape, dtype=torch.float32)
        shape[: self.n_fit_shape] = x_shared[: self.n_fit_shape].float()
        log_focal = x_shared[-1].float() if self.config.fit_focal else torch.zeros(())
        frames = x_frames.float()
        return (shape, frames[:, :k], frames[:, k:k + 15].reshape(-1, 5, 3),
                frames[:, k + 15:] * 0.1, log_focal)

    def scaled_intrinsics(self, log_focal: torch.Tensor) -> torch.Tensor:
        """(T, 3, 3) intrinsics with the shared focal factor applied to fx and fy."""
        scaled = self.intrinsics.clone()
        scaled[:, :2, :2] = scaled[:, :2, :2] * torch.exp(log_focal)
        return scaled

    def linearize(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> NormalBlocks:
        """Robust loss and normal equations of the data term, frames in chunks."""
        shape, expression, rotations, translation, log_focal = self.unpack(x_frames, x_shared)
        intrinsics = self.scaled_intrinsics(log_focal)
        frames, p, s = x_frames.shape[0], self.n_frame, self.n_shared
        out = NormalBlocks(0.0, torch.zeros(frames, p, p), torch.zeros(frames, p, s),
                           torch.zeros(s, s, dtype=torch.float64), torch.zeros(frames, p),
                           torch.zeros(s, dtype=torch.float64))
        for start in range(0, frames, CHUNK_FRAMES):
            part = slice(start, min(start + CHUNK_FRAMES, frames))
            coefficients = torch.cat([shape.expand(part.stop - start, -1), expression[part]], 1)
            self._chunk(part, coefficients, rotations[part], translation[part], intrinsics[part], out)
        return out

    def loss(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> float:
        """The robust data loss alone (no Jacobian): how Levenberg-Marquardt judges a step."""
        shape, expression, rotations, translation, log_focal = self.unpack(x_frames, x_shared)
        points = self.head(shape, expression, rotations, translation)
        residual = (project(points, self.scaled_intrinsics(log_focal), self.depth) - self.target)
        radius = self.config.robust_px
        soft = torch.sqrt(((residual * self.pixel_scale) ** 2).sum(-1) + radius ** 2)
        return float(((soft - radius) * self.landmark_weight * self.frame_weight[:, None]).sum())

    def _chunk(self, part: slice, coefficients, rotations, translation, intrinsics,
               out: NormalBlocks) -> None:
        head, scale, radius = self.head, self.pixel_scale, self.config.robust_px
        posed = head.pose(coefficients, rotations, translation)
        pixels, jacobian = _project_with_jacobian(posed.points, intrinsics, self.depth)
        residual = (pixels - self.target[part]) * scale                      # (B, L, 2)
        outer = jacobian * scale                                              # (B, L, 2, 3)
        d_coefficients, d_rotations = head.jacobian(posed, outer)
        # One matrix per frame: [frame unknowns | shared unknowns | residual] columns, so a
        # single Gram product gives the frame block, the coupling, the shared block and both
        # gradients.
        k, p, s = self.n_expressions, self.n_frame, self.n_shared
        columns = torch.empty(*residual.shape, p + s + 1)                     # (B, L, 2, W)
        columns[..., :k] = d_coefficients[..., head.n_shape:]
        columns[..., k:k + 15] = d_rotations
        columns[..., k + 15:p] = outer * 0.1
        columns[..., p:p + self.n_fit_shape] = d_coefficients[..., : self.n_fit_shape]
        if self.config.fit_focal:
            columns[..., p + s - 1] = (pixels - intrinsics[:, None, :2, 2]) * scale
        columns[..., -1] = residual
        # IRLS weights of the Charbonnier loss: the same gradient, a Gauss-Newton curvature.
        soft = torch.sqrt((residual ** 2).sum(-1) + radius ** 2)              # (B, L)
        weight = self.landmark_weight * self.frame_weight[part, None]
        out.loss += float((weight * (soft - radius)).sum())
        columns.mul_(torch.sqrt(weight / soft)[..., None, None])
        flat = columns.flatten(1, 2)                                          # (B, 2L, W)
        gram = flat.transpose(1, 2) @ flat                                    # (B, W, W)
        out.frames[part] = gram[:, :p, :p]
        out.coupling[part] = gram[:, :p, p:p + s]
        out.gradient_frames[part] = gram[:, :p, -1]
        out.shared += gram[:, p:p + s, p:p + s].sum(0).double()
        out.gradient_shared += gram[:, p:p + s, -1].sum(0).double()

    def result(self, x_frames: torch.Tensor, x_shared: torch.Tensor, ids: np.ndarray,
               timings: dict) -> FitResult:
        shape, expression, rotations, translation, log_focal = self.unpack(x_frames, x_shared)
        intrinsics = self.scaled_intrinsics(log_focal)
        points = self.head(shape, expression, rotations, translation)
        projected = project(points, intrinsics, self.depth)
        distance = (projected - self.target).norm(dim=-1)                    # (T, L) pixels of the crop
        errors = distance[:, : self.head.n_model_landmarks].mean(-1)
        frames = self.target.shape[0]
        return FitResult(
            shape=shape.numpy().copy(), expressions=expression.numpy().copy(),
            joint_rotations=rotations.numpy().copy(), translation=translation.numpy().copy(),
            intrinsics=intrinsics.numpy().copy(),
            extrinsics=np.repeat(extrinsic_matrix(self.depth)[None], frames, axis=0),
            landmark_ids=ids, projected=projected.numpy().copy(), errors_px=errors.numpy().copy(),
            focal_factor=float(torch.exp(log_focal)), timings=timings)


def _project_with_jacobian(points: torch.Tensor, intrinsics: torch.Tensor, depth: float) -> tuple:
    """``project`` and its derivative by the points. Returns (T, N, 2) and (T, N, 2, 3)."""
    x, y = points[..., 0], -points[..., 1]
    z = (depth - points[..., 2]).clamp_min(1e-3)
    fx, fy = intrinsics[:, None, 0, 0], intrinsics[:, None, 1, 1]
    u = fx * x / z + intrinsics[:, None, 0, 2]
    v = fy * y / z + intrinsics[:, None, 1, 2]
    zero = torch.zeros_like(x)
    row_u = torch.stack([fx / z, zero, fx * x / z ** 2], dim=-1)
    row_v = torch.stack([zero, -fy / z, fy * y / z ** 2], dim=-1)
    return torch.stack([u, v], dim=-1), torch.stack([row_u, row_v], dim=-2)
