"""The head-model interface: numpy assets in, a torch layer out (one interface for FLAME and built-in).

``HeadAssets`` is what every loader produces (plain numpy, validated); ``HeadModel`` holds them as
registered buffers and runs the batched forward of ``lbs.py``; ``HeadOutput`` is what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import FormatError, InputError
from . import lbs

JOINT_NAMES = ("root", "neck", "jaw", "eye_L", "eye_R")
PARENTS = (-1, 0, 1, 1, 1)
KINDS = ("builtin", "flame2020", "flame2023", "flame2023-open", "flame-npz")


@dataclass
class HeadAssets:
    """Everything that defines a head model, as numpy arrays (V vertices, F faces, L landmarks).

    Attributes:
        kind: one of ``KINDS``.
        v_template: (V, 3) rest template in metres (+X subject's left, +Y up, +Z out of the face).
        faces: (F, 3) int64 triangles, counter-clockwise seen from outside.
        shapedirs: (V, 3, S) identity directions.
        exprdirs: (V, 3, K) expression directions.
        posedirs: (36, V * 3) pose correctives, driven by (R - I) of joints 1..4.
        J_regressor: (5, V) joint regressor, rows summing to one.
        lbs_weights: (V, 5) skinning weights over ``JOINT_NAMES``.
        expression_names: K names.
        landmark_faces: (L,) int64 triangle of each landmark.
        landmark_bary: (L, 3) barycentric coordinates in that triangle.
        landmark_ids: (L,) int64 mediapipe FaceMesh ids (0..477) of the landmarks.
        source: where the assets came from (a path or ``builtin vN``), for messages.
        extras: optional named arrays (e.g. the built-in model's region masks).
    """

    kind: str
    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    lbs_weights: np.ndarray
    expression_names: list[str]
    landmark_faces: np.ndarray
    landmark_bary: np.ndarray
    landmark_ids: np.ndarray
    source: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def validate(self) -> HeadAssets:
        """Check kinds, shapes and index ranges; raise FormatError naming the source. Returns self."""
        n_vertices = len(self.v_template)
        n_shape, n_expr = self.shapedirs.shape[-1], self.exprdirs.shape[-1]
        expected = {
            "v_template": (n_vertices, 3), "shapedirs": (n_vertices, 3, n_shape),
            "exprdirs": (n_vertices, 3, n_expr), "posedirs": (36, n_vertices * 3),
            "J_regressor": (5, n_vertices), "lbs_weights": (n_vertices, 5),
            "landmark_bary": (len(self.landmark_faces), 3), "landmark_ids": (len(self.landmark_faces),),
        }
        for name, shape in expected.items():
            found = tuple(np.shape(getattr(self, name)))
            if found != shape:
                raise FormatError(f"{self.source}: head-model array '{name}' has shape {found}, "
                                  f"expected {shape}; the file is not a supported head model")
        if self.kind not in KINDS:
            raise FormatError(f"{self.source}: unknown head-model kind {self.kind!r} (one of {KINDS})")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.min() < 0 \
                or self.faces.max() >= n_vertices:
            raise FormatError(f"{self.source}: faces must be (F, 3) indices below {n_vertices}")
        if len(self.landmark_faces) and (self.landmark_faces.min() < 0
                                         or self.landmark_faces.max() >= len(self.faces)):
            raise FormatError(f"{self.source}: landmark faces index past the {len(self.faces)} faces")
        if len(self.expression_names) != n_expr:
            raise FormatError(f"{self.source}: {len(self.expression_names)} expression names for "
                              f"{n_expr} expression directions")
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        """The numeric arrays by name (for saving)."""
        names = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor",
                 "lbs_weights", "landmark_faces", "landmark_bary", "landmark_ids")
        return {name: getattr(self, name) for name in names}


@dataclass
class HeadOutput:
    """The result of ``HeadModel.forward`` for B frames.

    Attributes:
        vertices: (B, V, 3) posed vertices.
        joints: (B, 5, 3) posed joint positions.
        landmarks: (B, L, 3) posed landmarks (order of ``HeadModel.landmark_ids``).
        transforms: (B, 5, 4, 4) skinning transforms, posed = transforms[j] @ rest (translation included).
        rest_joints: (B, 5, 3) joint positions of the shaped, unposed mesh.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    landmarks: torch.Tensor
    transforms: torch.Tensor
    rest_joints: torch.Tensor


class HeadModel(torch.nn.Module):
    """A FLAME-structured head model as a layer: parameters in, posed mesh out.

    Buffers (float32 unless noted): v_template (V,3), faces (F,3) int64, shapedirs (V,3,S),
    exprdirs (V,3,K), posedirs (36,V*3), J_regressor (5,V), lbs_weights (V,5),
    landmark_faces (L,) int64, landmark_bary (L,3), landmark_ids (L,) int64.
    """

    joint_names = JOINT_NAMES
    parents = PARENTS

    def __init__(self, assets: HeadAssets, device: str | torch.device = "cpu"):
        super().__init__()
        assets.validate()
        self.kind = assets.kind
        self.source = assets.source
        self.expression_names = list(assets.expression_names)
        self.n_shape = int(assets.shapedirs.shape[-1])
        self.n_expressions = int(assets.exprdirs.shape[-1])
        self.extras: dict[str, Any] = dict(assets.extras)
        for name, array in assets.arrays().items():
            dtype = torch.int64 if name in ("faces", "landmark_faces", "landmark_ids") else torch.float32
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array), dtype=dtype))
        self.to(device)

    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def forward(self, shape: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                joint_rotations: torch.Tensor | None = None, translation: torch.Tensor | None = None,
                vertex_offsets: torch.Tensor | None = None) -> HeadOutput:
        """Pose the model for a batch of B frames.

        Args:
            shape: (B, S) or (S,) identity coefficients; zeros if None.
            expression: (B, K) expression coefficients; zeros if None.
            joint_rotations: (B, 5, 3) axis-angle per joint (root, neck, jaw, eye_L, eye_R).
            translation: (B, 3) added after skinning; zeros if None.
            vertex_offsets: (V, 3) or (B, V, 3) per-subject offsets added to the template.

        Returns:
            HeadOutput. The batch size comes from the first tensor given (1 if none).
        """
        batch = _batch_size(shape, expression, joint_rotations, translation)
        shape = self._coefficients(shape, batch, self.n_shape, "shape")
        expression = self._coefficients(expression, batch, self.n_expressions, "expression")
        joint_rotations = self._checked(joint_rotations, (batch, 5, 3), "joint_rotations")
        translation = self._checked(translation, (batch, 3), "translation")
        template = self.v_template
        if vertex_offsets is not None:
            if vertex_offsets.shape[-2:] != template.shape:
                raise InputError(f"vertex_offsets must be ({self.n_vertices}, 3) or (B, "
                                 f"{self.n_vertices}, 3), got {tuple(vertex_offsets.shape)}")
            template = template + vertex_offsets
        coefficients = torch.cat([shape, expression], dim=1)
        directions = torch.cat([self.shapedirs, self.exprdirs], dim=2)
        vertices, joints, transforms, rest_joints = lbs.lbs(
            coefficients, joint_rotations, template, directions, self.posedirs, self.J_regressor,
            self.parents, self.lbs_weights)
        vertices = vertices + translation[:, None]
        joints = joints + translation[:, None]
        transforms = transforms.clone()
        transforms[:, :, :3, 3] = transforms[:, :, :3, 3] + translation[:, None]
        return HeadOutput(vertices, joints, self.landmarks_from(vertices), transforms, rest_joints)

    def landmarks_from(self, vertices: torch.Tensor) -> torch.Tensor:
        """Landmarks of meshes with this topology. (B, V, 3) -> (B, L, 3)."""
        corners = vertices[:, self.faces[self.landmark_faces]]  # (B, L, 3, 3)
        return (corners * self.landmark_bary[None, :, :, None]).sum(dim=2)

    def _coefficients(self, value, batch: int, size: int, name: str) -> torch.Tensor:
        if value is not None and value.dim() == 1:
            value = value[None].expand(batch, -1)
        return self._checked(value, (batch, size), name)

    def _checked(self, value, shape: tuple[int, ...], name: str) -> torch.Tensor:
        if value is None:
            return torch.zeros(shape, dtype=self.v_template.dtype, device=self.v_template.device)
        if tuple(value.shape) != shape:
            raise InputError(f"head model ({self.kind}): '{name}' must have shape {shape}, "
                             f"got {tuple(value.shape)}")
        return value.to(self.v_template.dtype)


def _batch_size(*values) -> int:
    for value in values:
        if value is not None and value.dim() >= 2:
            return int(value.shape[0])
    return 1
