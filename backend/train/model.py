"""The Gaussian blendshape avatar (3DGB): neutral Gaussians B0, blendshapes dB_k, mouth Gaussians.

Every per-Gaussian tensor has the Gaussian index in dim 0, so densification can treat them all
alike (``strategy.py``). Blendshape tensors are (N, K, ...):

* ``init_*`` buffers: dB_init from the deformation gradients (Eq. 2's constant term);
* ``delta_*`` parameters: the optimized dG^ of Eq. 2, initialized to zero;
* ``consistency`` buffer (N, K): max(f(d), 0), zero for mouth Gaussians, so their deltas vanish.

``blend`` computes B_psi = B0 + sum_k psi_k dB_k for all properties in one batched operation;
``skin`` applies the head model's joint transforms (LBS) to positions and rotations; ``gaussians``
returns the activated Gaussians for the rasterizer with view-dependent colour evaluated in each
Gaussian's rest frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry.rotations import matrix_to_quat, quat_multiply
from .sh import eval_sh

PARAMETERS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest",
              "delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits", "delta_sh")
BUFFERS = ("init_means", "init_quats", "consistency", "lbs_weights", "mouth")
# Blended property -> (neutral parameter, delta parameter, init buffer or None)
BLENDED = {
    "means": ("means", "delta_means", "init_means"),
    "log_scales": ("log_scales", "delta_log_scales", None),
    "quats": ("quats", "delta_quats", "init_quats"),
    "opacity_logits": ("opacity_logits", "delta_opacity_logits", None),
    "sh_dc": ("sh_dc", "delta_sh", None),
}


def skinning_quats(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-Gaussian skinning rotations as normalized weighted sums of the joints' quaternions.

    Quaternion linear blending: cheap (an (N, J) x (J, 4) product) and close to orthonormalizing
    the blended matrix for the small relative rotations of a head rig. All joint quaternions
    have w >= 0, so they lie in one hemisphere and blend without sign flips.

    Args:
        weights: (N, J); transforms: (J, 4, 4).

    Returns:
        (N, 4) unit quaternions, wxyz.
    """
    joint_quats = matrix_to_quat(transforms[:, :3, :3])
    blended = weights @ joint_quats
    return blended / blended.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class Blended:
    """One frame's Gaussians after blending (rest space) or after skinning (posed space)."""

    means: torch.Tensor           # (N, 3)
    log_scales: torch.Tensor      # (N, 3)
    quats: torch.Tensor           # (N, 4) unit
    opacity_logits: torch.Tensor  # (N,)
    sh: torch.Tensor              # (N, C, 3)
    rest_rotations: torch.Tensor | None = None  # (N, 3, 3) skinning rotation, after ``skin``


