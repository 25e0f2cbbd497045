"""Every stage's options as a typed dataclass: the one place where a command-line flag is declared.

A field's metadata holds its flag, help, choices and type, so one declaration gives the stage
command's flag, the ``build`` command's flag (when the field is offered there), the argv the
Blender add-on writes (``to_argv``) and the typed object a stage runs on (``from_args``).
``BuildOptions`` is made of the stage options; a field that ``build`` sets itself (a stage's
``--out``, train's ``--images``) is marked ``in_build=False`` and is not a build flag.

Stdlib only: the Blender add-on imports this module.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

STAGES = ("prepare", "stylize", "train", "export")
TRAIN_PRESETS = ("default", "cpu-fast", "gpu-paper", "tiny", "oneshot")
STAGE, BUILD = "stage", "build"


def option(default: Any = None, help: str = "", *, flags: tuple[str, ...] = (),
           build_flags: tuple[str, ...] = (), type: Any = None, choices: tuple | None = None,
           metavar: str | None = None, required: bool = False, append: bool = False,
           in_build: bool = True, group: str | None = None, hidden: bool = False) -> Any:
    """A dataclass field that is also a command-line flag.

    ``flags`` default to ``--field-name``; ``build_flags`` replace them in ``build`` (e.g.
    stylize's ``--strength`` is build's ``--style-strength``). ``hidden`` fields are no flag at all.
    A bool field is a switch: ``--flag`` sets True, or, when its default is True, False.
    """
    metadata = {"help": help, "flags": flags, "build_flags": build_flags, "type": type,
                "choices": choices, "metavar": metavar, "required": required, "append": append,
                "in_build": in_build, "group": group, "hidden": hidden}
    if append:
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


def nested(cls: type) -> Any:
    """A field holding another stage's options; its flags join the parent's."""
    return field(default_factory=cls, metadata={"nested": True})


# -- the stages' options -----------------------------------------------------------------------
@dataclass
class TrackOptions:
    """How the head model is fitted to the landmarks (the tracking half of ``prepare``)."""

    head_model: str = option("builtin", "'builtin' or a FLAME file (generic_model.pkl, "
                             "flame2023.pkl, .npz)")
    landmark_embedding: str | None = option(
        None, "for a FLAME --head-model: its mediapipe_landmark_embedding.npz (lmk_face_idx, "
        "lmk_b_coords, landmark_indices); with the built-in model, one that replaces its own "
        "(landmark i = canonical vertex i)", metavar="FILE")
    n_expressions: int = option(50, "expression coefficients to fit (default 50)",
                                flags=("--expressions",))
    focal: float | None = option(None, "focal length of the source in pixels, held fixed "
                                 "(default: 0.9 x the long side, refined by the fit)", type=float)
    fit_iterations: int | None = option(None, "most Levenberg-Marquardt steps of the fit "
                                        "(default 12)", type=int)
    refine: str = option("none", "photometric: after the landmark fit, align the head to the "
                         "pixels (more accurate, about 2.5 s per frame on a 2-core CPU; default "
                         "none)", choices=("none", "photometric"), build_flags=("--refine-tracking",))
    eye_contact: str | None = option(None, "frames of the prepared clip (0-based, inclusive) in "
                                     "which the person looks into the lens: calibrates the gaze "
                                     "of the whole clip", metavar="A-B")


@dataclass
class PrepareOptions:
    """``prepare``: a video, image folder or portrait in; the prepared-data folder out."""

    video: str | None = option(None, "a video file (mp4, mov, webm, mkv, ...)", group="input")
    images: str | None = option(None, "a folder of images of one face, sorted by name",
                                group="input")
    image: str | None = option(None, "one portrait photo (one-shot mode)", group="input")
    from_metrical: str | None = option(None, "a metrical-tracker / INSTA folder "
                                       "(checkpoint/*.frame + images/)", metavar="DIR",
                                       group="input", in_build=False)
    from_vhap: str | None = option(None, "a VHAP output folder (tracked_flame_params*.npz + "
                                   "transforms.json)", metavar="DIR", group="input",
                                   in_build=False)
    out: str = option("prepared", "the prepared-data folder to write", required=True,
                      in_build=False)
    start: float = option(0.0, "first second of the video to use (image index for --images)",
                          in_build=False)
    end: float | None = option(None, "stop at this second of the video (image index for "
                               "--images)", type=float, in_build=False)
    stride: int = option(1, "keep every N-th frame", in_build=False)
    size: int = option(0, "working resolution in pixels, a square crop (default 0: automatic, the "
                       "crop's side in source pixels rounded up to a multiple of 64, within "
                       "256..512)")
    fps: float = option(25.0, "frame rate for --images")
    masks: str | None = option(None, "a folder of your own masks (one per source frame) instead "
                               "of mediapipe selfie segmentation: the whole person (hair, neck, "
                               "body), not the face alone; --refine photometric keeps the head "
                               "inside them")
    hands: bool = option(True, "do not look for hands in front of the face (by default their "
                         "region, found with mediapipe Hands, is no training target)",
                         flags=("--no-hands",))
    crop_scale: float = option(2.2, "crop side as a multiple of the face size (default 2.2)")
    detect_size: int = option(640, hidden=True)  # long side of the detection pass's frames
    min_face_fraction: float = option(0.3, "fail when fewer frames than this show a face "
                                      "(default 0.3)")
    qa: bool = option(True, "skip the QA pictures", flags=("--no-qa",))
    track: TrackOptions = nested(TrackOptions)

    def source(self) -> str:
        """The one input: the video, image folder or photo.

        Raises:
            InputError: none or several of them are given.
        """
        from ..errors import InputError

        given = [v for v in (self.video, self.images, self.image) if v]
        if len(given) != 1:
            raise InputError("give exactly one input: --video FILE, --images FOLDER or --image PHOTO")
        return given[0]


@dataclass
class StyleOptions:
    """``stylize``: Stage 1, prepared frames -> stylized frames."""

    data: str = option("", "the prepared-data folder (reads frames/, writes stylized/)",
                       metavar="DIR", required=True, in_build=False)
    style: str = option("cel", "cel (default; face-aware) | toon | exemplar:IMAGE | model:FILE (.pt "
                        "TorchScript or "
                        ".onnx) | frames:DIR (frames stylized elsewhere); build also takes none "
                        "(train on the real frames), and exemplar, model or folder with the path "
                        "from --exemplar, --style-model or --stylized-folder", metavar="SPEC")
    strength: float | None = option(None, "0 = input unchanged .. 1 = full style (1)", type=float,
                                    build_flags=("--style-strength",), group="style parameters")
    levels: int | None = option(None, "luminance bands (cel: per region, 2..6 (3); toon: 2..16 (5))",
                                type=int,
                                group="style parameters")
    line_weight: float | None = option(None, "ink line width, 0 = no lines .. 4 (1)", type=float,
                                       group="style parameters")
    smoothing: float | None = option(None, "edge-preserving smoothing, 0..4 (1)", type=float,
                                     group="style parameters")
    param: list[str] = option(help="any other style parameter, repeatable (e.g. saturation=1.3, "
                              "temporal=0.8, colors=6, tone=0.5, palette=0.8); see docs/STYLIZE.md",
                              metavar="KEY=VALUE", append=True, group="style parameters")
    model_layout: str | None = option(None, "user model's tensor layout (default: its sidecar "
                                      "JSON's)", choices=("NCHW", "NHWC"), group="user models")
    model_range: str | None = option(None, "user model's input value range; write "
                                     "--model-range=-1,1 (with '=') for -1,1",
                                     choices=("0,1", "-1,1", "0,255"), group="user models")
    model_output_range: str | None = option(None, "output value range (default: the input "
                                            "range; '=' form as above)",
                                            choices=("0,1", "-1,1", "0,255"), group="user models")
    model_channels: str | None = option(None, "user model's channel order",
                                        choices=("RGB", "BGR"), group="user models")
    model_size_multiple: int | None = option(None, "pad height and width to a multiple",
                                             type=int, group="user models")
    model_input_size: int | None = option(None, "resize to this square size first", type=int,
                                          group="user models")
    model_device: str = option("cpu", "torch device for TorchScript models (cpu)",
                               flags=("--device",), group="user models", in_build=False)
    region: str = option("full", "full: stylize whole frames (default); face: a square around "
                         "the face, blended back with a feathered mask", choices=("full", "face"),
                         group="face region")
    face_box: str = option("auto", "where the face square comes from (auto: masks/, then "
                           "tracking.npz, then the centre)",
                           choices=("auto", "mask", "tracking", "center"), group="face region")
    face_margin: float = option(0.25, "enlarge the face box by this fraction (0.25)",
                                group="face region")


@dataclass
class TrainOptions:
    """``train``: Stage 2, a Gaussian blendshape avatar from prepared data."""

    data: str = option("", "prepared-data folder (frames/, masks/, tracking.npz)", required=True,
                       in_build=False)
    out: str = option("", "output folder for checkpoints and the avatar", required=True,
                      in_build=False)
    preset: str = option("default", "training preset; default: gpu-paper on CUDA, cpu-fast "
                         "otherwise (single-frame data, e.g. from `prepare --image`, trains in "
                         "one-shot mode whatever the preset)", choices=TRAIN_PRESETS)
    iters: int | None = option(None, "training iterations (the preset's if unset)", type=int)
    resume: bool = option(False, "continue from OUT/checkpoint.pt", in_build=False)
    images: str = option("frames", "train on the real or the stylized frames",
                         choices=("frames", "stylized"), in_build=False)
    device: str = option("auto", "where to train and render: auto, cpu or cuda",
                         choices=("auto", "cpu", "cuda"))
    head_model: str | None = option(None, "head model: builtin or a FLAME file (default: what "
                                    "the tracking names)", in_build=False)
    seed: int | None = option(None, "random seed", type=int)
    threads: int = option(0, "CPU threads for torch (default 0: one thread when the machine is "
                          "already busy, i.e. load average >= cores - 1, else torch's choice)")
    progressive: bool = option(False, "3DToonify schedule: fit the real frames, then adapt "
                               "geometry on near-frontal stylized frames, then colours on all "
                               "stylized frames (needs stylized/)")
    frontal_yaw: float = option(0.2, "with --progressive: largest |head yaw| in radians of the "
                                "geometry phase (default 0.2)")
    novel_prior: float | None = option(None, "weight of the novel-view prior (side views of the "
                                       "head model must be opaque; docs/TRAINING.md): 0 turns it "
                                       "off (default: the preset's, 1 in cpu-fast, 0 in gpu-paper)",
                                       type=float, metavar="WEIGHT")
    register_at: float | None = option(None, "share of the run (0..1) after which every frame's "
                                       "head pose is registered against the half-trained avatar "
                                       "(docs/TRAINING.md): 0 turns it off (default: the preset's, "
                                       "0.5 in cpu-fast, 0 in gpu-paper)", type=float,
                                       metavar="SHARE")


@dataclass
class BuildOptions:
    """``build``: every stage in one resumable command; the stages' own options nest inside."""

    out: str = option("", "the build folder (created; re-run to resume)", required=True)
    exemplar: str | None = option(None, "style image for --style exemplar")
    style_model: str | None = option(None, "TorchScript/ONNX model for --style model")
    stylized_folder: str | None = option(None, "already-stylized frames for --style folder")
    frame_start: int = option(0, "first video frame to use")
    frame_end: int = option(-1, "last video frame (-1: the end)")
    frame_stride: int = option(1, "use every N-th frame")
    force: list[str] = option(help=f"redo this stage even if complete ({', '.join(STAGES)}); "
                              "repeatable", choices=STAGES, metavar="STAGE", append=True)
    stop_after: str | None = option(None, "stop once this stage is complete (e.g. prepare, to "
                                    "look at the tracking QA picture first); re-run without it "
                                    "to go on", choices=STAGES, metavar="STAGE")
    full_reenactment: bool = option(False, "also render the avatar driven by every frame of the "
                                    "clip (OUT/reenactment.mp4); by default only a short preview "
                                    "of the held-out frames")
    proportions: str = option("none", "toon proportions in 3D, applied to the exported avatar "
                              "(train/avatar.npz is kept as trained): PRESET[:STRENGTH], presets "
                              "none (default), subtle, toon, chibi; strength 0..1 (1). Changing it "
                              "re-runs only the export", metavar="SPEC")
    proportions_anchors: str | None = option(None, "with --proportions and a FLAME head model "
                                             "without a landmark embedding: a JSON file of "
                                             "anchor vertex ids (docs/STYLIZE.md)",
                                             metavar="FILE")
    prepare: PrepareOptions = nested(PrepareOptions)
    style: StyleOptions = nested(StyleOptions)
    train: TrainOptions = nested(TrainOptions)


