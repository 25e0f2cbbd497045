"""Run the backend as a subprocess and follow its JSON-lines progress (backend/progress.py).

No bpy here: the add-on polls ``BackendRun.poll()`` from ``bpy.app.timers`` on the main thread
(interactive Blender), or calls the blocking ``BackendRun.wait()`` in background mode, where
timers never fire. A run is a list of steps (argument lists, never shell strings) executed one
after another by a reader thread; stdout lines are parsed as protocol events, anything else is a
log line, and folded into a ``RunState`` (both with ``backend/formats/progress_events.py``, the
protocol's one reader). Everything the processes print goes to a log file whose path every error names.
Cancel ends the whole process tree (a new session / process group per step); the backend keeps
its last checkpoint, so a cancelled run can be resumed by starting it again.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..backend.errors import ToonSplatError
from ..backend.formats.progress_events import ProgressState, parse_line

EXTENSION_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_GRACE_S = 3.0


def backend_argv(python: str, command: str, arguments: list[str]) -> list[str]:
    """The argument list that runs ``python -m backend <command> --progress jsonl ...``."""
    return [python, "-m", "backend", command, "--progress", "jsonl", *arguments]


@dataclass
class RunState(ProgressState):
    """What the UI shows about a run: the folded progress (stage, step/total, fraction, ETA,
    ``overall_fraction``/``remaining_s`` of a whole build, preview, results, error) and the run's
    own status. Written by ``poll``/``wait`` on the caller's thread."""

    title: str = ""
    status: str = "running"            # running | done | failed | cancelled
    log_path: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.status != "running"


class BackendRun:
    """One run of one or more subprocess steps with progress, cancel and a log file.

    Args:
        steps: argument lists, run in order; a step that fails stops the run.
        title: shown in the UI (e.g. "Build avatar").
        log_path: file that receives every line the processes print (created, appended).
        cwd: working directory (default: the extension root, so ``-m backend`` resolves).
        env: extra environment variables.
    """

    def __init__(self, steps: list[list[str]], title: str, log_path: str,
                 cwd: str = EXTENSION_ROOT, env: dict[str, str] | None = None):
        if not steps or any(not isinstance(s, (list, tuple)) or not s for s in steps):
            raise ValueError("a run needs at least one non-empty argument list")
        self.steps = [list(map(str, s)) for s in steps]
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.state = RunState(title=title, log_path=log_path)
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="toonsplat-runner", daemon=True)

    # -- control ----------------------------------------------------------------------------
    def start(self) -> BackendRun:
        """Check the first interpreter exists, open the log and start the reader thread."""
        program = self.steps[0][0]
        if not os.path.isfile(program) and not os.path.isabs(program) and os.sep not in program:
            import shutil
            program = shutil.which(program) or program
        if not os.path.isfile(program):
            raise ToonSplatError(
                f"backend interpreter not found: {self.steps[0][0]}; set 'Backend Python' in the "
                "ToonSplat add-on preferences, or click 'Create Backend Environment' there")
        os.makedirs(os.path.dirname(os.path.abspath(self.state.log_path)), exist_ok=True)
        self._log = open(self.state.log_path, "a", encoding="utf-8", buffering=1)
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop: terminate the current process tree, kill it after a grace time."""
        self._cancel.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            _signal_tree(process, signal.SIGTERM)
            killer = threading.Timer(KILL_GRACE_S, _kill_if_alive, args=(process,))
            killer.daemon = True
            killer.start()

    def poll(self) -> RunState:
        """Apply the events that arrived since the last call (non-blocking)."""
        while True:
            try:
                self._apply(self._events.get_nowait())
            except queue.Empty:
                return self.state

    def wait(self, timeout_s: float | None = None, on_event=None) -> RunState:
        """Block until the run ends (background mode); ``on_event(event)`` sees every event."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.state.finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.cancel()
                deadline = None
                continue
            try:
                event = self._events.get(timeout=0.5 if remaining is None else min(0.5, remaining))
            except queue.Empty:
                continue
            self._apply(event)
            if on_event is not None:
                on_event(event)
        return self.state

    # -- the reader thread ------------------------------------------------------------------
    def _work(self) -> None:
        try:
            for index, argv in enumerate(self.steps):
                if self._cancel.is_set():
                    break
                code = self._run_step(index, argv)
                if self._cancel.is_set():
                    break
                if code != 0:
                    self._events.put({"event": "_exit", "code": code, "argv": argv})
                    return
            self._events.put({"event": "_exit", "code": 0 if not self._cancel.is_set() else None})
        except Exception as exc:  # the thread must always report an end
            self._events.put({"event": "_exit", "code": -1, "exception": f"{type(exc).__name__}: {exc}"})
        finally:
            self._log.close()

    def _run_step(self, index: int, argv: list[str]) -> int:
        self._log.write(f"$ {' '.join(argv)}\n")
        if len(self.steps) > 1:
            self._events.put({"event": "stage", "stage": f"step {index + 1}/{len(self.steps)}",
                              "message": os.path.basename(argv[0]) + " " + " ".join(argv[1:3]),
                              "step": index, "total": len(self.steps)})
        try:
            process = subprocess.Popen(
                argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                encoding="utf-8", errors="replace", **_new_group_kwargs())
        except OSError as exc:
            self._events.put({"event": "error", "message": f"cannot start {argv[0]}: {exc.strerror or exc}"})
            return -1
        with self._lock:
            self._process = process
        for line in process.stdout:
            self._log.write(line)
            self._events.put(parse_line(line))
        code = process.wait()
        with self._lock:
            self._process = None
        self._log.write(f"[exit code {code}]\n")
        return code

    # -- state ------------------------------------------------------------------------------
    def _apply(self, event: dict) -> None:
        if event.get("event") == "_exit":
            self._finish(event)
        else:
            self.state.apply(event)

    def _finish(self, event: dict) -> None:
        state, code = self.state, event.get("code")
        if self._cancel.is_set():
            state.status, state.message = "cancelled", "cancelled; finished outputs were kept"
        elif code == 0:
            state.status, state.step = "done", max(state.step, state.total)
            if state.overall is not None:
                state.overall, state.overall_eta_s = 1.0, None
        else:
            state.status = "failed"
            if "exception" in event:
                state.error = f"internal error in the runner: {event['exception']}"
            elif not state.error:
                state.error = (f"{os.path.basename(event.get('argv', ['backend'])[0])} stopped with "
                               f"exit code {code} without saying why")
            state.error += f" (log: {state.log_path})"


