"""Bench ``raster``: forward and forward+backward of head-sized clouds at 256^2 and 512^2.

Two kinds of cloud:

- ``10k@256`` etc.: Gaussians on and just under an ellipsoidal head surface (semi-axes 8 x 11 x
  10 cm), scales 2-5 mm, opacities 0.3-0.99, seen from 0.6 m with the head filling ~75% of the image.
- ``avatar8k@256`` etc.: what CPU training renders: Gaussians spread over the built-in head model's
  surface (area-weighted), scales 3-8 mm so each overlaps many neighbours, opacities 0.05-0.95
  mostly low (training is semi-transparent for long), seen like a tracked frame (0.65 m, focal
  2.1 x size, the head with its neck filling the image). Far more pairs per pixel are composited
  before the early stop than in the ellipsoid cloud.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from ..bench import BenchRecord, cpu_device_name

CASES = (("head", 10_000, 256), ("head", 50_000, 256), ("head", 10_000, 512), ("head", 50_000, 512),
         ("avatar", 8_000, 128), ("avatar", 8_000, 256))  # + 70k@512 on CUDA
QUICK_CASES = (("head", 10_000, 256), ("head", 50_000, 256), ("avatar", 8_000, 256))


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


def avatar_cloud(n: int, seed: int = 0, device="cpu"):
    """N Gaussians over the built-in head model's surface, like a young trained avatar (SH degree 3).

    Positions are area-weighted samples of the template mesh's triangles, pushed along the normal by
    up to +-1 mm; scales are 3-8 mm per axis; opacities 0.05-0.95, median 0.28. (A cpu-fast avatar
    trained on the synthetic subject, 8.9k Gaussians: scales median 5.3 mm, 5-95% 1.3-9.4 mm;
    opacities median 0.20; 148k pairs at 256^2 where this cloud gives about as many.)
    """
    import torch

    from ..headmodel import load_head_model
    from . import Gaussians

    head = load_head_model("builtin")
    vertices, faces = head.v_template.detach(), head.faces
    corners = vertices[faces]  # (F, 3, 3)
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=generator)
    face = torch.multinomial(normals.norm(dim=-1), n, replacement=True, generator=generator)
    u, v = rand(n, 1), rand(n, 1)
    flip = (u + v) > 1.0
    u, v = torch.where(flip, 1.0 - u, u), torch.where(flip, 1.0 - v, v)
    tri = corners[face]
    means = tri[:, 0] + u * (tri[:, 1] - tri[:, 0]) + v * (tri[:, 2] - tri[:, 0])
    unit_normals = torch.nn.functional.normalize(normals[face], dim=-1)
    means = means + unit_normals * (rand(n, 1) - 0.5) * 0.002
    scales = torch.exp(math.log(0.003) + (math.log(0.008) - math.log(0.003)) * rand(n, 3))
    quats = torch.randn(n, 4, generator=generator)
    opacities = 0.05 + 0.9 * rand(n) ** 2
    sh = 0.2 * torch.randn(n, 16, 3, generator=generator)
    sh[:, 0] = (rand(n, 3) - 0.5) * 2.0
    tensors = [t.to(device) for t in (means, quats, scales, opacities, sh)]
    return Gaussians(*tensors)


def avatar_camera(size: int, device="cpu"):
    """A tracked-frame-like camera: 0.65 m in front of the head model's centre, focal 2.1 x size."""
    import torch

    from . import Cameras

    viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    viewmat[:3, 3] = torch.tensor([0.0, -0.03, 0.65 - 0.03])  # centre (0, -3, -3) cm
    focal = 2.1 * size
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    return Cameras(viewmat[None].to(device), K[None].to(device), size, size)


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
    cases = QUICK_CASES if args.quick else CASES + ((("head", 70_000, 512),) if device == "cuda" else ())
    for cloud, n, size in cases:
        yield from _bench_case(cloud, n, size, device, name, repeats * (4 if device == "cuda" else 1),
                               warmup)


def make_case(cloud: str, n: int, size: int, device="cpu"):
    """(Gaussians, Cameras, case name) of a bench case; ``cloud`` is "head" or "avatar"."""
    if cloud == "avatar":
        gaussians, cameras = avatar_cloud(n, device=device), avatar_camera(size, device=device)
        return gaussians, cameras, f"avatar{n // 1000}k@{size}"
    return head_cloud(n, device=device), face_camera(size, device=device), f"{n // 1000}k@{size}"


def _bench_case(cloud: str, n: int, size: int, device: str, name: str, repeats: int,
                warmup: int) -> Iterator[BenchRecord]:
    """forward and forward+backward of ``n`` Gaussians at ``size``^2 on ``device``."""
    import torch

    from . import Gaussians, render

    gaussians, cameras, case = make_case(cloud, n, size, device)
    backend = render(gaussians, cameras).info["backend"]
    label = f"{name}, {backend}"

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
