"""Avatar file (backend/formats/avatar.py) -> the model it drives, for ``render`` and ``export``.

The file stores B0 and the final blendshapes (Eq. 2 already applied); the trainer's
``GaussianBlendshapes`` reproduces it with those deltas as its fixed initial values. The writer
(trained model -> file) is ``backend/train/avatar_writer.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..formats import avatar as avatar_format


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
