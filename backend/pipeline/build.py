"""``python -m backend build``: prepare -> stylize -> train -> evaluate -> export, resumable.

Each stage is run through its own command's parser and ``run`` function (so ``build`` accepts
exactly what the stage commands accept), inside one PipelineProgress stream with an overall ETA.
Layout of the build folder::

    OUT/data/           prepare's prepared-data folder (frames, masks, tracking.npz, stylized/)
    OUT/train/          train's folder (checkpoints, previews, evaluation)
    OUT/avatar.npz      the avatar file (docs/FORMAT.md)
    OUT/avatar.ply      the neutral avatar as standard 3DGS PLY
    OUT/reenactment.mp4 the avatar driven by the input's own tracking
    OUT/report.json     stage timings and metrics;  OUT/report.html  the summary page
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from ..cli.main import COMMANDS, add_command_arguments
from ..errors import InputError

log = logging.getLogger("toonsplat")


@dataclass
class BuildContext:
    out: str
    source: list[str]            # prepare's input arguments, e.g. ["--video", "clip.mp4"]
    style: str = "toon"
    head_model: str = "builtin"
    landmark_embedding: str | None = None
    preset: str = "cpu-fast"
    iters: int | None = None
    size: int = 512
    device: str = "auto"
    style_strength: float | None = None
    refine_tracking: str = "none"  # prepare --refine: none or photometric
    eye_contact: str | None = None  # prepare --eye-contact A-B

    @property
    def data(self) -> str:
        return os.path.join(self.out, "data")

    @property
    def train_dir(self) -> str:
        return os.path.join(self.out, "train")

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)


def call_command(name: str, argv: list[str], progress) -> int:
    """Run the ``name`` command in-process with ``argv``, as ``python -m backend name argv``."""
    module_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name, package="backend" if __package__ is None
                                     else __package__.rpartition(".")[0])
    parser = argparse.ArgumentParser(prog=f"build:{name}")
    add_command_arguments(name, module, parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed what was wrong
        raise InputError(f"invalid arguments for the {name} stage: {' '.join(argv)}") from exc
    args.command, args.progress, args.log_level = name, progress.mode, "info"
    return int(module.run(args, progress) or 0)


# -- stage functions ---------------------------------------------------------------------------
def _count_pngs(folder: str) -> int:
    return len([n for n in os.listdir(folder) if n.endswith(".png")]) if os.path.isdir(folder) else 0


def _prepare_argv(ctx: BuildContext) -> list[str]:
    """prepare's arguments for this build."""
    argv = [*ctx.source, "--out", ctx.data, "--head-model", ctx.head_model, "--size", str(ctx.size)]
    if ctx.landmark_embedding:
        argv += ["--landmark-embedding", ctx.landmark_embedding]
    if ctx.refine_tracking != "none":
        argv += ["--refine", ctx.refine_tracking]
    if ctx.eye_contact:
        argv += ["--eye-contact", ctx.eye_contact]
    return argv


def _prepare(ctx: BuildContext, progress) -> tuple[list[str], dict[str, Any]]:
    call_command("prepare", _prepare_argv(ctx), progress)
    report = _read_json_or_empty(os.path.join(ctx.data, "prepare.json"))
    metrics = {"frames": _count_pngs(os.path.join(ctx.data, "frames"))}
    metrics.update({k: v for k, v in report.items() if isinstance(v, (int, float)) and k != "frames"})
    return ["data/frames", "data/masks", "data/tracking.npz"], metrics


def _validate_prepare(ctx: BuildContext) -> None:
    from ..formats import tracking

    track = tracking.read(os.path.join(ctx.data, "tracking.npz"))
    frames = _count_pngs(os.path.join(ctx.data, "frames"))
    if frames != track.n_frames:
        raise ValueError(f"{frames} frames on disk but the tracking has {track.n_frames}")