# -- flags <-> options ---------------------------------------------------------------------------
def _leaves(cls: type, context: str):
    """(path, field) of every flag of ``cls`` in ``context``, nested options flattened."""
    for item in fields(cls):
        if item.metadata.get("nested"):
            for path, leaf in _leaves(item.default_factory, context):
                yield (item.name, *path), leaf
        elif not item.metadata.get("hidden") and (context == STAGE or item.metadata["in_build"]):
            yield (item.name,), item


def _default(item) -> Any:
    return item.default_factory() if item.default is MISSING else item.default


def _flags(item, context: str) -> tuple[str, ...]:
    meta = item.metadata
    if context == BUILD and meta["build_flags"]:
        return meta["build_flags"]
    return meta["flags"] or ("--" + item.name.replace("_", "-"),)


def add_arguments(parser: argparse.ArgumentParser, cls: type, context: str = STAGE) -> None:
    """Add a flag for every field of ``cls`` offered in ``context`` (``stage`` or ``build``)."""
    groups: dict[str, Any] = {}
    for _, item in _leaves(cls, context):
        meta, default = item.metadata, _default(item)
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kwargs: dict[str, Any] = {"dest": item.name, "help": meta["help"]}
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            kwargs["default"] = [] if meta["append"] else default
            kwargs["type"] = meta["type"] or (type(default) if default is not None and not meta[
                "append"] else str)
            for key in ("choices", "metavar", "required"):
                if meta[key]:
                    kwargs[key] = meta[key]
            if meta["append"]:
                kwargs["action"] = "append"
        target.add_argument(*_flags(item, context), **kwargs)


