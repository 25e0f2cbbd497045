"""Commands whose stage has not been built yet. They parse ``--help`` and then say so plainly:
a command never fakes a stage."""

from __future__ import annotations

import argparse

from ..errors import NotAvailableError

_ISSUES = {"demo": 9, "synth": 5, "prepare": 6, "stylize": 7, "train": 5, "build": 9,
           "render": 5, "export": 5, "head-model": 3}


def add_arguments_for(name: str, parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(pending_name=name)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace, progress) -> int:
    name = args.pending_name
    raise NotAvailableError(f"the '{name}' command is not built yet in this version "
                            f"(tracked as issue {_ISSUES.get(name, '?')})")
