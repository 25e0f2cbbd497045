"""``python -m backend stylize``: Stage 1, prepared frames -> stylized frames with jitter metrics.

    python -m backend stylize --data DIR --style toon
    python -m backend stylize --data DIR --style exemplar:style.png --levels 4 --line-weight 1.5
    python -m backend stylize --data DIR --style model:toonify.pt --region face
    python -m backend stylize --data DIR --style frames:vtoonify_out/

Writes DIR/stylized/*.png, DIR/stylize.json (style, parameters, ITF/ISI of input and output,
timing) and DIR/qa/stylize_side_by_side.png. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("toonsplat")

SHORTHANDS = ("strength", "levels", "line_weight", "smoothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="the prepared-data folder (reads frames/, writes stylized/)")
    parser.add_argument("--style", default="toon", metavar="SPEC",
                        help="toon (default) | exemplar:IMAGE | model:FILE (.pt TorchScript or "
                             ".onnx) | frames:DIR (frames stylized elsewhere)")
    styles = parser.add_argument_group("built-in style parameters (toon, exemplar)")
    styles.add_argument("--strength", type=float, help="0 = input unchanged .. 1 = full style (1)")
    styles.add_argument("--levels", type=int, help="luminance bands, 2..16 (5)")
    styles.add_argument("--line-weight", type=float, help="ink line width, 0 = no lines .. 4 (1)")
    styles.add_argument("--smoothing", type=float, help="edge-preserving smoothing, 0..4 (1)")
    styles.add_argument("--param", action="append", metavar="KEY=VALUE",
                        help="any other style parameter, repeatable (e.g. saturation=1.3, "
                             "temporal=0.8, colors=6, tone=0.5, palette=0.8); see docs/STYLIZE.md")
    models = parser.add_argument_group("user models (override the model's sidecar JSON)")
    models.add_argument("--model-layout", choices=("NCHW", "NHWC"))
    models.add_argument("--model-range", choices=("0,1", "-1,1", "0,255"),
                        help="input value range; write --model-range=-1,1 (with '=') for -1,1")
    models.add_argument("--model-output-range", choices=("0,1", "-1,1", "0,255"),
                        help="output value range (default: the input range; '=' form as above)")
    models.add_argument("--model-channels", choices=("RGB", "BGR"))
    models.add_argument("--model-size-multiple", type=int, help="pad height and width to a multiple")
    models.add_argument("--model-input-size", type=int, help="resize to this square size first")
    models.add_argument("--device", default="cpu", help="torch device for TorchScript models (cpu)")
    region = parser.add_argument_group("face-region mode")
    region.add_argument("--region", choices=("full", "face"), default="full",
                        help="full: stylize whole frames (default); face: a square around the "
                             "face, blended back with a feathered mask")
    region.add_argument("--face-box", choices=("auto", "mask", "tracking", "center"), default="auto",
                        help="where the face square comes from (auto: masks/, then tracking.npz, "
                             "then the centre)")
    region.add_argument("--face-margin", type=float, default=0.25,
                        help="enlarge the face box by this fraction (0.25)")


def run(args: argparse.Namespace, progress) -> int:
    from ..errors import InputError
    from .pipeline import list_frames, make_box_source, stylize_folder
    from .styles import parse_params, parse_style

    kind, argument = parse_style(args.style)
    frames_dir, names = list_frames(args.data)
    params = parse_params(args.param)
    for name in SHORTHANDS:
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if kind == "frames":
        if args.region != "full" or params:
            raise InputError("external frames are used as they are: drop --region and the style "
                             "parameters with --style frames:DIR")
        from .external import ExternalFrames, pair_external_frames

        stylizer = ExternalFrames(pair_external_frames(argument, frames_dir, names), argument)
    elif kind == "model":
        from .styles import model_stylizer

        overrides = {"layout": args.model_layout, "value_range": args.model_range,
                     "output_range": args.model_output_range, "channels": args.model_channels,
                     "size_multiple": args.model_size_multiple, "input_size": args.model_input_size}
        stylizer = model_stylizer(argument, overrides, args.device, params)
    else:
        from .styles import builtin_stylizer

        stylizer = builtin_stylizer(args.style, params)
    if args.region == "face":
        from .region import RegionStylizer

        box_source, box_name = make_box_source(args.data, names, args.face_box)
        log.info("face region: boxes from %s", box_name)
        stylizer = RegionStylizer(stylizer, box_source, margin=args.face_margin)
    report = stylize_folder(args.data, stylizer, progress, style=args.style, frame_names=names)
    metrics = report["metrics"]
    summary = (f"stylized {report['n_frames']} frames at {report['timing']['stylize_fps']:.1f} fps; "
               f"ISI input {_fmt(metrics['input']['isi'])} -> stylized {_fmt(metrics['stylized']['isi'])}, "
               f"ITF {_fmt(metrics['input']['itf_db'])} -> {_fmt(metrics['stylized']['itf_db'])} dB")
    progress.result(summary, path=report["outputs"]["stylized"])
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