def _stylize(ctx: BuildContext, progress) -> tuple[list[str], dict[str, Any]]:
    argv = ["--data", ctx.data, "--style", ctx.style]
    if ctx.style_strength is not None:
        argv += ["--strength", str(ctx.style_strength)]
    call_command("stylize", argv, progress)
    report = _read_json_or_empty(os.path.join(ctx.data, "stylize.json"))
    metrics = {k: v for k, v in report.get("metrics", report).items() if isinstance(v, (int, float))}
    return ["data/stylized"], metrics


def _validate_stylize(ctx: BuildContext) -> None:
    frames = _count_pngs(os.path.join(ctx.data, "frames"))
    styled = _count_pngs(os.path.join(ctx.data, "stylized"))
    if styled != frames:
        raise ValueError(f"{styled} stylized frames for {frames} frames")


def _train(ctx: BuildContext, progress) -> tuple[list[str], dict[str, Any]]:
    argv = ["--data", ctx.data, "--out", ctx.train_dir, "--preset", ctx.preset, "--images",
            "stylized" if ctx.style != "none" else "frames", "--device", ctx.device, "--resume"]
    if ctx.iters:
        argv += ["--iters", str(ctx.iters)]
    call_command("train", argv, progress)
    report = _read_json_or_empty(os.path.join(ctx.train_dir, "eval", "report.json"))
    metrics = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    return ["train/avatar.npz"], metrics


def _validate_train(ctx: BuildContext) -> None:
    from ..formats import avatar

    avatar.read(os.path.join(ctx.train_dir, "avatar.npz"))


def _read_json_or_empty(path: str) -> dict[str, Any]:
    from ..errors import ToonSplatError
    from ..fileio import read_json

    if not os.path.exists(path):
        return {}
    try:
        value = read_json(path)
    except ToonSplatError:
        return {}
    return value if isinstance(value, dict) else {}


def _export(ctx: BuildContext, progress) -> tuple[list[str], dict[str, Any]]:
    import shutil

    from ..fileio import atomic_path

    avatar_path = ctx.path("avatar.npz")
    with atomic_path(avatar_path) as tmp:
        shutil.copyfile(os.path.join(ctx.train_dir, "avatar.npz"), tmp)
    outputs = ["avatar.npz"]
    call_command("export", ["--avatar", avatar_path, "--out", ctx.path("avatar.ply")], progress)
    outputs.append("avatar.ply")
    tracking_path = os.path.join(ctx.data, "tracking.npz")
    call_command("render", ["--avatar", avatar_path, "--tracking", tracking_path,
                            "--out", ctx.path("reenactment.mp4")], progress)
    outputs.append("reenactment.mp4")
    return outputs, {"avatar_mb": round(os.path.getsize(avatar_path) / 1e6, 2)}


def _validate_export(ctx: BuildContext) -> None:
    from ..formats import avatar

    avatar.read(ctx.path("avatar.npz"))


def make_stages(ctx: BuildContext, progress):
    """The build's stages in order, with their expected share of the time."""
    from .stages import Stage

    def params(*names: str):
        return lambda c: {n: getattr(c, n) for n in names}

    def _prepare_params(c):  # options only when set: earlier builds stay complete
        values = params("source", "head_model", "landmark_embedding", "size")(c)
        if c.refine_tracking != "none":
            values["refine_tracking"] = c.refine_tracking
        if c.eye_contact:
            values["eye_contact"] = c.eye_contact
        return values

    stylized = ctx.style != "none"
    stages = [
        Stage("prepare", lambda c: _prepare(c, progress), _validate_prepare,
              _prepare_params, weight=1.0,
              hint="check the input video/images (a visible, unobstructed face) and re-run"),
        Stage("stylize", lambda c: _stylize(c, progress), _validate_stylize,
              params("style", "style_strength"), weight=0.5,
              hint="check the --style argument (toon, exemplar:IMG, model:FILE, frames:DIR) and re-run"),
        Stage("train", lambda c: _train(c, progress), _validate_train, params("style", "preset", "iters"),
              weight=6.0, hint="re-run the same command to resume from the last checkpoint"),
        Stage("export", lambda c: _export(c, progress), _validate_export, params(), weight=0.5,
              hint="re-run the same command; the trained avatar is kept in train/avatar.npz"),
    ]
    return [s for s in stages if stylized or s.name != "stylize"]
