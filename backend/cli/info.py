"""``python -m backend info FILE``: summarize an avatar or tracking file."""

from __future__ import annotations

import argparse

from ..errors import FormatError
from ..formats import avatar, tracking
from ..formats.npzio import read_meta


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an avatar (.npz) or tracking (.npz) file")


def run(args: argparse.Namespace, progress) -> int:
    meta = read_meta(args.file, "ToonSplat file")
    kind = meta.get("format")
    if kind == avatar.FORMAT_NAME:
        text = avatar.summary(avatar.read(args.file), args.file)
    elif kind == tracking.FORMAT_NAME:
        text = tracking.summary(tracking.read(args.file), args.file)
    else:
        raise FormatError(f"{args.file} is a {kind!r} file; 'info' reads "
                          f"{avatar.FORMAT_NAME!r} and {tracking.FORMAT_NAME!r} files")
    print(text)
    progress.result(f"{meta['format']} v{meta.get('version')}", path=args.file)
    return 0
