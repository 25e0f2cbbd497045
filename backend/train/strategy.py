"""Adaptive density control in pure torch (the equivalents of gsplat.strategy.ops).

``duplicate``, ``split`` and ``remove`` change the number of Gaussians and update *every*
per-Gaussian tensor of the model (neutral properties, blendshape deltas dG^, dG_init,
consistency scales, LBS weights, mouth flags) and the Adam state (exp_avg, exp_avg_sq) of every
parameter, along dim 0. New Gaussians start with zero Adam moments, as in gsplat. gsplat's own
ops are CUDA-agnostic but need the gsplat package, which the CPU machines do not have; these
functions behave the same on both.

``DensityStrategy`` follows gsplat's DefaultStrategy (no opacity reset, as the 3DGB
configuration): accumulate the screen-space gradient of ``means2d`` while a Gaussian is visible;
every ``every`` steps clone small Gaussians and split large ones whose mean gradient exceeds the
threshold, and prune transparent or huge ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..geometry.rotations import quat_to_matrix
from .config import DensifyConfig
from .hooks import Refresh, TrainingHook
from .model import PARAMETERS, GaussianBlendshapes


@torch.no_grad()
def _apply(model: GaussianBlendshapes, optimizer: torch.optim.Optimizer,
           edit: Callable[[str, torch.Tensor, bool], torch.Tensor]) -> None:
    """Replace every per-Gaussian tensor t by edit(name, t, is_state) and move the Adam state."""
    old = {name: model.params[name] for name in PARAMETERS}
    new = {name: edit(name, value, False) for name, value in model.per_gaussian().items()}
    model.replace_tensors(new)
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            name = next((n for n, p in old.items() if p is param), None)
            if name is None:
                continue
            fresh = model.params[name]
            state = optimizer.state.pop(param, None)
            if state:
                optimizer.state[fresh] = {key: (edit(name, value, True) if torch.is_tensor(value)
                                                and value.dim() > 0 else value)
                                          for key, value in state.items()}
            group["params"][i] = fresh


@torch.no_grad()
def duplicate(model: GaussianBlendshapes, optimizer: torch.optim.Optimizer, mask: torch.Tensor) -> None:
    """Append a copy of the Gaussians selected by ``mask`` (N,) bool."""
    sel = mask.nonzero().squeeze(1)

    def edit(name, value, is_state):
        extra = torch.zeros_like(value[sel]) if is_state else value[sel]
        return torch.cat([value, extra])

    _apply(model, optimizer, edit)


@torch.no_grad()
def split(model: GaussianBlendshapes, optimizer: torch.optim.Optimizer, mask: torch.Tensor,
          generator: torch.Generator | None = None, refresh: Refresh | None = None) -> None:
    """Replace each selected Gaussian by 2 children sampled from it, with scales / 1.6.

    ``refresh(new_means, tensors)`` may update the children's looked-up values (weights and
    consistency scales from the grid) in ``tensors`` in place.
    """
    sel = mask.nonzero().squeeze(1)
    keep = (~mask).nonzero().squeeze(1)
    scales = model.params["log_scales"][sel].exp()
    rot = quat_to_matrix(model.params["quats"][sel])
    noise = torch.randn((2,) + scales.shape, generator=generator).to(scales.device)
    offsets = (rot[None] @ (noise * scales[None])[..., None]).squeeze(-1)  # (2, S, 3)
    child_means = (model.params["means"][sel][None] + offsets).reshape(-1, 3)

    def edit(name, value, is_state):
        children = value[sel].repeat((2,) + (1,) * (value.dim() - 1))
        if is_state:
            children = torch.zeros_like(children)
        elif name == "means":
            children = child_means
        elif name == "log_scales":
            children = children - torch.log(torch.tensor(1.6))
        return torch.cat([value[keep], children])

    _apply(model, optimizer, edit)
    if refresh is not None and len(sel):
        n_new = 2 * len(sel)
        tensors = {name: value[-n_new:] for name, value in model.per_gaussian().items()}
        refresh(child_means, tensors)


@torch.no_grad()
def remove(model: GaussianBlendshapes, optimizer: torch.optim.Optimizer, mask: torch.Tensor) -> None:
    """Delete the Gaussians selected by ``mask`` (N,) bool."""
    keep = (~mask).nonzero().squeeze(1)
    _apply(model, optimizer, lambda name, value, is_state: value[keep])


@dataclass
class DensityStrategy(TrainingHook):
    """gsplat DefaultStrategy-style densification with an explicit state (for checkpoints)."""

    config: DensifyConfig
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    name = "strategy"  # the checkpoint key (a class attribute, not a field)

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)

    def reset(self, n: int, device) -> None:
        self.state = {"grad2d": torch.zeros(n, device=device), "count": torch.zeros(n, device=device)}

    def step_post_backward(self, model: GaussianBlendshapes, optimizer: torch.optim.Optimizer,
                           info: dict, step: int, refresh: Refresh | None = None,
                           generator: torch.Generator | None = None, densify: bool = True) -> dict[str, int]:
        """Accumulate gradients; densify and prune on schedule. Returns counts of what changed.

        Does nothing at all when ``densify`` is False (a phase that keeps the set fixed).
        """
        if not densify:
            return {}
        n = model.n_gaussians
        if not self.state or len(self.state["grad2d"]) != n:
            self.reset(n, model.params["means"].device)
        self._accumulate(info)
        cfg = self.config
        if not (cfg.start <= step <= cfg.stop and step % cfg.every == 0):
            return {}
        counts = self._grow(model, optimizer, refresh, generator)
        counts["pruned"] = self._prune(model, optimizer)
        self.reset(model.n_gaussians, model.params["means"].device)
        return counts

    def _accumulate(self, info: dict) -> None:
        means2d = info["means2d"]
        if means2d.grad is None:
            return
        grads = means2d.grad.detach().clone()  # (B, N, 2)
        grads[..., 0] *= info["width"] / 2.0 * info["n_cameras"]
        grads[..., 1] *= info["height"] / 2.0 * info["n_cameras"]
        visible = (info["radii"] > 0).all(dim=-1)  # (B, N)
        norms = grads.norm(dim=-1) * visible
        self.state["grad2d"] += norms.sum(dim=0)
        self.state["count"] += visible.float().sum(dim=0)

    def _grow(self, model, optimizer, refresh, generator) -> dict[str, int]:
        cfg = self.config
        mean_grad = self.state["grad2d"] / self.state["count"].clamp_min(1)
        candidates = mean_grad > cfg.grad_threshold
        if cfg.max_gaussians:
            room = max(cfg.max_gaussians - model.n_gaussians, 0)
            if int(candidates.sum()) > room // 2:  # splitting adds one, cloning one: keep the best
                order = torch.argsort(mean_grad, descending=True)[: room // 2]
                limited = torch.zeros_like(candidates)
                limited[order] = True
                candidates &= limited
        small = model.params["log_scales"].exp().max(dim=1).values <= cfg.percent_dense * cfg.scene_scale
        is_dupli = candidates & small
        is_split = candidates & ~small
        duplicate(model, optimizer, is_dupli)
        is_split = torch.cat([is_split, torch.zeros(int(is_dupli.sum()), dtype=torch.bool,
                                                    device=is_split.device)])
        split(model, optimizer, is_split, generator, refresh)
        return {"duplicated": int(is_dupli.sum()), "split": int(is_split.sum())}

    def _prune(self, model, optimizer) -> int:
        cfg = self.config
        opacity = torch.sigmoid(model.params["opacity_logits"])
        too_big = model.params["log_scales"].exp().max(dim=1).values > cfg.prune_scale * cfg.scene_scale
        mask = (opacity < cfg.prune_opacity) | too_big
        if int(mask.sum()) >= model.n_gaussians:
            return 0
        remove(model, optimizer, mask)
        return int(mask.sum())
