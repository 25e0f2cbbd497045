"""``python -m backend build``: the whole pipeline in one resumable command."""

from __future__ import annotations

import argparse

STAGES = ("prepare", "stylize", "train", "export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a video of a face (mp4, mov, webm, mkv)")
    source.add_argument("--images", help="a folder of images of one face")
    source.add_argument("--image", help="one portrait photo: one-shot mode")
    parser.add_argument("--out", required=True, help="the build folder (created; re-run to resume)")
    parser.add_argument("--style", default="toon",
                        help="toon, exemplar:IMG, model:FILE, frames:DIR, or none (default toon)")
    parser.add_argument("--head-model", default="builtin", help="builtin or a FLAME file")
    parser.add_argument("--preset", default="cpu-fast", help="training preset (cpu-fast, gpu-paper)")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (preset's if unset)")
    parser.add_argument("--size", type=int, default=512, help="working resolution (default 512)")
    parser.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                        help=f"redo this stage even if complete ({', '.join(STAGES)}); repeatable")


def run(args: argparse.Namespace, progress) -> int:
    from .run import run_build

    if args.video:
        source = ["--video", args.video]
    elif args.images:
        source = ["--images", args.images]
    else:
        source = ["--image", args.image]
    result = run_build(source, args.out, style=args.style, head_model=args.head_model,
                       preset=args.preset, iters=args.iters, size=args.size, force=set(args.force),
                       progress_mode=progress.mode)
    progress.result("build finished", path=result["out"], avatar=result["avatar"],
                    tracking=result["tracking"], report=result["report_html"])
    return 0
