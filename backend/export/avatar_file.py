"""Trained model <-> avatar file (backend/formats/avatar.py), and the model an avatar file drives.

The file stores B0 and the final blendshapes dB_k = dB_init + max(f(d), 0) dG^ (Eq. 2 already
applied), with zero deltas for mouth Gaussians, plus the head model's neutral mesh, expression
directions, mesh skinning weights and rest joints, so Blender and ``render`` need no head model.
"""

from __future__ import annotations

import numpy as np
import torch

from ..formats import avatar as avatar_format


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


@torch.no_grad()
def avatar_from_model(model, mesh, expression_names: list[str], head_kind: str,
                      training: dict | None = None) -> avatar_format.Avatar:
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


def write_avatar(path: str, trainer, head, expression_names: list[str], training: dict | None = None) -> None:
    """Write the trainer's current avatar to ``path`` (float16 deltas)."""
    avatar = avatar_from_model(trainer.model, trainer.mesh, expression_names, head.kind, training)
    avatar_format.write(path, avatar)


def model_from_avatar(avatar: avatar_format.Avatar, device="cpu"):
    """A GaussianBlendshapes that reproduces an avatar file (deltas as fixed init, scales 0).

    Returns:
        (model, rest joint positions (J, 3) tensor).
    """
    from ..train.model import GaussianBlendshapes

    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    n, k = avatar.n_gaussians, avatar.n_expressions
    n_coeffs = avatar.sh.shape[1]
    tensors = {
        "means": t(avatar.means), "log_scales": t(avatar.log_scales), "quats": t(avatar.quats),
        "opacity_logits": t(avatar.opacity_logits), "sh_dc": t(avatar.sh[:, :1]),
        "sh_rest": t(avatar.sh[:, 1:]),
        "delta_means": t(avatar.delta_means).transpose(0, 1),
        "delta_log_scales": t(avatar.delta_log_scales).transpose(0, 1),
        "delta_quats": t(avatar.delta_quats).transpose(0, 1),
        "delta_opacity_logits": t(avatar.delta_opacity_logits).transpose(0, 1),
        "delta_sh": t(avatar.delta_sh[:, :, :1]).transpose(0, 1),
        "init_means": torch.zeros(n, k, 3, device=device), "init_quats": torch.zeros(n, k, 4, device=device),
        "consistency": torch.ones(n, k, device=device), "lbs_weights": t(avatar.lbs_weights),
        "mouth": torch.as_tensor(avatar.mouth, device=device),
    }
    still = tensors["mouth"]  # the contract: mouth-interior Gaussians are never blended
    for name in ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits", "delta_sh"):
        tensors[name][still] = 0.0
    degree = int(round(np.sqrt(n_coeffs))) - 1
    return GaussianBlendshapes(tensors, tuple(int(p) for p in avatar.joint_parents), degree), \
        t(avatar.joint_positions)
