"""Run a build: stages in order, one PipelineProgress stream, then the report."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..fileio import ensure_writable_folder
from ..progress import PipelineProgress
from .build import BuildContext, make_stages
from .report import write_report
from .stages import run_stages

log = logging.getLogger("toonsplat")


def run_build(source: list[str], out: str, style: str = "toon", head_model: str = "builtin",
              landmark_embedding: str | None = None, preset: str = "cpu-fast",
              iters: int | None = None, size: int = 512, device: str = "auto",
              style_strength: float | None = None,
              force: set[str] | None = None, progress_mode: str = "human",
              stop_after: str | None = None, refine_tracking: str = "none",
              eye_contact: str | None = None) -> dict[str, Any]:
    """Build an avatar from ``source`` (prepare's input arguments) into ``out``; resumable.

    ``stop_after`` names the last stage to run (the later ones are left for a later call).
    Returns the paths of the avatar, the tracking, the tracking QA picture and the report.
    """
    out = os.path.abspath(ensure_writable_folder(out))
    ctx = BuildContext(out=out, source=[_absolute_if_path(a) for a in source], style=style,
                       head_model=head_model, landmark_embedding=landmark_embedding,
                       preset=preset, iters=iters, size=size,
                       device=device, style_strength=style_strength,
                       refine_tracking=refine_tracking, eye_contact=eye_contact or None)
    progress = PipelineProgress(progress_mode)
    stages = make_stages(ctx, progress)
    if stop_after:
        names = [s.name for s in stages]
        # Without a style there is no stylize stage: stopping "after it" stops after prepare.
        last = names.index(stop_after) if stop_after in names else names.index("prepare")
        stages = stages[:last + 1]
    progress.total_weight = sum(s.weight for s in stages)
    start = time.monotonic()
    outcomes = run_stages(out, stages, ctx, progress, force or set())
    summary = {
        "title": f"ToonSplat build: {os.path.basename(source[-1])}",
        "inputs": {"source": ctx.source, "style": style, "head_model": head_model, "preset": preset,
                   "iters": iters, "size": size},
        "seconds": round(time.monotonic() - start, 1),
        "stages": [{"name": o.name, "skipped": o.skipped, "seconds": round(o.seconds, 1),
                    "metrics": o.metrics} for o in outcomes],
    }
    paths = write_report(out, summary, _picture_rows(ctx))
    return {"out": out, "avatar": ctx.path("avatar.npz"),
            "tracking": os.path.join(ctx.data, "tracking.npz"),
            "qa": os.path.join(ctx.data, "qa", "landmarks.png"), "report_html": paths["html"]}


def _absolute_if_path(argument: str) -> str:
    return os.path.abspath(argument) if os.path.exists(argument) else argument


def _picture_rows(ctx: BuildContext) -> list[list[tuple[str, str]]]:
    """Input | stylized | avatar rows from the held-out evaluation pictures, else first frames."""
    eval_dir = os.path.join(ctx.train_dir, "eval")
    rows = []
    frames = sorted(os.listdir(os.path.join(ctx.data, "frames")))[:1] if os.path.isdir(
        os.path.join(ctx.data, "frames")) else []
    for name in frames:
        rows.append([("input", os.path.join(ctx.data, "frames", name)),
                     ("stylized", os.path.join(ctx.data, "stylized", name))])
    if os.path.isdir(eval_dir):
        pictures = sorted(n for n in os.listdir(eval_dir) if n.endswith(".png"))[:3]
        rows += [[("held-out: target | avatar | error", os.path.join(eval_dir, n))] for n in pictures]
    return rows
