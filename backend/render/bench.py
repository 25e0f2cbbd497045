"""Bench ``raster``: forward and forward+backward of a head-sized cloud at 256^2 and 512^2.

The cloud is what training renders: Gaussians on and just under an ellipsoidal head surface
(semi-axes 8 x 11 x 10 cm), scales 2-5 mm, seen from 0.6 m with the head filling ~75% of the image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from ..bench import BenchRecord, cpu_device_name

CASES = ((10_000, 256), (50_000, 256), (10_000, 512), (50_000, 512))  # + 70k@512 on CUDA
QUICK_CASES = ((10_000, 256), (50_000, 256))


def head_cloud(n: int, seed: int = 0, device="cpu"):
    """N Gaussians shaped like a head: ``Gaussians`` with SH degree 3, float32, on ``device``."""
    import torch

    from . import Gaussians

    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=generator)
    directions = torch.randn(n, 3, generator=generator)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    depth_below_surface = 1.0 - 0.15 * rand(n) ** 2
    means = directions * torch.tensor([0.08, 0.11, 0.10]) * depth_below_surface[:, None]
    scales = torch.exp(math.log(0.002) + (math.log(0.005) - math.log(0.002)) * rand(n, 3))
    quats = torch.randn(n, 4, generator=generator)
    opacities = 0.3 + 0.69 * rand(n)
    sh = 0.2 * torch.randn(n, 16, 3, generator=generator)
    sh[:, 0] = (rand(n, 3) - 0.5) * 2.0
    tensors = [t.to(device) for t in (means, quats, scales, opacities, sh)]
    return Gaussians(*tensors)


def face_camera(size: int, device="cpu"):
    """A camera 0.6 m in front of the face (+Z), focal length such that the head fills ~75%."""
    import torch

    from . import Cameras

    viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    viewmat[2, 3] = 0.6
    focal = 0.75 * size * 0.6 / 0.22
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    return Cameras(viewmat[None].to(device), K[None].to(device), size, size)


def run(args) -> Iterator[BenchRecord]:
    import torch

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else \
        f"{cpu_device_name()}, {torch.get_num_threads()} torch threads"
    repeats, warmup = (1, 1) if args.quick else (5, 1)
    cases = QUICK_CASES if args.quick else CASES + (((70_000, 512),) if device == "cuda" else ())
    for n, size in cases:
        yield from _bench_case(n, size, device, name, repeats * (4 if device == "cuda" else 1), warmup)


def _bench_case(n: int, size: int, device: str, name: str, repeats: int,
                warmup: int) -> Iterator[BenchRecord]:
    """forward and forward+backward of ``n`` Gaussians at ``size``^2 on ``device``."""
    import torch

    from . import Gaussians, render

    gaussians, cameras = head_cloud(n, device=device), face_camera(size, device=device)
    backend = render(gaussians, cameras).info["backend"]
    case, label = f"{n // 1000}k@{size}", f"{name}, {backend}"

    def forward():
        with torch.no_grad():
            render(gaussians, cameras).rgb.sum().item()

    def forward_backward():
        params = [t.detach().requires_grad_(True) for t in
                  (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.sh)]
        out = render(Gaussians(*params), cameras)
        (out.rgb.sum() + out.depth.sum()).backward()
        params[0].grad.sum().item()

    unit, scale = ("ms", 1e3) if device == "cuda" else ("s", 1.0)
    yield BenchRecord("raster", case, "forward", scale * _best(forward, repeats, warmup, device), unit,
                      label)
    yield BenchRecord("raster", case, "forward+backward",
                      scale * _best(forward_backward, repeats, warmup, device), unit, label)


def _best(fn, repeats: int, warmup: int, device: str) -> float:
    """Minimum wall time in seconds, synchronizing CUDA around each run."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)
