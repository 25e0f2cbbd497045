"""Resumable stages: a stage is skipped when its outputs are complete, unchanged and valid.

After a stage succeeds, a marker ``OUT/.build/<stage>.json`` records the stage's parameters and
a fingerprint (size + SHA-256) of each of its output files. On a re-run the stage is skipped only
if the marker exists, the parameters are the same, every output still has the recorded fingerprint
and the stage's own validator accepts them; otherwise the stage runs again (and every later stage
with it). A stage that fails or is interrupted writes no marker, so the next run redoes it; outputs
of earlier stages are left as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError, ToonSplatError
from ..fileio import read_json, write_json

log = logging.getLogger("toonsplat")

MARKER_DIR = ".build"


class StageError(ToonSplatError):
    """A stage failed: the message names the stage, its input and what to do."""


@dataclass
class Stage:
    """One step of the pipeline.

    ``run(context)`` does the work and returns the output paths (relative to the build folder)
    to fingerprint plus a dict of metrics for the report. ``validate(context)`` raises if the
    outputs cannot be used (e.g. a contract file fails to read). ``weight`` is the stage's share of
    the overall time, for the overall ETA. ``fresh(context)``, if given, discards what the stage
    would resume from (a training checkpoint); it is called when the stage runs after an earlier
    stage ran in the same invocation, or when it is forced: its old partial state may no longer
    match its inputs. A stage that was only left unfinished (its inputs kept) is not made fresh.
    """

    name: str
    run: Callable[[Any], tuple[list[str], dict[str, Any]]]
    validate: Callable[[Any], None]
    params: Callable[[Any], dict[str, Any]]
    weight: float = 1.0
    hint: str = ""
    fresh: Callable[[Any], None] | None = None


@dataclass
class StageOutcome:
    name: str
    skipped: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def fingerprint(path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def expand_outputs(root: str, outputs: Iterable[str]) -> list[str]:
    """Relative output paths, with folders expanded to the files inside them (sorted)."""
    files: list[str] = []
    for relative in outputs:
        full = os.path.join(root, relative)
        if os.path.isdir(full):
            for folder, _, names in os.walk(full):
                files += [os.path.relpath(os.path.join(folder, n), root) for n in names
                          if not n.startswith(".tmp-")]
        else:
            files.append(relative)
    return sorted(files)


def _marker_path(root: str, name: str) -> str:
    return os.path.join(root, MARKER_DIR, f"{name}.json")


def is_complete(root: str, stage: Stage, context: Any) -> tuple[bool, str]:
    """Whether ``stage`` can be skipped, and why not if it cannot."""
    marker_file = _marker_path(root, stage.name)
    if not os.path.exists(marker_file):
        return False, "not run yet"
    try:
        marker = read_json(marker_file, "stage marker")
    except ToonSplatError:
        return False, "its marker is unreadable"
    if marker.get("params") != json.loads(json.dumps(stage.params(context), default=str)):
        return False, "its parameters changed"
    for relative, recorded in marker.get("outputs", {}).items():
        full = os.path.join(root, relative)
        if not os.path.exists(full):
            return False, f"{relative} is missing"
        if os.path.getsize(full) != recorded["size"] or fingerprint(full) != recorded:
            return False, f"{relative} changed or is corrupted"
    try:
        stage.validate(context)
    except (FormatError, ToonSplatError, OSError, ValueError) as exc:
        return False, f"its outputs are invalid ({exc})"
    return True, "complete"


def mark_complete(root: str, stage: Stage, context: Any, outputs: list[str],
                  metrics: dict[str, Any], seconds: float) -> None:
    files = expand_outputs(root, outputs)
    marker = {"stage": stage.name, "params": stage.params(context), "seconds": round(seconds, 2),
              "metrics": metrics, "outputs": {f: fingerprint(os.path.join(root, f)) for f in files}}
    os.makedirs(os.path.join(root, MARKER_DIR), exist_ok=True)
    write_json(_marker_path(root, stage.name), marker)


def clear_marker(root: str, name: str) -> None:
    path = _marker_path(root, name)
    if os.path.exists(path):
        os.unlink(path)


def read_marker_metrics(root: str, name: str) -> dict[str, Any]:
    try:
        return dict(read_json(_marker_path(root, name), "stage marker").get("metrics", {}))
    except ToonSplatError:
        return {}


def run_stages(root: str, stages: list[Stage], context: Any, progress,
               force: set[str]) -> list[StageOutcome]:
    """Run ``stages`` in order, skipping complete ones; a redone stage invalidates later ones."""
    outcomes: list[StageOutcome] = []
    redo_rest = False
    for stage in stages:
        complete, reason = is_complete(root, stage, context)
        if complete and not redo_rest and stage.name not in force:
            log.info("%s: complete, skipped (use --force %s to redo it)", stage.name, stage.name)
            outcomes.append(StageOutcome(stage.name, True, 0.0, read_marker_metrics(root, stage.name)))
            progress.advance(stage.weight)
            continue
        if stage.name not in force and not redo_rest:
            log.info("%s: running (%s)", stage.name, reason)
        elif stage.fresh is not None:
            log.info("%s: starting afresh (%s)", stage.name,
                     "forced" if stage.name in force else "an earlier stage ran")
            stage.fresh(context)
        redo_rest = True
        clear_marker(root, stage.name)
        start = time.monotonic()
        progress.begin(stage.name, stage.weight)
        try:
            outputs, metrics = stage.run(context)
        except StageError:
            raise
        except ToonSplatError as exc:
            hint = stage.hint or "fix the input and re-run the same command"
            raise StageError(f"stage '{stage.name}' failed: {exc}. Earlier stages' outputs are "
                             f"kept in {root}; {hint}") from exc
        seconds = time.monotonic() - start
        mark_complete(root, stage, context, outputs, metrics, seconds)
        outcomes.append(StageOutcome(stage.name, False, seconds, metrics))
        progress.end()
    return outcomes
