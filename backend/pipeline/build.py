"""``python -m backend build``: prepare -> stylize -> train -> evaluate -> export, resumable.

Each stage runs on its own typed options (``backend/formats/options.py``), derived from the
build's: the build sets the folders and the source, the rest is what the user gave. Layout of
the build folder::

    OUT/data/           prepare's prepared-data folder (frames, masks, tracking.npz, stylized/)
    OUT/train/          train's folder (checkpoints, previews, evaluation)
    OUT/avatar.npz      the avatar file (docs/FORMAT.md)
    OUT/avatar.ply      the neutral avatar as standard 3DGS PLY
    OUT/preview.mp4     the avatar driven by the held-out frames' tracking
    OUT/turntable.png   yaw -60..+60 deg; turntable.json: its coverage at +-45 deg
    OUT/reenactment.mp4 (--full-reenactment) the avatar driven by every frame's tracking
    OUT/report.json     stage timings and metrics;  OUT/report.html  the summary page
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError
from ..formats import options as opts
from ..formats.options import BuildOptions, PrepareOptions, StyleOptions, TrainOptions
from ..formats.prepared import FRAMES, MASKS, OCCLUDERS, STYLIZED, PreparedData

log = logging.getLogger("toonsplat")


@dataclass
class Build:
    """A build's folders and the options of each of its stages."""

    options: BuildOptions
    out: str                       # the build folder, absolute

    @property
    def data(self) -> PreparedData:
        return PreparedData(os.path.join(self.out, "data"))

    @property
    def train_dir(self) -> str:
        return os.path.join(self.out, "train")

    @property
    def tracking(self) -> str:
        """The tracking the avatar is animated with: the one it was trained with (train/, its
        poses registered against the avatar), else the prepared data's."""
        trained = os.path.join(self.train_dir, "tracking.npz")
        return trained if os.path.exists(trained) else self.data.tracking

    @property
    def stylized(self) -> bool:
        return self.options.style.style != "none"

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)

    def prepare_options(self) -> PrepareOptions:
        """prepare's options: the source made absolute, the frame range in its seconds."""
        given = self.options.prepare
        given.source()
        absolute = {name: os.path.abspath(value) for name in ("video", "images", "image")
                    if (value := getattr(given, name))}
        start, end, stride = given.start, given.end, self.options.frame_stride
        if given.video and (self.options.frame_start or self.options.frame_end >= 0):
            fps = _video_fps(given.video)
            start = round(self.options.frame_start / fps, 6)
            if self.options.frame_end >= 0:
                end = round((self.options.frame_end + 0.5) / fps, 6)
        return replace(given, out=self.data.root, start=start, end=end, stride=stride, **absolute)

    def style_options(self) -> StyleOptions:
        return replace(self.options.style, data=self.data.root, style=style_spec(self.options))

    def train_options(self) -> TrainOptions:
        from ..train.cli import resolve_preset

        given = self.options.train
        return replace(given, data=self.data.root, out=self.train_dir, resume=True,
                       images=STYLIZED if self.stylized else FRAMES,
                       preset=resolve_preset(given.preset, given.device))


def style_spec(options: BuildOptions) -> str:
    """The stylize stage's --style value: build's shorthands take their path from its flags."""
    style = options.style.style
    paths = {"exemplar": ("exemplar", options.exemplar, "--exemplar"),
             "model": ("model", options.style_model, "--style-model"),
             "folder": ("frames", options.stylized_folder, "--stylized-folder")}
    if style in paths:
        kind, path, flag = paths[style]
        if not path:
            raise InputError(f"--style {style} needs its path: pass {flag} PATH")
        return f"{kind}:{os.path.abspath(path)}"
    return style


def _video_fps(path: str) -> float:
    import av

    try:
        with av.open(path) as container:
            rate = container.streams.video[0].average_rate
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise InputError(f"cannot read the video {path}: {exc}") from exc
    return float(rate) if rate else 25.0


# -- stage functions ---------------------------------------------------------------------------
def _prepare(build: Build, progress) -> tuple[list[str], dict[str, Any]]:
    from .prepare import prepare

    report = prepare(build.prepare_options(), progress)
    metrics = {"frames": build.data.count(FRAMES)}
    metrics.update({k: v for k, v in report.items() if isinstance(v, (int, float)) and k != "frames"})
    outputs = [f"data/{FRAMES}", f"data/{MASKS}", "data/tracking.npz"]
    if os.path.isdir(build.data.folder(OCCLUDERS)):
        outputs.append(f"data/{OCCLUDERS}")
    return outputs, metrics


def _stylize(build: Build, progress) -> tuple[list[str], dict[str, Any]]:
    from ..stylize.cli import stylize

    report = stylize(build.style_options(), progress)
    metrics = {k: v for k, v in report.get("metrics", report).items() if isinstance(v, (int, float))}
    return [f"data/{STYLIZED}"], metrics


def _discard_checkpoint(build: Build) -> None:
    """New frames or stylized frames: the checkpoint was trained on others, never resume it."""
    from ..train.trainer import CHECKPOINT

    path = os.path.join(build.train_dir, CHECKPOINT)
    if os.path.exists(path):
        os.unlink(path)


def _train(build: Build, progress) -> tuple[list[str], dict[str, Any]]:
    from ..train.cli import train

    report = train(build.train_options(), progress)["report"]
    metrics = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    return ["train/avatar.npz", "train/tracking.npz"], metrics


