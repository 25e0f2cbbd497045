"""Run a build: stages in order, one PipelineProgress stream, then the report."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..fileio import ensure_writable_folder
from ..formats.options import BuildOptions
from ..formats.prepared import FRAMES, STYLIZED
from ..progress import PipelineProgress
from .build import Build, make_stages
from .report import write_report
from .stages import run_stages

log = logging.getLogger("toonsplat")


def run_build(options: BuildOptions, progress_mode: str = "human") -> dict[str, Any]:
    """Build an avatar as ``options`` say into ``options.out``; resumable.

    ``options.stop_after`` names the last stage to run (the later ones are left for a later
    call). Returns the paths of the avatar, the tracking, the tracking QA picture and the report.
    """
    build = Build(options, os.path.abspath(ensure_writable_folder(options.out)))
    progress = PipelineProgress(progress_mode)
    stages = make_stages(build, progress)
    if options.stop_after:
        names = [s.name for s in stages]
        # Without a style there is no stylize stage: stopping "after it" stops after prepare.
        last = names.index(options.stop_after) if options.stop_after in names else \
            names.index("prepare")
        stages = stages[:last + 1]
    progress.total_weight = sum(s.weight for s in stages)
    start = time.monotonic()
    outcomes = run_stages(build.out, stages, build, progress, set(options.force))
    source = options.prepare.source()
    summary = {
        "title": f"ToonSplat build: {os.path.basename(os.path.normpath(source))}",
        "inputs": {"source": os.path.abspath(source), "style": options.style.style,
                   "head_model": options.prepare.track.head_model,
                   "preset": options.train.preset, "iters": options.train.iters,
                   "size": options.prepare.size},
        "seconds": round(time.monotonic() - start, 1),
        "stages": [{"name": o.name, "skipped": o.skipped, "seconds": round(o.seconds, 1),
                    "metrics": o.metrics} for o in outcomes],
    }
    paths = write_report(build.out, summary, _picture_rows(build))
    exported = build.path("tracking.npz")  # export's copy; before export, train's or prepare's
    tracking = exported if os.path.exists(exported) else build.tracking
    return {"out": build.out, "avatar": build.path("avatar.npz"), "tracking": tracking,
            "qa": os.path.join(build.data.qa, "landmarks.png"), "report_html": paths["html"]}


def _picture_rows(build: Build) -> list[list[tuple[str, str]]]:
    """Input | stylized | avatar rows from the held-out evaluation pictures, else first frames."""
    eval_dir = os.path.join(build.train_dir, "eval")
    rows = [[("input", build.data.image_path(FRAMES, 0)),
             ("stylized", build.data.image_path(STYLIZED, 0))]] if build.data.count(FRAMES) else []
    if os.path.isdir(eval_dir):
        pictures = sorted(n for n in os.listdir(eval_dir) if n.endswith(".png"))[:3]
        rows += [[("held-out: target | avatar | error", os.path.join(eval_dir, n))] for n in pictures]
    return rows
