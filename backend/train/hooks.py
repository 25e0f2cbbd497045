"""What runs around each training step besides render, loss and Adam: the trainer's hooks.

A hook has the interface of a densification strategy (gsplat's ``Strategy``): called before
backward, it may add a loss term; called after backward, it may edit gradients or the Gaussian
set; its state is a dict saved in the checkpoint under ``name``. The trainer calls every hook in
its list at the same points and knows none of them by name. ``DensityStrategy`` (strategy.py)
and ``OneShotHook`` (oneshot.py) are the two; ``training_hooks`` picks them from the config.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Refresh = Callable[[torch.Tensor, dict[str, torch.Tensor]], None]


class TrainingHook:
    """The hook interface; every method does nothing until a hook overrides it."""

    name = "hook"  # key of the hook's state in the checkpoint

    def initialize(self, model, frame_transforms: torch.Tensor) -> None:
        """A fresh run: the avatar is built, the optimizer not yet.

        Args:
            model: the new GaussianBlendshapes. frame_transforms: (T, J, 4, 4) skinning
                transforms of every tracked frame.
        """

    def background(self, background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The background colour (3,) the next step renders and composites its target on."""
        return background

    def step_pre_backward(self, model, optimizer: torch.optim.Optimizer, info: dict, step: int) -> None:
        """After the render of step ``step``, before its backward pass."""

    def extra_loss(self, model) -> torch.Tensor | None:
        """A term added to the step's loss (None for none)."""
        return None

    def step_post_backward(self, model, optimizer: torch.optim.Optimizer, info: dict, step: int,
                           refresh: Refresh | None = None, generator: torch.Generator | None = None,
                           densify: bool = True) -> dict[str, int]:
        """After the backward pass, before the optimizer step. ``densify`` is False in phases that
        keep the Gaussian set fixed. Returns counts of what changed."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned (a resumed run)."""


def training_hooks(config, data, head) -> list[TrainingHook]:
    """The hooks a TrainConfig asks for: one-shot mode's (which keeps the Gaussian set fixed) or
    the density strategy.

    Args:
        config: TrainConfig. data: the run's FrameData. head: its HeadModel.
    """
    if config.oneshot.enabled:
        from .oneshot import OneShotHook

        return [OneShotHook(config.oneshot, data, head)]
    from .strategy import DensityStrategy

    return [DensityStrategy(config.densify)]
