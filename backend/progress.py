"""The progress protocol every command speaks.

With ``--progress jsonl`` a command writes one JSON object per line on stdout::

    {"event": "stage"|"progress"|"log"|"preview"|"result"|"error",
     "stage": str, "step": int, "total": int, "message": str, "path": str, ...}

Only the fields that are relevant are present; ``progress`` events also carry ``eta_s`` once it
can be estimated. The Blender add-on and batch tools parse these lines. With ``--progress human``
(the default) the same calls draw progress bars and messages on stderr, and stdout stays free for
a command's own output. ``quiet`` prints errors only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

EVENTS = ("stage", "progress", "log", "preview", "result", "error")
MODES = ("human", "jsonl", "quiet")


class Progress:
    """Reports stages, steps, previews and results in one of the three modes."""

    def __init__(self, mode: str = "human", out: IO[str] | None = None,
                 err: IO[str] | None = None, min_interval_s: float = 0.2):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.min_interval_s = min_interval_s
        self.current_stage = ""
        self._stage_started = time.monotonic()
        self._last_emit = 0.0
        self._bar_open = False

    # -- events -------------------------------------------------------------------------------
    def stage(self, name: str, message: str = "", total: int | None = None) -> None:
        """Start a named stage (``prepare``, ``train``, ...)."""
        self._close_bar()
        self.current_stage = name
        self._stage_started = time.monotonic()
        self._last_emit = 0.0
        fields: dict[str, Any] = {"message": message or name}
        if total is not None:
            fields["total"] = int(total)
        self._emit("stage", **fields)

    def progress(self, step: int, total: int, message: str = "", force: bool = False) -> None:
        """Report ``step`` of ``total`` in the current stage. Rate-limited unless ``force``."""
        now = time.monotonic()
        last = step >= total
        if not (force or last or now - self._last_emit >= self.min_interval_s):
            return
        self._last_emit = now
        fields: dict[str, Any] = {"step": int(step), "total": int(total)}
        if message:
            fields["message"] = message
        elapsed = now - self._stage_started
        if 0 < step < total and elapsed > 0.5:
            fields["eta_s"] = round(elapsed / step * (total - step), 1)
        self._emit("progress", **fields)

    def log(self, message: str, level: str = "info") -> None:
        self._emit("log", message=message, level=level)

    def preview(self, path: str, message: str = "") -> None:
        """Point at an image a person may want to look at now (a training preview, a QA strip)."""
        self._emit("preview", path=str(path), message=message or "preview")

    def result(self, message: str, path: str | None = None, **extra: Any) -> None:
        """The outcome of the command: where its outputs are."""
        fields: dict[str, Any] = {"message": message, **extra}
        if path is not None:
            fields["path"] = str(path)
        self._emit("result", **fields)

    def error(self, message: str, **extra: Any) -> None:
        self._emit("error", message=message, **extra)

    # -- output -------------------------------------------------------------------------------
    def _emit(self, event: str, **fields: Any) -> None:
        fields.setdefault("stage", self.current_stage)
        if self.mode == "jsonl":
            self.out.write(json.dumps({"event": event, **fields}) + "\n")
            self.out.flush()
        elif self.mode == "human":
            self._human(event, fields)
        elif event == "error":
            self.err.write(f"error: {fields['message']}\n")
            self.err.flush()

    def _human(self, event: str, fields: dict[str, Any]) -> None:
        if event == "progress":
            self._draw_bar(fields)
            return
        self._close_bar()
        message = fields.get("message", "")
        if event == "stage":
            line = f"== {fields['stage']}: {message}"
        elif event == "error":
            line = f"error: {message}"
        elif event in ("preview", "result"):
            line = f"{message}: {fields['path']}" if "path" in fields else message
        else:
            line = message
        self.err.write(line + "\n")
        self.err.flush()

    def _draw_bar(self, fields: dict[str, Any]) -> None:
        step, total = fields["step"], max(fields["total"], 1)
        width = 30
        filled = int(width * min(step, total) / total)
        eta = f" eta {format_seconds(fields['eta_s'])}" if "eta_s" in fields else ""
        text = (f"{fields['stage']:>10} [{'#' * filled}{'.' * (width - filled)}] "
                f"{step}/{total}{eta} {fields.get('message', '')}")
        if self.err.isatty():
            self.err.write("\r" + text[:120].ljust(120))
            self._bar_open = True
            if step >= total:
                self._close_bar()
        else:
            self.err.write(text + "\n")
        self.err.flush()

    def _close_bar(self) -> None:
        if self._bar_open:
            self.err.write("\n")
            self._bar_open = False


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLogHandler(logging.Handler):
    """Routes ``logging`` records into the progress stream as ``log`` events."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.progress.log(self.format(record), level=record.levelname.lower())
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def parse_event(line: str) -> dict[str, Any]:
    """Parse one protocol line; raises ValueError if it is not a valid event."""
    event = json.loads(line)
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        raise ValueError(f"not a progress event: {line!r}")
    return event


class PipelineProgress(Progress):
    """A Progress for several stages in a row: every ``progress`` event also carries ``overall``
    (0..1, weighted by each stage's expected share of the time) and ``overall_eta_s``."""

    def __init__(self, mode: str = "human", total_weight: float = 1.0, **kwargs: Any):
        super().__init__(mode, **kwargs)
        self.total_weight = max(total_weight, 1e-9)
        self.done_weight = 0.0
        self.current_weight = 0.0
        self._run_start: tuple[float, float] | None = None  # (time, overall) when work began
        self._last_overall = 0.0

    def begin(self, name: str, weight: float) -> None:
        """A pipeline stage starts; its own ``stage``/``progress`` calls follow."""
        if self._run_start is None:
            self._run_start = (time.monotonic(), self.done_weight / self.total_weight)
        self.current_weight = weight
        self.stage(name, f"stage {name}")

    def advance(self, weight: float) -> None:
        """A pipeline stage was skipped (already complete)."""
        self.done_weight += weight

    def end(self) -> None:
        self.done_weight += self.current_weight
        self.current_weight = 0.0
        self._last_overall = max(self._last_overall, self.done_weight / self.total_weight)

    def _emit(self, event: str, **fields: Any) -> None:
        if event == "progress" and fields.get("total"):
            fraction = min(fields["step"] / fields["total"], 1.0)
            overall = (self.done_weight + self.current_weight * fraction) / self.total_weight
            # A stage may report several sub-steps that each count from zero: never go back.
            overall = self._last_overall = min(max(overall, self._last_overall), 1.0)
            fields["overall"] = round(overall, 4)
            if self._run_start is not None:
                elapsed = time.monotonic() - self._run_start[0]
                done_here = overall - self._run_start[1]
                if done_here > 0.01 and overall < 1.0 and elapsed > 2.0:
                    fields["overall_eta_s"] = round(elapsed / done_here * (1.0 - overall), 1)
        super()._emit(event, **fields)
