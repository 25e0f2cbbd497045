"""Backend runs inside Blender: start, follow on the main thread, cancel, draw.

Interactive Blender follows a run with a ``bpy.app.timers`` function (the reader thread never
touches bpy); in background mode (``blender -b``, the bpy module) timers never fire, so ``start``
blocks and prints the progress instead. One run per slot ("pipeline", "env", "export").
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import bpy

from . import runner

POLL_S = 0.25
PREVIEW_IMAGE = "ToonSplat Preview"
_runs: dict[str, runner.BackendRun] = {}
_callbacks: dict[str, Callable[[runner.RunState], None]] = {}


def active(slot: str) -> runner.BackendRun | None:
    return _runs.get(slot)


def start(slot: str, steps: list[list[str]], title: str, log_path: str,
          on_done: Callable[[runner.RunState], None] | None = None,
          timeout_s: float | None = None) -> runner.BackendRun:
    """Start a run in ``slot``; in background mode wait for it. Raises ToonSplatError."""
    current = _runs.get(slot)
    if current is not None and not current.state.finished:
        raise runner.ToonSplatError(f"'{current.state.title}' is still running; cancel it first")
    run = runner.BackendRun(steps, title, log_path).start()
    _runs[slot] = run
    if bpy.app.background:
        run.wait(timeout_s, on_event=lambda event: _print_event(event, run.state))
        _finish(slot, run, on_done)
    else:
        _callbacks[slot] = on_done
        if not bpy.app.timers.is_registered(_tick):
            bpy.app.timers.register(_tick, first_interval=POLL_S)
    return run


def cancel(slot: str) -> bool:
    run = _runs.get(slot)
    if run is None or run.state.finished:
        return False
    run.cancel()
    return True


def cancel_all() -> None:
    """End every run (at unregister): no orphan backend keeps the GPU busy."""
    for run in _runs.values():
        if not run.state.finished:
            run.cancel()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    _runs.clear()
    _callbacks.clear()


def _tick() -> float | None:
    running = False
    for slot, run in list(_runs.items()):
        if run.state.finished:
            continue
        previous_preview = run.state.preview
        state = run.poll()
        if state.preview != previous_preview:
            show_picture(state.preview)
        if state.finished:
            _finish(slot, run, _callbacks.pop(slot, None))
        else:
            running = True
    _redraw()
    return POLL_S if running else None


def _finish(slot: str, run: runner.BackendRun, on_done) -> None:
    state = run.state
    if state.status == "failed":
        print(f"ToonSplat: {state.title} failed: {state.error}", file=sys.stderr)
    if on_done is not None:
        try:
            on_done(state)
        except runner.ToonSplatError as exc:
            state.status, state.error = "failed", str(exc)
            print(f"ToonSplat: {exc}", file=sys.stderr)


def _print_event(event: dict, state: runner.RunState) -> None:
    """Background mode's progress: ``state`` has already folded ``event`` in."""
    kind = event.get("event")
    if kind == "progress":
        print(f"  {runner.progress_text(state)}", flush=True)
    elif kind in ("stage", "result", "log", "error"):
        print(f"  [{kind}] {event.get('stage', '')} {event.get('message', '')}".rstrip(), flush=True)


def show_picture(path: str) -> None:
    """Load ``path`` as the panels' preview picture (a missing or unreadable file is ignored)."""
    if not path or not os.path.isfile(path):
        return
    image = bpy.data.images.get(PREVIEW_IMAGE)
    try:
        if image is None:
            image = bpy.data.images.load(path)
            image.name = PREVIEW_IMAGE
        else:
            image.filepath = path
            image.reload()
        image.preview_ensure()
    except RuntimeError:
        pass  # a preview that cannot be read is not worth an error


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def draw_run(layout: bpy.types.UILayout, slot: str, show_preview: bool = False) -> None:
    """Progress bar (the whole build's fraction and time left when the run reports them, the
    stage's otherwise), cancel, last preview, error with the log path."""
    run = _runs.get(slot)
    if run is None:
        return
    state = run.state
    box = layout.box()
    if not state.finished:
        text = runner.progress_text(state)
        if hasattr(box, "progress"):
            box.progress(factor=state.overall_fraction, type="BAR", text=text)
        else:
            box.label(text=f"{text} ({state.overall_fraction:.0%})")
        box.label(text=state.message[:90] or state.title)
        box.operator("toonsplat.cancel_run", icon="CANCEL").slot = slot
    elif state.status == "failed":
        box.alert = True
        for index, line in enumerate(_wrap(state.error, 70)):
            box.label(text=line, icon="ERROR" if index == 0 else "BLANK1")
    else:
        seconds = time.monotonic() - state.started
        box.label(text=f"{state.title}: {state.status}", icon="CHECKMARK")
        box.label(text=state.message[:90] if state.status == "cancelled" else f"{seconds:.0f} s")
    image = bpy.data.images.get(PREVIEW_IMAGE)
    if show_preview and image is not None and image.preview is not None:
        box.template_icon(icon_value=image.preview.icon_id, scale=8.0)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines or [""]
