"""Bench ``formats``: the cost of the avatar file at product size (70k Gaussians, 50 expressions)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from . import BenchRecord, best_time, cpu_device_name


def run(args) -> Iterator[BenchRecord]:
    from ..formats import avatar, examples

    device = cpu_device_name()
    sizes = ((10_000, 50),) if args.quick else ((10_000, 50), (70_000, 50))
    for n, k in sizes:
        case = f"{n // 1000}k x {k}"
        data = examples.random_avatar(n_gaussians=n, n_expressions=k, sh_degree=3, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "avatar.npz")
            write_s = best_time(lambda p=path, d=data: avatar.write(p, d), 3)
            yield BenchRecord("formats", case, "write", write_s, "s", device)
            yield BenchRecord("formats", case, "read", best_time(lambda p=path: avatar.read(p), 3), "s",
                              device)
