"""The dispatcher behind ``python -m backend``.

Each command lives in the module of its pipeline stage and exposes two functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None   # cheap: no torch import
    def run(args: argparse.Namespace, progress: Progress) -> int | None

``COMMANDS`` maps a command name to that module (relative to the ``backend`` package) and a
one-line help. A command module imports heavy packages (torch, av, mediapipe) inside ``run`` only,
so ``--help`` for every command works in any Python with numpy.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import traceback

from .. import __version__
from ..errors import ToonSplatError
from ..progress import MODES, Progress, ProgressLogHandler, hide_native_logs

# name -> (module, help). Order is the order shown in --help: the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": (".cli.info", "summarize an avatar or tracking file"),
    "demo": (".pipeline.demo", "run the built-in demo end to end on built-in defaults"),
    "synth": (".synth.cli", "render a synthetic test subject with exact tracking"),
    "prepare": (".pipeline.prepare", "ingest a video/images and track the head"),
    "evaluate-tracking": (".tracking.evaluate", "accuracy of a prepared tracking against a synth truth"),
    "stylize": (".stylize.cli", "stylize prepared frames, Stage 1: toon, exemplar, models, frames"),
    "train": (".train.cli", "train Gaussian blendshapes, Stage 2"),
    "build": (".pipeline.cli", "all stages: prepare, stylize, train, evaluate, export; resumable"),
    "render": (".export.cli", "render an avatar driven by a tracking file"),
    "export": (".export.cli", "export an avatar as 3DGS PLY and other formats"),
    "proportions": (".export.proportions_cli", "toon proportions in 3D for an avatar (bigger eyes, "
                    "smaller nose and mouth, ...), rig kept"),
    "bench": (".cli.bench", "run a benchmark; prints one JSON line per measurement"),
    "head-model": (".headmodel.cli", "inspect, convert and preview head models"),
}

log = logging.getLogger("toonsplat")


def _load(name: str):
    module_name, _ = COMMANDS[name]
    return importlib.import_module(module_name, package=__package__.rpartition(".")[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="ToonSplat backend: video -> stylized, animatable 3D Gaussian head avatar.")
    parser.add_argument("--version", action="version", version=f"toonsplat {__version__}")
    # Accepted before or after the command name; a value after the command wins.
    _add_common(parser, "human", "info")
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, argparse.SUPPRESS, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, (_, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text,
                                        parents=[common])
        add_command_arguments(name, _load(name), command_parser)
    return parser


def add_command_arguments(name: str, module, parser: argparse.ArgumentParser) -> None:
    """A command module's arguments; a module serving several commands has add_arguments_for."""
    if hasattr(module, "add_arguments_for"):
        module.add_arguments_for(name, parser)
    else:
        module.add_arguments(parser)


def _add_common(parser: argparse.ArgumentParser, progress_default, level_default) -> None:
    parser.add_argument("--progress", choices=MODES, default=progress_default,
                        help="human: bars on stderr (default); jsonl: one JSON event per line "
                             "on stdout; quiet: errors only")
    parser.add_argument("--log-level", default=level_default,
                        choices=("debug", "info", "warning", "error"))


def _setup_logging(progress: Progress, level: str) -> None:
    handler: logging.Handler
    if progress.mode == "jsonl":
        handler = ProgressLogHandler(progress)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.ERROR if progress.mode == "quiet" else level.upper())
    log.propagate = False
    hide_native_logs(progress.mode == "quiet" or level != "debug")  # mediapipe's C++ chatter


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    progress = Progress(args.progress)
    _setup_logging(progress, args.log_level)
    # A cancel from the Blender add-on or a batch system is SIGTERM: treat it like Ctrl-C, so
    # every stage gets the chance to keep what is finished (e.g. a training checkpoint).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    module = _load(args.command)
    try:
        code = module.run(args, progress)
        return int(code or 0)
    except ToonSplatError as exc:
        progress.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        progress.error(f"{args.command} cancelled; finished outputs were kept, re-run to resume")
        return 130
    except MemoryError:
        progress.error(f"{args.command} ran out of memory; try a smaller --size or fewer frames")
        return 1
    except OSError as exc:
        # Disk full, read-only folders, missing files that slipped past validation.
        progress.error(f"{args.command} failed: {exc.strerror or exc} "
                       f"({exc.filename or 'no file named'})")
        return 1
    except Exception as exc:  # an internal error: say so, with the traceback on stderr
        traceback.print_exc(file=sys.stderr)
        progress.error(f"internal error in {args.command}: {type(exc).__name__}: {exc} "
                       "(traceback on stderr; please report it)")
        return 1
