"""Fast runtime animation of an avatar file: blend (Eq. 1) as one matrix product, then LBS.

The deltas of every blended property are packed into one (K, A*14) matrix over the A Gaussians
that move in some blendshape
(3 position + 3 log-scale + 4 rotation + 1 opacity + 3 colour per Gaussian), so blending K
blendshapes is a vector-matrix product per property block; skinning is an (N, J) x (J, 12)
product.
This is what ``bench animate`` measures and what ``render`` could use at scale.
"""

from __future__ import annotations

import torch

from ..train.geometry import quat_multiply
from ..train.model import skinning_quats

# Blended property -> width in the packed matrix.
LAYOUT = (("means", 3), ("log_scales", 3), ("quats", 4), ("opacity_logits", 1), ("sh_dc", 3))


class Animator:
    """Packed avatar for per-frame blending and skinning.

    The delta matrix holds one contiguous column block per property (all positions first), so
    blending positions alone reads only that block.

    Args:
        base: neutral properties {name: (N, width)} for the names of LAYOUT.
        deltas: blendshape deltas {name: (K, N, width)}.
        lbs_weights: (N, J).
    """

    def __init__(self, base: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor],
                 lbs_weights: torch.Tensor):
        n = base["means"].shape[0]
        k = deltas["means"].shape[0]
        self.base = {name: base[name].reshape(n, width).contiguous() for name, width in LAYOUT}
        # Blendshapes are local (3DGB Eq. 2 keeps a Gaussian's deltas at their initial value, zero
        # for a rigid neighbourhood): only Gaussians with some non-zero delta take part in the
        # product. Exact, and the product shrinks to the moving part of the head.
        moving = torch.zeros(n, dtype=torch.bool, device=base["means"].device)
        for name, width in LAYOUT:
            moving |= deltas[name].reshape(k, n, width).ne(0).any(dim=2).any(dim=0)
        self.active = None if bool(moving.all()) else moving.nonzero().squeeze(1)
        a = n if self.active is None else len(self.active)
        pick = (lambda d: d) if self.active is None else (lambda d: d[:, self.active])
        self.deltas = torch.cat([pick(deltas[name].reshape(k, n, width)).reshape(k, a * width)
                                 for name, width in LAYOUT], dim=1).contiguous()
        self.blocks, start = {}, 0
        for name, width in LAYOUT:
            self.blocks[name] = (start, start + a * width, width)
            start += a * width
        self.lbs_weights = lbs_weights.contiguous()
        self.n, self.n_active = n, a

    @classmethod
    def from_avatar(cls, avatar, device="cpu") -> Animator:
        t = lambda a: torch.as_tensor(a, device=device).float()  # noqa: E731
        n, k = avatar.n_gaussians, avatar.n_expressions
        base = {"means": t(avatar.means), "log_scales": t(avatar.log_scales), "quats": t(avatar.quats),
                "opacity_logits": t(avatar.opacity_logits), "sh_dc": t(avatar.sh[:, 0])}
        deltas = {"means": t(avatar.delta_means), "log_scales": t(avatar.delta_log_scales),
                  "quats": t(avatar.delta_quats), "opacity_logits": t(avatar.delta_opacity_logits),
                  "sh_dc": t(avatar.delta_sh[:, :, 0]).reshape(k, n, 3)}
        still = torch.as_tensor(avatar.mouth, device=device)  # mouth interior: never blended
        deltas = {name: d.masked_fill(still.view(1, n, *([1] * (d.dim() - 2))), 0.0)
                  for name, d in deltas.items()}
        return cls(base, deltas, t(avatar.lbs_weights))

    def blend(self, expressions: torch.Tensor, names=tuple(name for name, _ in LAYOUT)) -> dict:
        """(K,) -> {name: (N, width)} blended properties (Eq. 1), only for ``names``."""
        out = {}
        for name in names:
            start, stop, width = self.blocks[name]
            offsets = (expressions @ self.deltas[:, start:stop]).view(self.n_active, width)
            if self.active is None:
                out[name] = self.base[name] + offsets
            else:
                out[name] = self.base[name].index_add(0, self.active, offsets)
        return out

    def skin(self, blended: dict, transforms: torch.Tensor) -> dict[str, torch.Tensor]:
        """LBS of blended properties with (J, 4, 4) transforms: posed means (and rotations)."""
        per_gaussian = (self.lbs_weights @ transforms[:, :3, :].reshape(-1, 12)).view(-1, 3, 4)
        out = dict(blended)
        out["means"] = torch.einsum("nab,nb->na", per_gaussian[:, :, :3], blended["means"]) \
            + per_gaussian[:, :, 3]
        if "quats" in blended:
            quats = blended["quats"] / blended["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
            out["quats"] = quat_multiply(skinning_quats(self.lbs_weights, transforms), quats)
        return out

    def frame(self, expressions: torch.Tensor, transforms: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every property of one frame, posed."""
        return self.skin(self.blend(expressions), transforms)

    def positions(self, expressions: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
        """Posed Gaussian centres only (what Blender's shape keys + armature compute). (N, 3)."""
        return self.skin(self.blend(expressions, ("means",)), transforms)["means"]