def _validate_train(build: Build) -> None:
    from ..formats import avatar

    avatar.read(os.path.join(build.train_dir, "avatar.npz"))


def _export(build: Build, progress) -> tuple[list[str], dict[str, Any]]:
    """avatar.npz, tracking.npz (the poses it was trained with), avatar.ply, preview.mp4 (the
    held-out frames), turntable.png with its coverage (turntable.json), and reenactment.mp4 of
    every frame with --full-reenactment."""
    import shutil

    from ..export.cli import export_ply, render_orbit, render_reenactment
    from ..export.reenact import preview_frames
    from ..fileio import atomic_path
    from ..formats import tracking as tracking_format

    avatar_path = build.path("avatar.npz")
    if not _export_proportioned(build, avatar_path, progress):
        with atomic_path(avatar_path) as tmp:
            shutil.copyfile(os.path.join(build.train_dir, "avatar.npz"), tmp)
    tracking_path = build.path("tracking.npz")
    with atomic_path(tracking_path) as tmp:
        shutil.copyfile(build.tracking, tmp)
    export_ply(avatar_path, build.path("avatar.ply"), progress)
    held_out = preview_frames(tracking_format.read(tracking_path).n_frames)
    render_reenactment(avatar_path, tracking_path, build.path("preview.mp4"), progress,
                       frames=held_out)
    coverage = render_orbit(avatar_path, build.path("turntable.png"), progress,
                            tracking_path=tracking_path,
                            frame=int(held_out[len(held_out) // 2]), video=False)
    outputs = ["avatar.npz", "tracking.npz", "avatar.ply", "preview.mp4", "turntable.png", "turntable.json"]
    if build.options.full_reenactment:
        render_reenactment(avatar_path, tracking_path, build.path("reenactment.mp4"), progress)
        outputs.append("reenactment.mp4")
    metrics = {"avatar_mb": round(os.path.getsize(avatar_path) / 1e6, 2),
               "preview_frames": len(held_out), "turntable_frame": coverage["frame"]}
    metrics.update({k: v for k, v in coverage.items() if k.startswith(("coverage_", "surface_"))})
    return outputs, metrics


def proportions_spec(options: BuildOptions):
    """The build's ``--proportions`` as a ProportionsSpec (InputError if malformed)."""
    from ..formats.proportions import parse_spec

    return parse_spec(options.proportions)


def _export_proportioned(build: Build, avatar_path: str, progress) -> bool:
    """Write ``avatar_path`` as train/avatar.npz with the build's proportions, anchored on the
    tracking's head model; False (nothing written) when the proportions are none."""
    spec = proportions_spec(build.options)
    if spec.is_identity:
        return False
    from ..formats import avatar as avatar_format
    from ..formats import tracking as tracking_format
    from ..headmodel.proportions import apply_proportions

    progress.log(f"export: toon proportions {spec}")
    named = tracking_format.read(build.data.tracking).head_model
    path = named.get("path")
    head_model = path if path and named.get("kind", "builtin") != "builtin" else None
    trained = avatar_format.read(os.path.join(build.train_dir, "avatar.npz"))
    result = apply_proportions(trained, spec, head_model=head_model,
                               landmark_embedding=named.get("landmark_embedding") if head_model else None,
                               anchors_file=build.options.proportions_anchors)
    avatar_format.write(avatar_path, result, delta_dtype=trained.delta_means.dtype)
    return True


def _export_params(build: Build) -> dict[str, Any]:
    """What the export stage's outputs depend on besides the trained avatar: the default
    (no proportions, no full reenactment) records nothing, so older builds stay complete."""
    params: dict[str, Any] = {"full_reenactment": True} if build.options.full_reenactment else {}
    spec = proportions_spec(build.options)
    if not spec.is_identity:
        params["proportions"] = str(spec)
        if build.options.proportions_anchors:
            params["proportions_anchors"] = os.path.abspath(build.options.proportions_anchors)
    return params


def _validate_export(build: Build) -> None:
    from ..formats import avatar

    avatar.read(build.path("avatar.npz"))


def make_stages(build: Build, progress):
    """The build's stages in order, with their expected share of the time. A stage's recorded
    parameters are its options that differ from the defaults, so an option added later (at its
    default) leaves earlier builds complete."""
    from .stages import Stage

    proportions_spec(build.options)  # a bad --proportions fails now, not after training
    stages = [
        Stage("prepare", lambda b: _prepare(b, progress), lambda b: b.data.validate(FRAMES, MASKS),
              lambda b: opts.changed(b.prepare_options()), weight=1.0,
              hint="check the input video/images (a visible, unobstructed face) and re-run"),
        Stage("stylize", lambda b: _stylize(b, progress), lambda b: b.data.validate(STYLIZED),
              lambda b: opts.changed(b.style_options()), weight=0.5,
              hint="check the --style argument (cel, toon, exemplar:IMG, model:FILE, frames:DIR) "
                   "and re-run"),
        Stage("train", lambda b: _train(b, progress), _validate_train,
              lambda b: opts.changed(b.train_options()), weight=6.0,
              hint="re-run the same command to resume from the last checkpoint",
              fresh=_discard_checkpoint),
        Stage("export", lambda b: _export(b, progress), _validate_export, _export_params,
              weight=0.5,
              hint="re-run the same command; the trained avatar is kept in train/avatar.npz"),
    ]
    return [s for s in stages if build.stylized or s.name != "stylize"]
