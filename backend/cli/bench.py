"""``python -m backend bench <name>``: run one benchmark, print one JSON line per measurement."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..bench import BENCHES, emit
from ..errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    listing = "; ".join(f"{name}: {help_text}" for name, (_, _, help_text) in BENCHES.items())
    parser.add_argument("name", help=f"which benchmark ({listing})")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run torch benches (default: cuda when present)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and smaller cases (for smoke tests)")
    parser.add_argument("--clip", action="append", metavar="VIDEO",
                        help="quality: a clip to build (repeatable; default: the real clips in "
                             "../shared/data/real beside the repository)")
    parser.add_argument("--out", metavar="DIR",
                        help="quality: keep the builds here (default: a temporary folder)")


def run(args: argparse.Namespace, progress) -> int:
    if args.name not in BENCHES:
        raise InputError(f"unknown benchmark {args.name!r}; choose one of: {', '.join(BENCHES)}")
    module_name, function_name, _ = BENCHES[args.name]
    module = importlib.import_module(module_name, package=__package__.rpartition(".")[0])
    progress.stage("bench", f"benchmark {args.name}")
    for record in getattr(module, function_name)(args):
        emit(record, sys.stdout)
    return 0
