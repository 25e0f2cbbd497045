"""Bench ``animate``: blend + skin (and + render) of an avatar, 10k and 70k Gaussians, K = 50."""

from __future__ import annotations

from collections.abc import Iterator

from ..bench import BenchRecord, best_time, cpu_device_name


def run(args) -> Iterator[BenchRecord]:
    import numpy as np
    import torch

    from ..formats import animate, examples
    from ..render import Cameras, render
    from .animator import Animator

    cuda = getattr(args, "device", "auto") in ("auto", "cuda") and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else cpu_device_name()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    quick = bool(getattr(args, "quick", False))
    for n in (10_000, 70_000):
        avatar = examples.random_avatar(n_gaussians=n, n_expressions=50, sh_degree=0, seed=0)
        animator = Animator.from_avatar(avatar, device)
        rng = np.random.default_rng(0)
        expressions = torch.as_tensor(rng.uniform(-1, 1, 50), device=device).float()
        rotations = rng.normal(scale=0.1, size=(5, 3))
        transforms = torch.as_tensor(animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                                              rotations), device=device).float()

        def blend_skin():
            animator.frame(expressions, transforms)
            sync()

        repeats = 5 if quick else 20
        seconds = best_time(blend_skin, repeats=repeats, warmup=2)
        case = f"{n // 1000}k"
        yield BenchRecord("animate", case, "blend+skin", 1.0 / seconds, "fps", name)
        if quick and not cuda and n > 10_000:
            continue
        size = 512 if cuda else 256
        viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=device))
        viewmat[2, 3] = 0.6
        focal = 2.0 * size
        ks = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]], device=device)
        cameras = Cameras(viewmat[None], ks[None], size, size)

        @torch.no_grad()
        def full():
            posed = animator.frame(expressions, transforms)
            from ..render import Gaussians

            gaussians = Gaussians(posed["means"], posed["quats"], posed["log_scales"].exp(),
                                  torch.sigmoid(posed["opacity_logits"]), posed["sh_dc"][:, None])
            render(gaussians, cameras)
            sync()

        seconds = best_time(full, repeats=3 if not cuda else 20, warmup=1)
        yield BenchRecord("animate", f"{case}@{size}", "blend+skin+render", 1.0 / seconds, "fps", name)
