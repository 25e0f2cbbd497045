"""``python -m backend prepare``: video / images / portrait -> prepared-data folder.

Also converts existing trackings (``--from-metrical DIR``, ``--from-vhap DIR``) into the same
folder layout. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = parser.add_argument_group("input (exactly one)")
    inputs.add_argument("--video", help="a video file (mp4, mov, webm, mkv, ...)")
    inputs.add_argument("--images", help="a folder of images, sorted by name")
    inputs.add_argument("--image", help="one portrait photo (one-shot mode)")
    inputs.add_argument("--from-metrical", metavar="DIR",
                        help="a metrical-tracker / INSTA folder (checkpoint/*.frame + images/)")
    inputs.add_argument("--from-vhap", metavar="DIR",
                        help="a VHAP output folder (tracked_flame_params*.npz + transforms.json)")
    parser.add_argument("--out", required=True, help="the prepared-data folder to write")
    parser.add_argument("--head-model", default="builtin",
                        help="'builtin' or a FLAME file (generic_model.pkl, flame2023.pkl, .npz)")
    parser.add_argument("--landmark-embedding", metavar="FILE",
                        help="for a FLAME --head-model: its mediapipe_landmark_embedding.npz "
                             "(lmk_face_idx, lmk_b_coords, landmark_indices); with the built-in "
                             "model, one that replaces its own (landmark i = canonical vertex i)")
    parser.add_argument("--expressions", type=int, default=50, dest="n_expressions",
                        help="expression coefficients to fit (default 50)")
    parser.add_argument("--start", type=float, default=0.0,
                        help="first second of the video to use (image index for --images)")
    parser.add_argument("--end", type=float, default=None,
                        help="stop at this second of the video (image index for --images)")
    parser.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    parser.add_argument("--size", type=int, default=512, help="working resolution (square crop)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate for --images")
    parser.add_argument("--masks", help="a folder of your own masks (one per source frame) "
                                        "instead of mediapipe selfie segmentation: the whole "
                                        "person (hair, neck, body), not the face alone; "
                                        "--refine photometric keeps the head inside them")
    parser.add_argument("--focal", type=float, default=None,
                        help="focal length of the source in pixels, held fixed (default: 0.9 x "
                             "the long side, refined by the fit)")
    parser.add_argument("--refine", choices=("none", "photometric"), default="none",
                        help="photometric: after the landmark fit, align the head to the pixels "
                             "(more accurate, about 2.5 s per frame on a 2-core CPU; default none)")
    parser.add_argument("--eye-contact", metavar="A-B", default=None,
                        help="frames of the prepared clip (0-based, inclusive) in which the person "
                             "looks into the lens: calibrates the gaze of the whole clip")
    parser.add_argument("--crop-scale", type=float, default=2.2,
                        help="crop side as a multiple of the face size (default 2.2)")
    parser.add_argument("--fit-iterations", type=int, default=None,
                        help="most Levenberg-Marquardt steps of the fit (default 12)")
    parser.add_argument("--min-face-fraction", type=float, default=0.3,
                        help="fail when fewer frames than this show a face (default 0.3)")
    parser.add_argument("--no-qa", action="store_true", help="skip the QA pictures")


def run(args: argparse.Namespace, progress) -> int:
    from ..errors import InputError

    if args.size < 64 or args.size > 4096:
        raise InputError(f"--size must be between 64 and 4096 pixels, got {args.size}")
    if args.from_metrical or args.from_vhap:
        from ..tracking import converters

        if args.video or args.images or args.image or (args.from_metrical and args.from_vhap):
            raise InputError("give one input: --from-metrical or --from-vhap cannot be combined "
                             "with --video/--images/--image or with each other")
        if args.from_metrical:
            converters.convert_metrical(args.from_metrical, args.out, args.head_model, progress)
        else:
            converters.convert_vhap(args.from_vhap, args.out, args.head_model, progress)
        return 0
    from .prepare import PrepareOptions, prepare

    options = PrepareOptions(
        video=args.video, images=args.images, image=args.image, out=args.out,
        head_model=args.head_model, landmark_embedding=args.landmark_embedding,
        n_expressions=args.n_expressions, start=args.start,
        end=args.end, stride=args.stride, size=args.size, fps=args.fps, masks=args.masks,
        focal=args.focal, crop_scale=args.crop_scale, fit_iterations=args.fit_iterations,
        refine=args.refine, eye_contact=args.eye_contact,
        min_face_fraction=args.min_face_fraction, qa=not args.no_qa)
    prepare(options, progress)
    return 0
