"""The progress protocol's one reader: parse a line, fold events into what a UI shows.

A command run with ``--progress jsonl`` writes one JSON object per line on stdout
(``backend/progress.py`` writes them)::

    {"event": "stage"|"progress"|"log"|"preview"|"result"|"error",
     "stage": str, "step": int, "total": int, "message": str, "path": str,
     "eta_s": float, "overall": float, "overall_eta_s": float, ...}

``overall`` (0..1, the whole run) and ``overall_eta_s`` come from ``build``, which runs several
stages in one stream. The backend's tests and the Blender add-on both read lines with
``parse_line``/``parse_event`` and follow a run with ``ProgressState.apply``.

stdlib only (the add-on imports this in Blender's Python).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

EVENTS = ("stage", "progress", "log", "preview", "result", "error")


def parse_event(line: str) -> dict[str, Any]:
    """One protocol line as an event dict; raises ValueError if it is not a valid event.

    Valid: a JSON object whose ``event`` is one of ``EVENTS``, whose ``stage``, ``message`` and
    ``path`` (where present) are strings, and whose ``step``, ``total``, ``eta_s``, ``overall``
    and ``overall_eta_s`` (where present) are numbers; a ``progress`` event has ``step`` and
    ``total``.
    """
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a progress event (not JSON: {exc.msg}): {line!r}") from None
    problem = _problem(event)
    if problem:
        raise ValueError(f"not a progress event ({problem}): {line!r}")
    return event


def parse_line(line: str) -> dict[str, Any]:
    """Any line a process prints: its event, or a ``log`` event carrying a non-event line
    (pip output, a traceback, a malformed or unknown event) as its message."""
    line = line.rstrip("\r\n")
    if line.lstrip().startswith("{"):
        try:
            return parse_event(line)
        except ValueError:
            pass
    return {"event": "log", "message": line}


_STRINGS = ("stage", "message", "path")
_NUMBERS = ("step", "total", "eta_s", "overall", "overall_eta_s")


def _problem(event: Any) -> str:
    """Why ``event`` is not a valid protocol event, or an empty string."""
    if not isinstance(event, dict):
        return "not an object"
    if event.get("event") not in EVENTS:
        return f"unknown event {event.get('event')!r}"
    for key in _STRINGS:
        if key in event and not isinstance(event[key], str):
            return f"{key} is not a string"
    for key in _NUMBERS:
        if key in event and (isinstance(event[key], bool)
                             or not isinstance(event[key], (int, float))):
            return f"{key} is not a number"
    if event["event"] == "progress" and not ("step" in event and "total" in event):
        return "progress without step and total"
    return ""


@dataclass
class ProgressState:
    """What a UI shows about a run, folded from its events in order by ``apply``.

    ``overall``/``overall_eta_s`` stay None until the run reports them (a ``build``); from then
    on they are kept across stages, so a whole-run bar never restarts at a new stage.
    """

    stage: str = ""
    message: str = ""
    step: int = 0
    total: int = 0
    eta_s: float | None = None              # the current stage's time left
    overall: float | None = None            # 0..1 of the whole run, when reported
    overall_eta_s: float | None = None      # the whole run's time left, when reported
    preview: str = ""                       # the latest picture worth looking at
    results: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def fraction(self) -> float:
        """The current stage's fraction done, 0..1."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    @property
    def overall_fraction(self) -> float:
        """The whole run's fraction done when reported, the stage's fraction otherwise."""
        return self.overall if self.overall is not None else self.fraction

    @property
    def remaining_s(self) -> float | None:
        """The whole run's time left when reported, the stage's otherwise (None: unknown)."""
        return self.overall_eta_s if self.overall is not None else self.eta_s

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (from ``parse_line``) into the state; unknown events are ignored."""
        kind = event.get("event")
        if kind == "stage":
            self.stage, self.message = event.get("stage", ""), event.get("message", "")
            self.step, self.total = int(event.get("step", 0)), int(event.get("total", 0) or 0)
            self.eta_s = None
            self._fold_overall(event)
        elif kind == "progress":
            self.stage = event.get("stage", self.stage)
            self.step, self.total = int(event.get("step", 0)), int(event.get("total", 0))
            self.eta_s = event.get("eta_s")
            self.message = event.get("message", self.message)
            self._fold_overall(event)
            if "overall" in event:
                self.overall_eta_s = event.get("overall_eta_s")
        elif kind == "log":
            self.message = str(event.get("message", ""))[:200]
        elif kind == "preview":
            self.preview = event.get("path", "")
        elif kind == "result":
            self.results.append(event)
        elif kind == "error":
            self.error = event.get("message", "unknown error")

    def _fold_overall(self, event: dict[str, Any]) -> None:
        if "overall" in event:
            self.overall = min(max(float(event["overall"]), 0.0), 1.0)
