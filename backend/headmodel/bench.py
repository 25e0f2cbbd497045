"""Bench ``head-model``: the batched forward (blend shapes, correctives, LBS, landmarks) on CPU."""

from __future__ import annotations

from collections.abc import Iterator


def run(args) -> Iterator:
    import torch

    from ..bench import BenchRecord, best_time, cpu_device_name
    from . import load_head_model

    model = load_head_model("builtin")
    device = cpu_device_name()
    for batch in ((16,) if getattr(args, "quick", False) else (16, 256)):
        generator = torch.Generator().manual_seed(0)
        inputs = {"shape": torch.randn(batch, model.n_shape, generator=generator),
                  "expression": torch.randn(batch, model.n_expressions, generator=generator),
                  "joint_rotations": 0.2 * torch.randn(batch, 5, 3, generator=generator),
                  "translation": torch.randn(batch, 3, generator=generator)}
        case = f"builtin {model.n_vertices}v x {batch}"
        with torch.no_grad():
            seconds = best_time(lambda inputs=inputs: model(**inputs), repeats=5)
        yield BenchRecord("head-model", case, "forward", seconds * 1000, "ms", device)
        inputs["expression"].requires_grad_(True)
        step = lambda inputs=inputs: model(**inputs).vertices.square().sum().backward()
        yield BenchRecord("head-model", case, "forward+backward", best_time(step, repeats=3) * 1000,
                          "ms", device)
