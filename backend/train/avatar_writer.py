"""Trained model -> avatar file (backend/formats/avatar.py), written at the end of training.

The file stores B0 and the final blendshapes dB_k = dB_init + max(f(d), 0) dG^ (Eq. 2 already
applied), with zero deltas for mouth Gaussians, plus the head model's neutral mesh, expression
directions, mesh skinning weights and rest joints, so Blender and ``render`` need no head model.
The reverse (the model an avatar file drives) is ``backend/export/avatar_file.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..formats import avatar as avatar_format
from .init import SubjectMesh
from .model import GaussianBlendshapes


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


@torch.no_grad()
def avatar_from_model(model: GaussianBlendshapes, mesh: SubjectMesh, expression_names: list[str],
                      head_kind: str, training: dict | None = None) -> avatar_format.Avatar:
    """Build the file-contract Avatar from a trained GaussianBlendshapes and its SubjectMesh."""
    params = model.params
    sh = torch.cat([params["sh_dc"], params["sh_rest"]], dim=1)
    deltas = {name: model.deltas(name) for name in ("means", "log_scales", "quats", "opacity_logits",
                                                    "sh_dc")}
    to_k_first = lambda t: _np(t.transpose(0, 1))  # (N, K, ...) -> (K, N, ...)  # noqa: E731
    return avatar_format.Avatar(
        means=_np(params["means"]), log_scales=_np(params["log_scales"]),
        quats=_np(params["quats"] / params["quats"].norm(dim=-1, keepdim=True).clamp_min(1e-12)),
        opacity_logits=_np(params["opacity_logits"]), sh=_np(sh), mouth=_np(model.mouth).astype(bool),
        lbs_weights=_np(model.lbs_weights / model.lbs_weights.sum(dim=1, keepdim=True)),
        delta_means=to_k_first(deltas["means"]), delta_log_scales=to_k_first(deltas["log_scales"]),
        delta_quats=to_k_first(deltas["quats"]), delta_opacity_logits=to_k_first(deltas["opacity_logits"]),
        delta_sh=to_k_first(deltas["sh_dc"]),
        joint_positions=_np(mesh.rest_joints), joint_parents=np.asarray(model.joint_parents, np.int32),
        mesh_vertices=_np(mesh.vertices), mesh_faces=_np(mesh.faces).astype(np.int32),
        mesh_expression_dirs=_np(mesh.expression_dirs.permute(2, 0, 1)),
        mesh_lbs_weights=_np(mesh.lbs_weights), expression_names=list(expression_names),
        head_model={"kind": head_kind}, training=dict(training or {}))


def write_avatar(path: str, model: GaussianBlendshapes, mesh: SubjectMesh, expression_names: list[str],
                 head_kind: str, training: dict | None = None) -> None:
    """Write a trained model and its subject mesh to the avatar file ``path`` (float16 deltas)."""
    avatar_format.write(path, avatar_from_model(model, mesh, expression_names, head_kind, training))
