"""``python -m backend proportions``: toon proportions in 3D for an avatar file.

    python -m backend proportions --avatar A.npz --proportions toon:0.8 --out B.npz
        [--flame FILE [--landmark-embedding FILE]] [--proportions-anchors FILE]

The deformation is ``backend/formats/proportions.py``; its anchors come from the head model's
landmarks (``backend/headmodel/proportions.py``). docs/STYLIZE.md, "Toon proportions in 3D".
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..formats.proportions import PRESETS

    parser.add_argument("--avatar", required=True, help="avatar file (.npz) written by train or build")
    parser.add_argument("--proportions", default="toon", metavar="SPEC",
                        help=f"PRESET[:STRENGTH]: presets {', '.join(PRESETS)} (default toon), "
                             "strength 0..1 (default 1); none or 0 removes them. Always applied "
                             "to the avatar as it was before any proportions (never compounds)")
    parser.add_argument("--out", required=True, help="the avatar file to write (.npz)")
    parser.add_argument("--flame", default=None, metavar="FILE",
                        help="the FLAME file the avatar was trained with (not needed for the "
                             "built-in head model)")
    parser.add_argument("--landmark-embedding", default=None, metavar="FILE",
                        help="with --flame: its mediapipe_landmark_embedding.npz (where the "
                             "proportions' anchors come from)")
    parser.add_argument("--proportions-anchors", default=None, metavar="FILE",
                        help="a JSON object {anchor: [vertex ids]} instead of landmarks (for a "
                             "FLAME file without a landmark embedding; docs/STYLIZE.md lists the "
                             "anchors)")


def run(args: argparse.Namespace, progress) -> int:
    from ..formats import avatar as avatar_format
    from ..formats.proportions import parse_spec
    from ..headmodel.proportions import apply_proportions

    spec = parse_spec(args.proportions)
    progress.stage("proportions", f"{spec} on {args.avatar}")
    avatar = avatar_format.read(args.avatar)
    result = apply_proportions(avatar, spec, head_model=args.flame,
                               landmark_embedding=args.landmark_embedding,
                               anchors_file=args.proportions_anchors)
    avatar_format.write(args.out, result, delta_dtype=avatar.delta_means.dtype)
    what = f"proportions {spec}" if result.has_proportions else "no proportions"
    progress.result(f"wrote {args.out} ({what})", path=args.out)
    return 0