def from_args(cls: type, args: argparse.Namespace, context: str = STAGE, **values: Any) -> Any:
    """Options of type ``cls`` from parsed flags; fields without a flag keep their default,
    ``values`` set fields of the top level directly."""
    kwargs: dict[str, Any] = {}
    for item in fields(cls):
        if item.name in values:
            kwargs[item.name] = values[item.name]
        elif item.metadata.get("nested"):
            kwargs[item.name] = from_args(item.default_factory, args, context)
        elif not item.metadata.get("hidden") and (context == STAGE or item.metadata["in_build"]) \
                and hasattr(args, item.name):
            value = getattr(args, item.name)
            kwargs[item.name] = list(value) if item.metadata["append"] else value
    return cls(**kwargs)


def to_argv(options: Any, context: str = STAGE) -> list[str]:
    """The flags that give ``options`` back through ``add_arguments`` + ``from_args``: every field
    that differs from its default (fields without a flag in ``context`` are left out)."""
    argv: list[str] = []
    for path, item in _leaves(type(options), context):
        value = options
        for name in path:
            value = getattr(value, name)
        default = _default(item)
        if value == default:
            continue
        flag = _flags(item, context)[0]
        if isinstance(default, bool):
            argv.append(flag)
        elif item.metadata["append"]:
            for entry in value:
                argv += _flag_value(flag, entry)
        elif value is not None:
            argv += _flag_value(flag, value)
    return argv


def _flag_value(flag: str, value: Any) -> list[str]:
    """``[flag, value]``, or ``[flag=value]`` for a value argparse would take for a flag (-1,1)."""
    text = format(value, "g") if isinstance(value, float) else str(value)
    return [f"{flag}={text}"] if text.startswith("-") else [flag, text]


def changed(options: Any) -> dict[str, Any]:
    """The fields that differ from their defaults, nested options flattened to dotted names: what
    a stage's outputs depend on (a new option left at its default changes nothing)."""
    result: dict[str, Any] = {}
    for item in fields(options):
        value = getattr(options, item.name)
        if is_dataclass(value):
            result.update({f"{item.name}.{k}": v for k, v in changed(value).items()})
        elif value != _default(item):
            result[item.name] = value
    return result