class GaussianBlendshapes(torch.nn.Module):
    """Learnable avatar. Build it with ``backend.train.init.initialize_avatar``."""

    def __init__(self, tensors: dict[str, torch.Tensor], joint_parents: tuple[int, ...],
                 sh_degree: int):
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {name: torch.nn.Parameter(tensors[name].float().contiguous()) for name in PARAMETERS})
        for name in BUFFERS:
            self.register_buffer(name, tensors[name])
        self.joint_parents = tuple(joint_parents)
        self.sh_degree = int(sh_degree)

    # -- sizes ----------------------------------------------------------------------------------
    @property
    def n_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.params["delta_means"].shape[1])

    def per_gaussian(self) -> dict[str, torch.Tensor]:
        """Every per-Gaussian tensor (parameters and buffers) by name."""
        out = {name: self.params[name] for name in PARAMETERS}
        out.update({name: getattr(self, name) for name in BUFFERS})
        return out

    # -- Eq. 2 and Eq. 1 ------------------------------------------------------------------------
    def deltas(self, name: str) -> torch.Tensor:
        """dG = dG_init + max(f(d), 0) * dG^ for one blended property: (N, K, ...)."""
        _, delta_name, init_name = BLENDED[name]
        hat = self.params[delta_name]
        scale = self.consistency.reshape(self.consistency.shape + (1,) * (hat.dim() - 2))
        delta = scale * hat
        return delta if init_name is None else delta + getattr(self, init_name)

    def blend(self, expressions: torch.Tensor) -> Blended:
        """B_psi = B0 + sum_k psi_k dB_k (Eq. 1) for every property at once.

        Args:
            expressions: (K,) coefficients psi of one frame.

        Returns:
            ``Blended`` in rest space (quaternions normalized, SH with blended DC band).
        """
        if expressions.shape != (self.n_expressions,):
            raise ValueError(f"expected {self.n_expressions} expression coefficients, got "
                             f"{tuple(expressions.shape)}")
        out = {}
        psi_scaled = self.consistency * expressions[None, :]  # (N, K)
        for name, (base, delta_name, init_name) in BLENDED.items():
            hat = self.params[delta_name]
            flat = hat.reshape(hat.shape[0], hat.shape[1], -1)
            value = torch.einsum("nk,nkc->nc", psi_scaled, flat)
            if init_name is not None:
                init = getattr(self, init_name)
                value = value + torch.einsum("k,nkc->nc", expressions,
                                             init.reshape(init.shape[0], init.shape[1], -1))
            out[name] = self.params[base] + value.reshape(self.params[base].shape)
        quats = out["quats"] / out["quats"].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sh = torch.cat([out["sh_dc"], self.params["sh_rest"]], dim=1)
        return Blended(out["means"], out["log_scales"], quats, out["opacity_logits"], sh)

    def skin(self, blended: Blended, transforms: torch.Tensor) -> Blended:
        """LBS of the blended Gaussians with one frame's joint transforms.

        Args:
            blended: rest-space Gaussians of this frame.
            transforms: (J, 4, 4) skinning transforms from the head model (posed = A @ rest).

        Returns:
            posed ``Blended`` with ``rest_rotations`` (N, 3, 3) set.
        """
        per_gaussian = torch.einsum("nj,jab->nab", self.lbs_weights, transforms)  # (N, 4, 4)
        linear = per_gaussian[:, :3, :3]
        means = (linear @ blended.means[:, :, None]).squeeze(-1) + per_gaussian[:, :3, 3]
        rotation = skinning_quats(self.lbs_weights, transforms)
        quats = quat_multiply(rotation, blended.quats)
        return Blended(means, blended.log_scales, quats, blended.opacity_logits, blended.sh,
                       rest_rotations=linear)

    def gaussians(self, expressions: torch.Tensor, transforms: torch.Tensor,
                  camera_center: torch.Tensor, sh_degree: int | None = None):
        """Activated, posed Gaussians of one frame, ready for ``backend.render.render``.

        Args:
            expressions: (K,); transforms: (J, 4, 4); camera_center: (3,) in head space.
            sh_degree: SH bands to evaluate (defaults to the model's degree).

        Returns:
            (``backend.render.Gaussians`` with degree-0 colours, posed ``Blended``).
        """
        from ..render import Gaussians

        posed = self.skin(self.blend(expressions), transforms)
        degree = self.sh_degree if sh_degree is None else sh_degree
        if degree == 0:
            sh0 = posed.sh[:, :1]
        else:
            view = posed.means - camera_center
            view = view / view.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            rest_view = (posed.rest_rotations.transpose(1, 2) @ view[:, :, None]).squeeze(-1)
            rest_view = rest_view / rest_view.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            rgb = eval_sh(posed.sh, rest_view, degree)
            sh0 = ((rgb - 0.5) / 0.28209479177387814)[:, None]
        return Gaussians(means=posed.means, quats=posed.quats, scales=posed.log_scales.exp(),
                         opacities=torch.sigmoid(posed.opacity_logits), sh=sh0), posed

    # -- state ----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """Detached copies of every per-Gaussian tensor (for checkpoints)."""
        return {name: value.detach().clone() for name, value in self.per_gaussian().items()}

    def replace_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Swap in new per-Gaussian tensors (after densification); parameters stay Parameters."""
        for name in PARAMETERS:
            self.params[name] = torch.nn.Parameter(tensors[name].contiguous())
        for name in BUFFERS:
            setattr(self, name, tensors[name])
