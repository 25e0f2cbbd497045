"""Bench ``animate``: blend + skin (and + render) of an avatar, 10k and 70k Gaussians, K = 50.

``blend+skin`` blends all 14 per-Gaussian channels (position, log-scale, rotation, opacity,
colour) of the K blendshapes and skins positions and rotations; ``blend+skin positions`` only
the centres (what backend/formats/animate.py and Blender's shape keys compute);
``blend+skin+render`` adds the rasterizer (256^2 on CPU, 512^2 on CUDA).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..bench import BenchRecord, best_time, cpu_device_name


def run(args) -> Iterator[BenchRecord]:
    import torch

    cuda = getattr(args, "device", "auto") in ("auto", "cuda") and torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else cpu_device_name()
    quick = bool(getattr(args, "quick", False))
    if not cuda:
        # Blending is memory-bound: one thread reaches the bandwidth, and a second one only adds
        # contention on a shared 2-core machine (measured: 2 threads were slower).
        torch.set_num_threads(1)
    for n in (10_000, 70_000):
        yield from _case(n, device, name, quick)
    yield from _case(70_000, device, name, quick, moving=MOVING_FRACTION, render_too=False)


# Share of Gaussians with any non-zero blendshape delta in a trained avatar of the built-in head
# model (its expressions are local): 1087 of 8927 (12%) in the cpu-fast run of docs/TRAINING.md.
# FLAME's PCA expressions move the whole face, so the dense case is the worst case.
MOVING_FRACTION = 0.12


def _case(n: int, device: str, device_name: str, quick: bool, moving: float = 1.0,
          render_too: bool = True) -> Iterator[BenchRecord]:
    import numpy as np
    import torch

    from ..formats import animate, examples
    from ..render import Cameras, Gaussians, render
    from .animator import Animator

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    avatar = examples.random_avatar(n_gaussians=n, n_expressions=50, sh_degree=0, seed=0)
    if moving < 1.0:
        still = np.random.default_rng(1).random(n) >= moving
        for field in ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits",
                      "delta_sh"):
            getattr(avatar, field)[:, still] = 0
    animator = Animator.from_avatar(avatar, device)
    rng = np.random.default_rng(0)
    expressions = torch.as_tensor(rng.uniform(-1, 1, 50), device=device).float()
    transforms = torch.as_tensor(animate.joint_transforms(
        avatar.joint_positions, avatar.joint_parents, rng.normal(scale=0.1, size=(5, 3))),
        device=device).float()

    @torch.no_grad()
    def blend_skin():
        posed = animator.frame(expressions, transforms)
        sync()
        return posed

    case = f"{n // 1000}k" + (f" ({moving:.0%} moving)" if moving < 1.0 else "")
    seconds = best_time(blend_skin, repeats=5 if quick else 20, warmup=2)
    yield BenchRecord("animate", case, "blend+skin", 1.0 / seconds, "fps", device_name)
    seconds = best_time(lambda: (animator.positions(expressions, transforms), sync()),
                        repeats=5 if quick else 20, warmup=2)
    yield BenchRecord("animate", case, "blend+skin positions", 1.0 / seconds, "fps", device_name)
    if not render_too:
        return
    size = 512 if cuda else 256
    viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=device))
    viewmat[2, 3] = 0.6
    ks = torch.tensor([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1]], device=device)
    cameras = Cameras(viewmat[None], ks[None], size, size)

    @torch.no_grad()
    def full():
        posed = animator.frame(expressions, transforms)
        render(Gaussians(posed["means"], posed["quats"], posed["log_scales"].exp(),
                         torch.sigmoid(posed["opacity_logits"][:, 0]), posed["sh_dc"][:, None]), cameras)
        sync()

    seconds = best_time(full, repeats=20 if cuda else (1 if quick else 3), warmup=1)
    yield BenchRecord("animate", f"{case}@{size}", "blend+skin+render", 1.0 / seconds, "fps", device_name)
