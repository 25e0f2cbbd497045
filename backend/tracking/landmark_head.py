"""The head model evaluated at its landmarks only: the cheap forward the fit runs hundreds of times.

Posing the whole mesh for thousands of frames per iteration would dominate the fit. Blend shapes,
pose correctives and skinning act on each vertex independently and joints are linear in the
coefficients, so each landmark becomes one virtual vertex whose template, directions, correctives
and skinning weights are the barycentric mix of its triangle's corners, with joints from
precomputed regressed directions. Up to skinning-weight variation inside one triangle this equals
the landmarks of ``HeadModel.forward`` (exactly for landmarks that are vertices).

If the model has no iris landmarks (mediapipe ids 468 / 473), a pupil point is added per eye,
bound to the eye joint, so iris detections drive the eye rotations (gaze).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..headmodel import lbs
from .regions import IRIS_CENTRE_LEFT, IRIS_CENTRE_RIGHT

EYEBALL_RADIUS_M = 0.011  # centre of the eye joint to the iris centre, when the model has no eyeball
EYE_JOINTS = {IRIS_CENTRE_LEFT: 3, IRIS_CENTRE_RIGHT: 4}  # mediapipe iris centre -> eye_L, eye_R


class LandmarkHead(torch.nn.Module):
    """Landmarks of a ``HeadModel`` for a batch of frames, without posing the full mesh.

    Attributes:
        ids: (L,) int64 mediapipe ids of the landmarks returned by ``forward`` (the model's own,
            plus the added pupils).
        n_model_landmarks: how many of them are the model's own (the first ones).
    """

    def __init__(self, model):
        super().__init__()
        self.parents = tuple(model.parents)
        self.n_shape, self.n_expressions = model.n_shape, model.n_expressions
        # 1. Per-landmark attributes: barycentric mixes of the corner vertices' attributes.
        corners = model.faces[model.landmark_faces]                           # (L, 3)
        bary = model.landmark_bary

        def mix(values: torch.Tensor) -> torch.Tensor:  # (V, ...) -> (L, ...)
            return (values[corners] * bary.view(*bary.shape, *([1] * (values.dim() - 1)))).sum(dim=1)

        directions = torch.cat([model.shapedirs, model.exprdirs], dim=2)     # (V, 3, C)
        n_vertices = model.v_template.shape[0]
        template = mix(model.v_template)
        dirs = mix(directions)
        posedirs = mix(model.posedirs.view(-1, n_vertices, 3).transpose(0, 1))  # (L, 36, 3)
        weights = mix(model.lbs_weights)
        joint_template = model.J_regressor @ model.v_template                 # (5, 3)
        joint_dirs = torch.einsum("jv,vcs->jcs", model.J_regressor, directions)
        ids = model.landmark_ids
        self.n_model_landmarks = int(len(ids))
        # 2. Pupils bound to the eye joints when the model has no iris landmarks.
        for iris in [i for i in (IRIS_CENTRE_LEFT, IRIS_CENTRE_RIGHT) if i not in set(ids.tolist())]:
            joint = EYE_JOINTS[iris]
            offset = _pupil_offset(model, joint, joint_template[joint])
            template = torch.cat([template, (joint_template[joint] + offset)[None]])
            dirs = torch.cat([dirs, joint_dirs[joint][None]])
            posedirs = torch.cat([posedirs, torch.zeros_like(posedirs[:1])])
            weights = torch.cat([weights, torch.nn.functional.one_hot(
                torch.tensor([joint]), 5).to(weights.dtype)])
            ids = torch.cat([ids, torch.tensor([iris])])
        n_points = template.shape[0]
        self.register_buffer("template", template.contiguous())
        self.register_buffer("dirs_t", dirs.reshape(n_points * 3, -1).T.contiguous())   # (C, L*3)
        self.register_buffer("posedirs", posedirs.transpose(0, 1).reshape(-1, n_points * 3).contiguous())
        self.register_buffer("weights", weights.contiguous())
        self.register_buffer("joint_template", joint_template)
        self.register_buffer("joint_dirs_t", joint_dirs.reshape(15, -1).T.contiguous())  # (C, 15)
        self.register_buffer("ids", ids)
        self.register_buffer("dirs", dirs.contiguous())                              # (L, 3, C)
        self.register_buffer("joint_dirs", joint_dirs.contiguous())                  # (5, 3, C)
        self.register_buffer("descendants", _descendants(self.parents))              # (5, 5)

    def subset(self, index: torch.Tensor) -> LandmarkHead:
        """The same head with only the points ``index`` (L',) int64: a shallow copy whose
        per-point buffers are sliced (the model's joints and directions are shared)."""
        part = copy.copy(self)
        part._buffers = dict(self._buffers)
        columns = (index[:, None] * 3 + torch.arange(3)).reshape(-1)
        part._buffers.update(template=self.template[index], dirs_t=self.dirs_t[:, columns],
                             posedirs=self.posedirs[:, columns], weights=self.weights[index],
                             ids=self.ids[index], dirs=self.dirs[index])
        return part

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, joint_rotations: torch.Tensor,
                translation: torch.Tensor) -> torch.Tensor:
        """Posed landmarks in head-model world space (metres).

        Skinning uses the barycentric mix of the corner weights: exact where a landmark is a
        vertex or its corners share weights, and within a fraction of a millimetre elsewhere.

        Args:
            shape: (S,) identity coefficients shared by the batch, or (B, S) one per frame.
            expression: (B, K).
            joint_rotations: (B, 5, 3) axis-angle.
            translation: (B, 3).

        Returns:
            (B, L, 3).
        """
        batch = expression.shape[0]
        shape = shape.expand(batch, -1) if shape.dim() == 2 else shape[None].expand(batch, -1)
        return self.points(torch.cat([shape, expression], dim=1), joint_rotations, translation)

    def points(self, coefficients: torch.Tensor, joint_rotations: torch.Tensor,
               translation: torch.Tensor) -> torch.Tensor:
        """``forward`` on stacked coefficients, written without in-place writes (``torch.func``).

        Args:
            coefficients: (B, S + K) shape then expression coefficients.
            joint_rotations: (B, 5, 3) axis-angle.
            translation: (B, 3).

        Returns:
            (B, L, 3).
        """
        batch = coefficients.shape[0]
        # 1. Shaped rest points and joints (joints are linear in the coefficients).
        shaped = self.template + (coefficients @ self.dirs_t).view(batch, -1, 3)
        rest_joints = self.joint_template + (coefficients @ self.joint_dirs_t).view(batch, 5, 3)
        # 2. Pose correctives, then the rigid chain: world rotations and posed joints.
        rotations = lbs.batch_rodrigues(joint_rotations.reshape(-1, 3)).view(batch, 5, 3, 3)
        corrected = shaped + (lbs.pose_features(rotations) @ self.posedirs).view(batch, -1, 3)
        world_rotations, posed_joints = _chain(rotations, rest_joints, self.parents)
        shift = posed_joints - (world_rotations @ rest_joints[..., None])[..., 0]
        transforms = torch.cat([world_rotations, shift[..., None]], dim=3)  # (B, 5, 3, 4)
        # 3. Linear blend skinning as one matmul over joints: (L, 5) x (B, 5, 12) -> (B, L, 3, 4).
        blended = torch.matmul(self.weights, transforms.reshape(batch, 5, 12)).view(batch, -1, 3, 4)
        posed_points = (blended[..., :3] * corrected[:, :, None, :]).sum(-1) + blended[..., 3]
        return posed_points + translation[:, None]


    def pose(self, coefficients: torch.Tensor, joint_rotations: torch.Tensor,
             translation: torch.Tensor) -> PosedLandmarks:
        """``points`` plus what ``jacobian`` needs. Shapes as in ``points``."""
        batch = coefficients.shape[0]
        shaped = self.template + (coefficients @ self.dirs_t).view(batch, -1, 3)
        rest_joints = self.joint_template + (coefficients @ self.joint_dirs_t).view(batch, 5, 3)
        rotations = lbs.batch_rodrigues(joint_rotations.reshape(-1, 3)).view(batch, 5, 3, 3)
        corrected = shaped + (lbs.pose_features(rotations) @ self.posedirs).view(batch, -1, 3)
        world, posed = _chain(rotations, rest_joints, self.parents)
        shift = posed - (world @ rest_joints[..., None])[..., 0]
        per_joint = torch.einsum("bjac,blc->blja", world, corrected) + shift[:, None]  # (B, L, 5, 3)
        points = torch.einsum("lj,blja->bla", self.weights, per_joint) + translation[:, None]
        return PosedLandmarks(points, joint_rotations, rotations, world, posed, per_joint)

    def jacobian(self, posed: PosedLandmarks, outer: torch.Tensor) -> tuple:
        """Exact derivatives of ``outer @ points`` (chain rule), in closed form for the fit.

        The derivative by the translation is ``outer`` itself.

        Args:
            posed: from ``pose``.
            outer: (B, L, R, 3) derivative of R quantities per landmark by its point (e.g. the
                projection's 2 x 3 Jacobian; the identity gives the points' own Jacobian).

        Returns:
            d_coefficients (B, L, R, C); d_rotations (B, L, R, 15) by each joint's axis-angle
            components (joint-major).
        """
        batch, world = outer.shape[0], posed.world
        blended = torch.einsum("lj,bjac->blac", self.weights, world)                # (B, L, 3, 3)
        through = outer @ blended                                                      # (B, L, R, 3)
        # 1. Coefficients move the rest points and the rest joints (hence every joint's shift).
        d_coefficients = torch.einsum("blra,lan->blrn", through, self.dirs)
        d_posed, dirs = [], self.joint_dirs
        for j, parent in enumerate(self.parents):
            d_posed.append(dirs[j].expand(batch, -1, -1) if parent < 0 else
                           d_posed[parent] + world[:, parent] @ (dirs[j] - dirs[parent]))
        d_shift = torch.stack(d_posed, dim=1) - world @ self.joint_dirs               # (B, 5, 3, C)
        weighted = torch.einsum("lj,blra->blrja", self.weights, outer).flatten(3)     # (B, L, R, 15)
        d_coefficients = d_coefficients + (weighted.flatten(1, 2) @ d_shift.flatten(1, 2)).view_as(
            d_coefficients)
        # 2. Turning joint j by w (world axes) turns everything below it about its posed joint:
        #    outer . (w x arm) = w . (arm x outer).
        reach = self.weights @ self.descendants.T                                      # (L, 5)
        below = torch.einsum("kj,lj,blja->blka", self.descendants, self.weights, posed.per_joint)
        arm = (below - reach[None, :, :, None] * posed.posed_joints[:, None])[:, :, None]  # (B,L,1,5,3)
        rows = outer[:, :, :, None, :]                                                 # (B,L,R,1,3)
        d_world = torch.stack([arm[..., 1] * rows[..., 2] - arm[..., 2] * rows[..., 1],
                               arm[..., 2] * rows[..., 0] - arm[..., 0] * rows[..., 2],
                               arm[..., 0] * rows[..., 1] - arm[..., 1] * rows[..., 0]], dim=-1)
        # 3. ... and changes the pose correctives of joints 1..4: the local rotation R becomes
        #    R exp([W' w]x), so d(R - I) = R [W' e_i]x along world axis i.
        generators = _GENERATORS.to(world)
        local_axes = torch.einsum("bjia,axy->bjixy", world[:, 1:], generators)        # (B,4,3,3,3)
        d_features = (posed.rotations[:, 1:, None] @ local_axes).flatten(3)            # (B,4,3,9)
        d_points = d_features.transpose(0, 1).reshape(4, -1, 9) @ self.posedirs.view(4, 9, -1)
        d_points = d_points.view(4, batch, 3, -1, 3).permute(1, 3, 4, 0, 2).flatten(3)  # (B,L,3,12)
        d_corrective = (through @ d_points).unflatten(3, (4, 3))
        d_world = torch.cat([d_world[:, :, :, :1], d_world[:, :, :, 1:] + d_corrective], dim=3)
        # 4. World increments from axis-angle increments: w = W_j J_r(a_j) da_j (right Jacobian).
        right = _right_jacobian(posed.joint_rotations.reshape(-1, 3)).view(batch, 5, 3, 3)
        d_rotations = torch.einsum("blrjk,bjki->blrji", d_world, world @ right)
        return d_coefficients, d_rotations.flatten(3)


@dataclass
class PosedLandmarks:
    """The landmark forward pass with the intermediates of its Jacobian."""

    points: torch.Tensor           # (B, L, 3) posed landmarks, translation included
    joint_rotations: torch.Tensor  # (B, 5, 3) axis-angle
    rotations: torch.Tensor        # (B, 5, 3, 3) local rotation matrices
    world: torch.Tensor            # (B, 5, 3, 3) world rotations
    posed_joints: torch.Tensor     # (B, 5, 3) without the translation
    per_joint: torch.Tensor        # (B, L, 5, 3) each landmark moved by each joint alone


_GENERATORS = torch.tensor([[[0.0, 0, 0], [0, 0, -1], [0, 1, 0]],
                            [[0.0, 0, 1], [0, 0, 0], [-1, 0, 0]],
                            [[0.0, -1, 0], [1, 0, 0], [0, 0, 0]]])  # [e_i]x for i = x, y, z


def _chain(rotations: torch.Tensor, rest_joints: torch.Tensor, parents) -> tuple:
    """World rotations (B, J, 3, 3) and posed joints (B, J, 3) down the kinematic tree."""
    world, posed = [], []
    for j, parent in enumerate(parents):
        if parent < 0:
            world.append(rotations[:, j])
            posed.append(rest_joints[:, j])
        else:
            offset = rest_joints[:, j] - rest_joints[:, parent]
            world.append(world[parent] @ rotations[:, j])
            posed.append(posed[parent] + (world[parent] @ offset[..., None])[..., 0])
    return torch.stack(world, dim=1), torch.stack(posed, dim=1)


def _descendants(parents) -> torch.Tensor:
    """(J, J) with [j, k] = 1 where joint k is j or below j in the tree."""
    table = torch.eye(len(parents))
    for k in range(len(parents)):
        parent = parents[k]
        while parent >= 0:
            table[parent, k] = 1.0
            parent = parents[parent]
    return table


def _right_jacobian(axis_angle: torch.Tensor) -> torch.Tensor:
    """Right Jacobian of SO(3): R(a + d) = R(a) exp([J_r(a) d]x) to first order. (N, 3) -> (N, 3, 3)."""
    angle = axis_angle.norm(dim=1)[:, None, None]
    skew = torch.einsum("ni,ijk->njk", axis_angle, _GENERATORS.to(axis_angle))
    small = angle < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    first = torch.where(small, 0.5 - angle ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)
    second = torch.where(small, 1 / 6 - angle ** 2 / 120, (safe - torch.sin(safe)) / safe ** 3)
    return torch.eye(3, dtype=axis_angle.dtype) - first * skew + second * (skew @ skew)


def _pupil_offset(model, joint: int, joint_rest: torch.Tensor) -> torch.Tensor:
    """Rest offset from the eye joint to the pupil: the front-most vertex bound to that eye,
    or ``EYEBALL_RADIUS_M`` straight ahead (+Z) when no vertex follows the eye."""
    bound = model.lbs_weights[:, joint] > 0.5
    if bool(bound.any()):
        vertices = model.v_template[bound]
        front = vertices[torch.argmax(vertices[:, 2])]
        offset = front - joint_rest
        if float(offset.norm()) > 1e-4:
            return offset
    return torch.tensor([0.0, 0.0, EYEBALL_RADIUS_M], dtype=model.v_template.dtype)


def neutral_landmarks(head: LandmarkHead, shape: torch.Tensor | None = None) -> np.ndarray:
    """Landmarks of the neutral, unposed head (for PnP initialisation). Returns (L, 3) float64."""
    with torch.no_grad():
        shape = torch.zeros(head.n_shape) if shape is None else shape
        points = head(shape, torch.zeros(1, head.n_expressions), torch.zeros(1, 5, 3),
                      torch.zeros(1, 3))
    return points[0].double().numpy()