def _new_group_kwargs() -> dict:
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def _signal_tree(process: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the process group (POSIX) or end the tree (Windows)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, sig)
        elif sig == signal.SIGTERM:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                           capture_output=True, check=False)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _kill_if_alive(process: subprocess.Popen) -> None:
    """The end of the grace time after a cancel: kill the group if it still runs."""
    if process.poll() is None:
        _signal_tree(process, getattr(signal, "SIGKILL", signal.SIGTERM))


def format_left(seconds: float | None) -> str:
    """``40 s left``, ``3 min left``, ``1 h 05 min left`` (rounded up), or an empty string."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{max(1, math.ceil(seconds))} s left"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min left"
    return f"{minutes // 60} h {minutes % 60:02d} min left"


def progress_text(state: ProgressState) -> str:
    """One line for a bar: ``train 1200/3000 · build 64% · 3 min left`` when the run reports
    the whole build, ``train 1200/3000 · 40 s left`` (the stage) otherwise."""
    parts = [f"{state.stage} {state.step}/{state.total}" if state.total else state.stage]
    if state.overall is not None:
        parts.append(f"build {state.overall:.0%}")
    parts.append(format_left(state.remaining_s))
    return " · ".join(part for part in parts if part)


def venv_steps(base_python: str, venv_dir: str, requirements: str) -> list[list[str]]:
    """Steps that create a venv for the backend and install its requirements into it."""
    python = venv_python(venv_dir)
    return [[base_python, "-m", "venv", venv_dir],
            [python, "-m", "pip", "install", "--progress-bar", "off", "-r", requirements]]


def venv_python(venv_dir: str) -> str:
    """The interpreter inside a venv folder on this platform."""
    if sys.platform == "win32":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")
