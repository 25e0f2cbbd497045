"""``python -m backend head-model info|export-obj|convert|preview``: inspect and convert head models."""

from __future__ import annotations

import argparse
import os

ACTIONS = ("info", "export-obj", "convert", "preview")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS,
                        help="info: structure and expression names; export-obj: template and every "
                             "expression as OBJ; convert: a FLAME pkl to a clean npz; preview: a PNG "
                             "grid of the expressions")
    parser.add_argument("--model", default="builtin",
                        help="'builtin' (default) or a FLAME .pkl/.npz you own")
    parser.add_argument("--n-expressions", type=int, default=50, help="expressions to keep (default 50)")
    parser.add_argument("--landmarks", default=None,
                        help="FLAME only: mediapipe_landmark_embedding.npz or landmark_embedding.npy")
    parser.add_argument("--out", default=None,
                        help="export-obj: output folder; convert: output .npz; preview: output .png")
    parser.add_argument("--size", type=int, default=192, help="preview: pixels per tile (default 192)")
    parser.add_argument("--weight", type=float, default=1.0, help="preview/export-obj: expression weight")


def run(args: argparse.Namespace, progress) -> int:
    from ..errors import InputError
    from . import load_assets

    if args.action != "info" and not args.out:
        raise InputError(f"head-model {args.action} needs --out")
    progress.stage("head-model", f"loading {args.model}")
    assets = load_assets(args.model, args.n_expressions, args.landmarks)
    if args.action == "info":
        print(_info(assets))
        return 0
    if args.action == "convert":
        from .flame import write_converted

        out = args.out if args.out.endswith(".npz") else args.out + ".npz"
        write_converted(out, assets)
        progress.result("converted head model written", path=out)
        return 0
    if args.action == "export-obj":
        _export_obj(assets, args.out, args.weight, progress)
        return 0
    from .preview import expression_grid

    expression_grid(assets, args.out, tile=args.size, weight=args.weight)
    progress.preview(args.out, "expression grid")
    progress.result("preview written", path=args.out)
    return 0


def _info(assets) -> str:
    lines = [f"kind: {assets.kind}", f"source: {assets.source}",
             f"vertices: {len(assets.v_template)}  faces: {len(assets.faces)}",
             f"shape directions: {assets.shapedirs.shape[-1]}  expressions: {assets.exprdirs.shape[-1]}",
             f"landmarks: {len(assets.landmark_ids)}", "joints: root, neck, jaw, eye_L, eye_R",
             "expression names: " + ", ".join(assets.expression_names)]
    return "\n".join(lines)


def _export_obj(assets, folder: str, weight: float, progress) -> None:
    from ..fileio import ensure_writable_folder, write_bytes

    ensure_writable_folder(folder)
    faces = assets.faces + 1
    face_text = "".join(f"f {a} {b} {c}\n" for a, b, c in faces)
    items = [("template", assets.v_template)] + [
        (name, assets.v_template + weight * assets.exprdirs[:, :, k])
        for k, name in enumerate(assets.expression_names)]
    for step, (name, vertices) in enumerate(items):
        text = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
        write_bytes(os.path.join(folder, f"{name}.obj"), (f"# {assets.kind} {name}\n" + text
                                                           + face_text).encode())
        progress.progress(step + 1, len(items), name)
    progress.result(f"{len(items)} OBJ files written", path=folder)
