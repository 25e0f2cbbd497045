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

    def forward(self, shape: torch.Tensor, expression: torch.Tensor, joint_rotations: torch.Tensor,
                translation: torch.Tensor) -> torch.Tensor:
        """Posed landmarks in head-model world space (metres).

        Skinning uses the barycentric mix of the corner weights: exact where a landmark is a
        vertex or its corners share weights, and within a fraction of a millimetre elsewhere.

        Args:
            shape: (S,) identity coefficients shared by the batch.
            expression: (B, K).
            joint_rotations: (B, 5, 3) axis-angle.
            translation: (B, 3).

        Returns:
            (B, L, 3).
        """
        batch = expression.shape[0]
        coefficients = torch.cat([shape[None].expand(batch, -1), expression], dim=1)
        # 1. Shaped rest points and joints (joints are linear in the coefficients).
        shaped = self.template + (coefficients @ self.dirs_t).view(batch, -1, 3)
        rest_joints = self.joint_template + (coefficients @ self.joint_dirs_t).view(batch, 5, 3)
        # 2. Pose correctives and the rigid chain.
        rotations = lbs.batch_rodrigues(joint_rotations.reshape(-1, 3)).view(batch, -1, 3, 3)
        corrected = shaped + (lbs.pose_features(rotations) @ self.posedirs).view(batch, -1, 3)
        _, transforms = lbs.batch_rigid_transform(rotations, rest_joints, self.parents)
        # 3. Linear blend skinning as one matmul over joints: (L, 5) x (B, 5, 12) -> (B, L, 3, 4).
        blended = torch.matmul(self.weights, transforms[:, :, :3, :].reshape(batch, 5, 12))
        blended = blended.view(batch, -1, 3, 4)
        posed = (blended[..., :3] * corrected[:, :, None, :]).sum(-1) + blended[..., 3]
        return posed + translation[:, None]


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
