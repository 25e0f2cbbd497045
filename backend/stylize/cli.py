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
    from ..formats.options import StyleOptions, add_arguments

    add_arguments(parser, StyleOptions)


def run(args: argparse.Namespace, progress) -> int:
    from ..formats.options import StyleOptions, from_args

    stylize(from_args(StyleOptions, args), progress)
    return 0


def stylize(options, progress) -> dict:
    """Stylize ``options.data``'s frames (a ``StyleOptions``); returns the stylize.json report."""
    from ..errors import InputError
    from .pipeline import list_frames, make_box_source, stylize_folder
    from .styles import parse_params, parse_style

    kind, argument = parse_style(options.style)
    frames_dir, names = list_frames(options.data)
    params = parse_params(options.param)
    for name in SHORTHANDS:
        if getattr(options, name) is not None:
            params[name] = getattr(options, name)
    if kind == "frames":
        if options.region != "full" or params:
            raise InputError("external frames are used as they are: drop --region and the style "
                             "parameters with --style frames:DIR")
        from .external import ExternalFrames, pair_external_frames

        stylizer = ExternalFrames(pair_external_frames(argument, frames_dir, names), argument)
    elif kind == "model":
        from .styles import model_stylizer

        overrides = {"layout": options.model_layout, "value_range": options.model_range,
                     "output_range": options.model_output_range,
                     "channels": options.model_channels,
                     "size_multiple": options.model_size_multiple,
                     "input_size": options.model_input_size}
        stylizer = model_stylizer(argument, overrides, options.model_device, params)
    else:
        from .styles import builtin_stylizer

        stylizer = builtin_stylizer(options.style, params)
    if options.region == "face":
        from .region import RegionStylizer

        box_source, box_name = make_box_source(options.data, names, options.face_box)
        log.info("face region: boxes from %s", box_name)
        stylizer = RegionStylizer(stylizer, box_source, margin=options.face_margin)
    report = stylize_folder(options.data, stylizer, progress, style=options.style,
                            frame_names=names)
    metrics = report["metrics"]
    summary = (f"stylized {report['n_frames']} frames at {report['timing']['stylize_fps']:.1f} fps; "
               f"ISI input {_fmt(metrics['input']['isi'])} -> stylized {_fmt(metrics['stylized']['isi'])}, "
               f"ITF {_fmt(metrics['input']['itf_db'])} -> {_fmt(metrics['stylized']['itf_db'])} dB")
    if metrics["eyes"]["eye_contrast_ratio"] is not None:
        summary += f"; eye contrast kept {_fmt(metrics['eyes']['eye_contrast_ratio'])}x"
    if report.get("notes", {}).get("warning"):
        summary += f" ({report['notes']['warning']})"
    progress.result(summary, path=report["outputs"]["stylized"])
    return report


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
