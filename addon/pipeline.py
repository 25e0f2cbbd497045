"""What the add-on asks the backend to do: argument lists for ``python -m backend`` and the
handling of their results. Shared by the operators and the batch scripts (no UI here)."""

from __future__ import annotations

import os

from ..backend.errors import ToonSplatError
from ..backend.formats import options
from ..backend.formats import proportions as proportions_format
from . import runner


def build_arguments(video: str, out_dir: str, style: str = "cel", style_strength: float = 0.8,
                    exemplar: str = "", style_model: str = "", stylized_folder: str = "",
                    preset: str = "default", iterations: int = 0, device: str = "auto",
                    frame_start: int = 0, frame_end: int = -1, frame_stride: int = 1,
                    size: int = 0, head_model: str = "builtin", landmark_embedding: str = "",
                    stop_after: str = "", refine_tracking: bool = False,
                    eye_contact: str = "", proportions: str = "none",
                    proportions_strength: float = 1.0) -> list[str]:
    """Arguments of ``python -m backend build`` (after the command name), written from the
    backend's own ``BuildOptions``; ``stop_after`` names the last stage to run (``prepare``:
    check the tracking before the long part); ``refine_tracking`` adds the photometric
    refinement of the tracking; ``eye_contact`` ("A-B") names the frames in which the person
    looks into the lens; ``proportions`` (a preset, ``none`` for none) and
    ``proportions_strength`` (0..1) become ``--proportions PRESET:STRENGTH``.

    Raises:
        ToonSplatError: the video or a file the style needs is missing, or a setting the backend
            does not know.
    """
    if not video or not os.path.exists(video):
        raise ToonSplatError(f"video not found: {video!r}; choose a video file or image folder "
                             "in the Video panel (or pass --video)")
    needs = {"exemplar": exemplar, "model": style_model, "folder": stylized_folder}
    if style in needs and not (needs[style] and os.path.exists(needs[style])):
        raise ToonSplatError(f"the '{style}' style needs its {style} path; set it in the Style panel")
    if preset not in options.TRAIN_PRESETS:
        raise ToonSplatError(f"unknown training preset {preset!r}; one of "
                             f"{', '.join(options.TRAIN_PRESETS)}")
    spec = proportions_spec(proportions, proportions_strength)
    track = options.TrackOptions(head_model=head_model,
                                 landmark_embedding=landmark_embedding or None,
                                 refine="photometric" if refine_tracking else "none",
                                 eye_contact=eye_contact.strip() or None)
    build = options.BuildOptions(
        out=out_dir, exemplar=exemplar if style == "exemplar" else None,
        style_model=style_model if style == "model" else None,
        stylized_folder=stylized_folder if style == "folder" else None,
        frame_start=frame_start, frame_end=max(frame_end, -1), frame_stride=frame_stride,
        stop_after=stop_after or None, proportions=spec or "none",
        prepare=options.PrepareOptions(video=video, size=size, track=track),
        style=options.StyleOptions(style=style,
                                   strength=None if style_strength == 0.8 else style_strength),
        train=options.TrainOptions(preset=preset, iters=iterations if iterations > 0 else None,
                                   device=device))
    return options.to_argv(build, options.BUILD)


def proportions_spec(preset: str, strength: float) -> str | None:
    """``PRESET:STRENGTH`` for ``build --proportions``, or None (no flag) for ``none`` or 0.

    Raises:
        ToonSplatError: a preset the backend does not know, or a strength outside 0..1.
    """
    if preset not in proportions_format.PRESETS:
        raise ToonSplatError(f"unknown proportions preset {preset!r}; one of "
                             f"{', '.join(proportions_format.PRESETS)}")
    if not 0.0 <= strength <= 1.0:
        raise ToonSplatError(f"the proportions strength {strength:g} is outside 0..1; set it in "
                             "the Style panel")
    if preset == "none" or strength == 0.0:
        return None
    return str(proportions_format.ProportionsSpec(preset, float(strength)))


def export_arguments(avatar_path: str, out_path: str, export_format: str,
                     tracking_path: str = "") -> tuple[str, list[str]]:
    """The backend command and its arguments for an export: ``export`` (3DGS PLY, posed by the
    tracking's first frame when given) or ``render`` (a reenactment video of the tracking)."""
    if not avatar_path or not os.path.isfile(avatar_path):
        raise ToonSplatError(f"avatar file not found: {avatar_path!r}; set it in the Avatar panel")
    if not out_path:
        raise ToonSplatError("choose an output path in the Export panel")
    if export_format == "video":
        if not tracking_path or not os.path.isfile(tracking_path):
            raise ToonSplatError("a reenactment video needs a tracking file; set it in the Avatar panel")
        return "render", ["--avatar", avatar_path, "--tracking", tracking_path, "--out", out_path]
    arguments = ["--avatar", avatar_path, "--out", out_path]
    if tracking_path:
        arguments += ["--tracking", tracking_path]
    return "export", arguments


def result_files(state: runner.RunState, out_dir: str) -> tuple[str, str]:
    """The avatar and tracking files a finished build produced.

    Reads ``avatar``/``tracking`` fields of ``result`` events (or a ``path`` ending in .npz),
    and falls back to ``OUT/avatar.npz`` and ``OUT/tracking.npz`` or ``OUT/data/tracking.npz``.
    """
    avatar_path = tracking_path = ""
    for event in state.results:
        avatar_path = event.get("avatar", avatar_path)
        tracking_path = event.get("tracking", tracking_path)
        path = event.get("path", "")
        if path.endswith(".npz") and not avatar_path and "tracking" not in os.path.basename(path):
            avatar_path = path
    avatar_path = avatar_path or os.path.join(out_dir, "avatar.npz")
    for candidate in (os.path.join(out_dir, "tracking.npz"), os.path.join(out_dir, "data", "tracking.npz")):
        if not tracking_path and os.path.isfile(candidate):
            tracking_path = candidate
    if not os.path.isfile(avatar_path):
        raise ToonSplatError(f"the build finished but wrote no avatar file ({avatar_path}); "
                             f"see the log {state.log_path}")
    return avatar_path, tracking_path if os.path.isfile(tracking_path) else ""
