"""Render speed of an animated avatar: blend + skinning + rasterization per frame (issue 24).

    python scripts/gpu_render_speed.py --device cuda --n 70000 --size 512 --json speed.json
    python scripts/gpu_render_speed.py --device cuda --avatar OUT/avatar.npz --tracking DATA/tracking.npz ...

The synthetic case is ``bench animate``'s (backend/export/bench.py): a random 70k-Gaussian avatar
with K = 50 blendshapes (``formats.examples.random_avatar``, SH degree 0) seen by that bench's
camera, animated by ``export.animator.Animator`` (exact float32) and rendered by
``backend.render.render`` (gsplat on CUDA). Unlike the bench, which keeps the best of 20 single
frames, it plays ``--frames`` different frames (new expressions and joint rotations each) and
reports the mean over all of them, twice: ``pipelined`` (one synchronization at the end, as a
player that never reads pixels back) and ``synced`` (a synchronization after every frame).
Stages alone: ``blend+skin`` and ``rasterization`` (the posed Gaussians of one frame).

With ``--avatar`` (a trained avatar file) and ``--tracking``, the same for that avatar driven by
the tracked frames, rendered from the tracked cameras at the tracking's image size; its colours
are the blended SH degree-0 band, as the animator gives (``render`` evaluates every band).
Peak GPU memory is torch.cuda.max_memory_allocated over the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--n", type=int, default=70_000,
                        help="Gaussians of the synthetic avatar (0: only --avatar)")
    parser.add_argument("--size", type=int, default=512, help="image side of the synthetic case")
    parser.add_argument("--frames", type=int, default=300, help="timed frames per measurement")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--avatar", help="a trained avatar.npz (optional second case)")
    parser.add_argument("--tracking", help="tracking.npz that drives --avatar")
    parser.add_argument("--json", required=True, help="JSON to write (a list of rows)")
    return parser.parse_args(argv)


def synthetic_case(n: int, size: int, frames: int, device: str):
    """bench animate's avatar and camera, with ``frames`` random poses and expressions."""
    import numpy as np
    import torch

    from backend.formats import animate, examples
    from backend.render import Cameras

    avatar = examples.random_avatar(n_gaussians=n, n_expressions=50, sh_degree=0, seed=0)
    rng = np.random.default_rng(0)
    expressions = torch.as_tensor(rng.uniform(-1, 1, (frames, 50)), device=device).float()
    transforms = torch.as_tensor(np.stack([
        animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                 rng.normal(scale=0.1, size=(5, 3))) for _ in range(frames)]),
        device=device).float()
    viewmat = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=device))
    viewmat[2, 3] = 0.6
    ks = torch.tensor([[2.0 * size, 0, size / 2], [0, 2.0 * size, size / 2], [0, 0, 1]], device=device)
    cameras = [Cameras(viewmat[None], ks[None], size, size)] * frames
    return avatar, expressions, transforms, cameras


def tracked_case(avatar_path: str, tracking_path: str, frames: int, device: str):
    """A trained avatar driven by the tracked frames (cycled), seen by the tracked cameras."""
    import numpy as np
    import torch

    from backend.formats import animate
    from backend.formats import avatar as avatar_file
    from backend.formats import tracking as tracking_file
    from backend.render import Cameras

    avatar, tracking = avatar_file.read(avatar_path), tracking_file.read(tracking_path)
    order = np.arange(frames) % tracking.n_frames
    k = avatar.n_expressions
    expressions = torch.as_tensor(tracking.expressions[order, :k], device=device).float()
    transforms = torch.as_tensor(np.stack([
        animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                 tracking.joint_rotations[t], tracking.translation[t]) for t in order]),
        device=device).float()
    width, height = (int(v) for v in tracking.image_size)
    viewmats = torch.as_tensor(tracking.extrinsics[order], device=device).float()
    ks = torch.as_tensor(tracking.intrinsics[order], device=device).float()
    cameras = [Cameras(viewmats[i:i + 1], ks[i:i + 1], width, height) for i in range(frames)]
    return avatar, expressions, transforms, cameras


def measure(label: str, avatar, expressions, transforms, cameras, warmup: int, device: str) -> dict:
    """Mean frame times of blend+skin, rasterization and the whole frame over the given frames."""
    import torch

    from backend.export.animator import Animator
    from backend.render import Gaussians, render

    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    animator = Animator.from_avatar(avatar, device)
    frames = len(cameras)

    def gaussians(posed):
        return Gaussians(posed["means"], posed["quats"], posed["log_scales"].exp(),
                         torch.sigmoid(posed["opacity_logits"][:, 0]), posed["sh_dc"][:, None])

    def blend(i):
        return animator.frame(expressions[i], transforms[i])

    posed0 = {k: v.clone() for k, v in blend(0).items()}

    def raster(i):
        return render(gaussians(posed0), cameras[i])

    def full(i):
        return render(gaussians(blend(i)), cameras[i])

    @torch.no_grad()
    def timed(step, synced: bool) -> float:
        for i in range(min(warmup, frames)):
            step(i)
        sync()
        start = time.perf_counter()
        for i in range(frames):
            step(i)
            if synced:
                sync()
        sync()
        return (time.perf_counter() - start) / frames

    with torch.no_grad():
        sample = full(0)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    row = {"case": label, "n_gaussians": int(avatar.n_gaussians), "n_expressions": int(avatar.n_expressions),
           "width": int(cameras[0].width), "height": int(cameras[0].height), "frames": frames,
           "backend": sample.info.get("backend"), "mean_alpha": round(float(sample.alpha.mean()), 4)}
    for name, step in (("blend+skin", blend), ("rasterization", raster), ("blend+skin+render", full)):
        for mode, synced in (("pipelined", False), ("synced", True)):
            seconds = timed(step, synced)
            row[f"{name} {mode} ms"] = round(seconds * 1e3, 4)
            row[f"{name} {mode} fps"] = round(1.0 / seconds, 1)
    if cuda:
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
        row["device"] = torch.cuda.get_device_name()
    else:
        row["device"] = f"cpu ({os.cpu_count()} cores)"
    print(f"{label}: {row['n_gaussians']} Gaussians at {row['width']}x{row['height']} ({row['backend']}): "
          f"blend+skin+render {row['blend+skin+render pipelined fps']} fps pipelined, "
          f"{row['blend+skin+render synced fps']} fps synced; rasterization alone "
          f"{row['rasterization pipelined fps']} fps; blend+skin alone {row['blend+skin pipelined fps']} fps",
          flush=True)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    rows = []
    if args.n > 0:
        rows.append(measure(f"synthetic {args.n // 1000}k@{args.size}",
                            *synthetic_case(args.n, args.size, args.frames, args.device), args.warmup,
                            args.device))
    if args.avatar:
        rows.append(measure("trained avatar, tracked frames",
                            *tracked_case(args.avatar, args.tracking, args.frames, args.device),
                            args.warmup, args.device))
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
