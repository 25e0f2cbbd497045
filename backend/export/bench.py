"""Bench ``animate``: blend + skin (and + render) of an avatar, 10k and 70k Gaussians, K = 50.

``blend+skin`` blends all 14 per-Gaussian channels (position, log-scale, rotation, opacity,
colour) of the K blendshapes exactly in float32 and skins positions and rotations;
``blend+skin int8`` blends all but the positions from int8 deltas (positions exact),
``blend+skin int8-all`` all 14 from int8 (see backend/export/animator.py for the error bound);
``blend+skin positions`` only the centres (what backend/formats/animate.py and Blender's shape
keys compute); ``blend+skin+render`` adds the rasterizer (256^2 on CPU, 512^2 on CUDA).
On the CPU every blend+skin case runs with 1 and with 2 threads (the case name says which);
the render cases use torch's default thread count.
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
    default_threads = torch.get_num_threads()
    for threads in (None,) if cuda else (1, 2):
        if threads is not None:
            torch.set_num_threads(threads)
        for n in (10_000, 70_000):
            yield from _case(n, device, name, quick, threads)
        yield from _case(70_000, device, name, quick, threads, moving=MOVING_FRACTION)
    torch.set_num_threads(default_threads)
    for n in (10_000, 70_000):
        yield from _render_case(n, device, name, quick)


# Share of Gaussians with any non-zero blendshape delta in a trained avatar of the built-in head
# model (its expressions are local): 1087 of 8927 (12%) in the cpu-fast run of docs/TRAINING.md.
# FLAME's PCA expressions move the whole face, so the dense case is the worst case.
MOVING_FRACTION = 0.12


def _inputs(n: int, device: str, moving: float = 1.0):
    """Random avatar (a share ``moving`` of it with deltas), expressions and joint transforms."""
    import numpy as np
    import torch

    from ..formats import animate, examples

    avatar = examples.random_avatar(n_gaussians=n, n_expressions=50, sh_degree=0, seed=0)
    if moving < 1.0:
        still = np.random.default_rng(1).random(n) >= moving
        for field in ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits",
                      "delta_sh"):
            getattr(avatar, field)[:, still] = 0
    rng = np.random.default_rng(0)
    expressions = torch.as_tensor(rng.uniform(-1, 1, 50), device=device).float()
    transforms = torch.as_tensor(animate.joint_transforms(
        avatar.joint_positions, avatar.joint_parents, rng.normal(scale=0.1, size=(5, 3))),
        device=device).float()
    return avatar, expressions, transforms


def _case(n: int, device: str, device_name: str, quick: bool, threads: int | None,
          moving: float = 1.0) -> Iterator[BenchRecord]:
    import torch

    from .animator import Animator

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    avatar, expressions, transforms = _inputs(n, device, moving)
    case = f"{n // 1000}k" + (f" ({moving:.0%} moving)" if moving < 1.0 else "")
    if threads is not None:
        case += f", {threads} thread" + ("s" if threads > 1 else "")
    repeats = 5 if quick else 20
    modes = (None,) if device == "cuda" else (None, "int8") if n < 70_000 or moving < 1.0 \
        else (None, "int8", "int8-all")
    for mode in modes:
        animator = Animator.from_avatar(avatar, device, quantize=mode)
        if mode is not None and animator.quantize is None:
            continue  # int8 unavailable here (the animator warned why)
        metric = "blend+skin" + (f" {mode}" if mode else "")
        fps = _fps(animator.frame, expressions, transforms, sync, repeats)
        yield BenchRecord("animate", case, metric, fps, "fps", device_name)
        if mode is None:
            fps = _fps(animator.positions, expressions, transforms, sync, repeats)
            yield BenchRecord("animate", case, "blend+skin positions", fps, "fps", device_name)


def _fps(animate_frame, expressions, transforms, sync, repeats: int) -> float:
    import torch

    @torch.no_grad()
    def once():
        animate_frame(expressions, transforms)
        sync()

    return 1.0 / best_time(once, repeats=repeats, warmup=2)


def _render_case(n: int, device: str, device_name: str, quick: bool) -> Iterator[BenchRecord]:
    import torch

    from ..render import Cameras, Gaussians, render
    from .animator import Animator

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    avatar, expressions, transforms = _inputs(n, device)
    animator = Animator.from_avatar(avatar, device)
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
    yield BenchRecord("animate", f"{n // 1000}k@{size}", "blend+skin+render", 1.0 / seconds, "fps",
                      device_name)


def quantization_errors(avatar, mode: str, expressions, rotations, translations=None) -> dict:
    """Errors of the int8 ``mode`` against the exact animator over frames, after skinning.

    Args:
        avatar: ``backend.formats.avatar.Avatar``.
        mode: "int8" or "int8-all".
        expressions: (T, K); rotations: (T, J, 3) axis-angle; translations: (T, 3) or None.

    Returns:
        {property: (max, mean)}: for "means" the distance in metres, for the others the absolute
        difference per channel (rotations as unit quaternions), the mean over frames and over
        the Gaussians that move in some blendshape.
    """
    import numpy as np
    import torch

    from ..formats import animate
    from .animator import SLICES, Animator

    exact, quantized = Animator.from_avatar(avatar), Animator.from_avatar(avatar, quantize=mode)
    moving = torch.ones(avatar.n_gaussians, dtype=torch.bool)
    if exact.active is not None:
        moving[:] = False
        moving[exact.active] = True
    worst, total = {name: 0.0 for name in SLICES}, {name: 0.0 for name in SLICES}
    for t in range(len(expressions)):
        transforms = torch.as_tensor(animate.joint_transforms(
            avatar.joint_positions, avatar.joint_parents, rotations[t],
            None if translations is None else translations[t])).float()
        psi = torch.as_tensor(np.asarray(expressions[t])).float()
        with torch.no_grad():
            a, b = exact.frame(psi, transforms), quantized.frame(psi, transforms)
        for name in SLICES:
            error = (a[name] - b[name])[moving].double()
            error = error.norm(dim=1) if name == "means" else error.abs()
            worst[name] = max(worst[name], float(error.max()))
            total[name] += float(error.mean())
    return {name: (worst[name], total[name] / len(expressions)) for name in SLICES}


def _print_errors(argv: list[str]) -> None:
    """``python -m backend.export.bench [AVATAR TRACKING]``: int8 errors on the bench's random
    avatar (70k, K = 50, 20 random frames) or on a trained avatar driven by a tracking file."""
    import numpy as np

    from ..formats import avatar as avatar_file
    from ..formats import tracking as tracking_file

    if argv:
        avatar, tracking = avatar_file.read(argv[0]), tracking_file.read(argv[1])
        frames = (tracking.expressions, tracking.joint_rotations, tracking.translation)
        label = f"{argv[0]} ({avatar.n_gaussians} Gaussians, K = {avatar.n_expressions}), {argv[1]}"
    else:
        avatar, _, _ = _inputs(70_000, "cpu")
        rng = np.random.default_rng(3)
        frames = (rng.uniform(-1, 1, (20, 50)), rng.normal(scale=0.1, size=(20, 5, 3)), None)
        label = "bench random avatar (70k Gaussians, K = 50), 20 random frames"
    print(label)
    for mode in ("int8", "int8-all"):
        for name, (worst, mean) in quantization_errors(avatar, mode, *frames).items():
            print(f"  {mode:8s} {name:15s} max {worst:.3g} mean {mean:.3g}")


if __name__ == "__main__":
    import sys

    _print_errors(sys.argv[1:])
