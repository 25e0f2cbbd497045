"""``python -m backend build``: the whole pipeline in one resumable command."""

from __future__ import annotations

import argparse

from ..errors import InputError

STAGES = ("prepare", "stylize", "train", "export")
PRESETS = ("default", "cpu-fast", "gpu-paper", "tiny")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a video of a face (mp4, mov, webm, mkv)")
    source.add_argument("--images", help="a folder of images of one face")
    source.add_argument("--image", help="one portrait photo: one-shot mode")
    parser.add_argument("--out", required=True, help="the build folder (created; re-run to resume)")
    parser.add_argument("--style", default="toon",
                        help="toon, exemplar:IMG, model:FILE, frames:DIR, or none (default toon); "
                             "'exemplar', 'model' and 'folder' take their path from the flags below")
    parser.add_argument("--exemplar", help="style image for --style exemplar")
    parser.add_argument("--style-model", help="TorchScript/ONNX model for --style model")
    parser.add_argument("--stylized-folder", help="already-stylized frames for --style folder")
    parser.add_argument("--style-strength", type=float, default=None, help="0..1 (style's default)")
    parser.add_argument("--head-model", default="builtin", help="builtin or a FLAME file")
    parser.add_argument("--landmark-embedding", default=None,
                        help="with a FLAME --head-model: its mediapipe_landmark_embedding.npz")
    parser.add_argument("--preset", default="default", choices=PRESETS,
                        help="training preset; default: gpu-paper on CUDA, cpu-fast otherwise")
    parser.add_argument("--iters", type=int, default=None, help="training iterations (preset's if unset)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", type=int, default=512, help="working resolution (default 512)")
    parser.add_argument("--refine-tracking", choices=("none", "photometric"), default="none",
                        help="prepare --refine: photometric aligns the tracked head to the pixels "
                             "(more accurate, about 2.5 s per frame on a 2-core CPU; default none)")
    parser.add_argument("--eye-contact", metavar="A-B", default=None,
                        help="prepare --eye-contact: frames of the prepared clip (0-based, "
                             "inclusive) in which the person looks into the lens")
    parser.add_argument("--frame-start", type=int, default=0, help="first video frame to use")
    parser.add_argument("--frame-end", type=int, default=-1, help="last video frame (-1: the end)")
    parser.add_argument("--frame-stride", type=int, default=1, help="use every N-th frame")
    parser.add_argument("--force", action="append", default=[], choices=STAGES, metavar="STAGE",
                        help=f"redo this stage even if complete ({', '.join(STAGES)}); repeatable")
    parser.add_argument("--stop-after", choices=STAGES, metavar="STAGE",
                        help="stop once this stage is complete (e.g. prepare, to look at the "
                             "tracking QA picture first); re-run without it to go on")


def style_spec(args: argparse.Namespace) -> str:
    """The stylize command's --style value from build's style flags."""
    paths = {"exemplar": ("exemplar", args.exemplar, "--exemplar"),
             "model": ("model", args.style_model, "--style-model"),
             "folder": ("frames", args.stylized_folder, "--stylized-folder")}
    if args.style in paths:
        kind, path, flag = paths[args.style]
        if not path:
            raise InputError(f"--style {args.style} needs its path: pass {flag} PATH")
        return f"{kind}:{path}"
    return args.style


def source_arguments(args: argparse.Namespace) -> list[str]:
    """prepare's input arguments, with the frame range converted to its seconds."""
    if args.images:
        return ["--images", args.images]
    if args.image:
        return ["--image", args.image]
    source = ["--video", args.video]
    if args.frame_start or args.frame_end >= 0:
        fps = _video_fps(args.video)
        source += ["--start", f"{args.frame_start / fps:.6f}"]
        if args.frame_end >= 0:
            source += ["--end", f"{(args.frame_end + 0.5) / fps:.6f}"]
    if args.frame_stride != 1:
        source += ["--stride", str(args.frame_stride)]
    return source


def _video_fps(path: str) -> float:
    import av

    try:
        with av.open(path) as container:
            rate = container.streams.video[0].average_rate
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise InputError(f"cannot read the video {path}: {exc}") from exc
    return float(rate) if rate else 25.0


def run(args: argparse.Namespace, progress) -> int:
    from .run import run_build

    preset = args.preset
    if preset == "default":
        import torch

        cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        preset = "gpu-paper" if cuda else "cpu-fast"
    result = run_build(source_arguments(args), args.out, style=style_spec(args),
                       head_model=args.head_model, landmark_embedding=args.landmark_embedding,
                       preset=preset, iters=args.iters, size=args.size,
                       device=args.device, style_strength=args.style_strength,
                       force=set(args.force), progress_mode=progress.mode,
                       stop_after=args.stop_after, refine_tracking=args.refine_tracking,
                       eye_contact=args.eye_contact)
    if args.stop_after:
        progress.result(f"build stopped after {args.stop_after}; run it again without "
                        "--stop-after to go on", path=result["out"], qa=result["qa"],
                        report=result["report_html"])
        return 0
    progress.result("build finished", path=result["out"], avatar=result["avatar"],
                    tracking=result["tracking"], report=result["report_html"])
    return 0
