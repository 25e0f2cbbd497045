"""The progress protocol every command speaks.

With ``--progress jsonl`` a command writes one JSON object per line on stdout::

    {"event": "stage"|"progress"|"log"|"preview"|"result"|"error",
     "stage": str, "step": int, "total": int, "message": str, "path": str, ...}

Only the fields that are relevant are present; ``progress`` events also carry ``eta_s`` once it
can be estimated, and during ``build`` ``overall`` (0..1) and ``overall_eta_s``. The Blender
add-on, batch tools and tests read these lines with ``backend/formats/progress_events.py`` (the
one parser). With ``--progress human`` (the default) the same calls draw progress bars and
messages on stderr, and stdout stays free for a command's own output. ``quiet`` prints errors
only; ``NativeLogsHidden`` keeps mediapipe's and TensorFlow Lite's own chatter off stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from typing import IO, Any

from .formats.progress_events import EVENTS, parse_event  # noqa: F401  (re-exported)

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


# -- native libraries' own logging ---------------------------------------------------------------
# mediapipe (C++ absl/glog) and TensorFlow Lite write INFO/WARNING lines straight to file
# descriptor 2 from their own threads while a graph starts and on its first frame; no environment
# variable or Python logging setting stops them. ``NativeLogsHidden`` points fd 2 at a temporary
# file for such a window and then replays every line that is not that chatter, so errors (``E``/
# ``F`` lines, Python's own stderr) still show, only later.
_NATIVE_CHATTER = re.compile(r"^(?:[IWV]\d{4} |(?:INFO|WARNING|VERBOSE): )")
_native: dict[str, Any] = {"hide": False, "depth": 0, "saved_fd": -1, "capture": None}
_native_lock = threading.Lock()


def hide_native_logs(hide: bool) -> None:
    """Whether ``NativeLogsHidden`` hides native chatter (the CLI: unless ``--log-level debug``)."""
    _native["hide"] = bool(hide)


class NativeLogsHidden:
    """Native libraries' INFO/WARNING lines on fd 2 are hidden from construction to ``close()``.

    Does nothing unless ``hide_native_logs(True)`` was called and ``active``. ``close`` may be
    called more than once; windows nest and may overlap across threads (fd 2 comes back when the
    last one closes). Also a context manager. Keep windows short: a graph's start and first frame.
    """

    def __init__(self, active: bool = True):
        self._open = bool(active and _native["hide"])
        if self._open:
            _begin_native_capture()

    def close(self) -> None:
        if self._open:
            self._open = False
            _end_native_capture()

    def __enter__(self) -> NativeLogsHidden:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _begin_native_capture() -> None:
    with _native_lock:
        _native["depth"] += 1
        if _native["depth"] > 1:
            return
        sys.stderr.flush()
        capture = tempfile.TemporaryFile()
        _native["saved_fd"], _native["capture"] = os.dup(2), capture
        os.dup2(capture.fileno(), 2)


def _end_native_capture() -> None:
    with _native_lock:
        _native["depth"] -= 1
        if _native["depth"] > 0:
            return
        sys.stderr.flush()
        saved, capture = _native["saved_fd"], _native["capture"]
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
        capture.close()
    kept = [line for line in text.splitlines(keepends=True) if not _NATIVE_CHATTER.match(line)]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


class PipelineProgress(Progress):
    """A Progress for several stages in a row: every ``progress`` event also carries ``overall``
    (0..1, weighted by each stage's expected share of the time, never going back) and, once it
    can be estimated, ``overall_eta_s``; ``stage`` events carry ``overall`` as the stage starts."""

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
        if event == "stage":  # where the run stands as a stage starts (after skipped ones too)
            self._last_overall = max(self._last_overall, self.done_weight / self.total_weight)
            fields["overall"] = round(min(self._last_overall, 1.0), 4)
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
