"""``python -m backend build``: the whole pipeline in one resumable command."""

from __future__ import annotations

import argparse

from ..formats.options import BUILD, BuildOptions
from ..formats.options import add_arguments as add_option_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option_arguments(parser, BuildOptions, BUILD)


def run(args: argparse.Namespace, progress) -> int:
    from ..formats.options import from_args
    from .run import run_build

    options = from_args(BuildOptions, args, BUILD)
    options.prepare.source()  # exactly one input, checked before the build folder is made
    result = run_build(options, progress_mode=progress.mode)
    if options.stop_after:
        progress.result(f"build stopped after {options.stop_after}; run it again without "
                        "--stop-after to go on", path=result["out"], qa=result["qa"],
                        report=result["report_html"])
        return 0
    progress.result("build finished", path=result["out"], avatar=result["avatar"],
                    tracking=result["tracking"], report=result["report_html"])
    return 0


