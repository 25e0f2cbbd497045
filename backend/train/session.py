"""One training session end to end: data, head model, train (or resume), evaluate, export."""

from __future__ import annotations

import logging
import os

from ..fileio import ensure_writable_folder
from .avatar_writer import write_avatar
from .config import make_config
from .data import FrameData
from .hooks import training_hooks
from .oneshot import is_oneshot, oneshot_settings
from .trainer import CHECKPOINT, Trainer

log = logging.getLogger("toonsplat")


def load_head_for(data: FrameData, head_model: str | None, device):
    """The head model the tracking was made with (builtin unless told otherwise)."""
    from ..errors import InputError
    from ..headmodel import load_head_model

    spec = head_model or data.tracking.head_model.get("path") or "builtin"
    if spec != "builtin" and not os.path.exists(spec):
        raise InputError(f"the tracking was made with head model {spec!r}, which is not on this "
                         "machine; pass --head-model with the file's path")
    embedding = data.tracking.head_model.get("landmark_embedding") if spec != "builtin" else None
    head = load_head_model(spec, n_expressions=data.tracking.n_expressions, device=device,
                           landmark_embedding=embedding)
    if head.exprdirs.shape[-1] != data.tracking.n_expressions:
        raise InputError(f"{data.folder}/tracking.npz has {data.tracking.n_expressions} expressions but "
                         f"the head model {spec!r} has {head.exprdirs.shape[-1]}; pass the --head-model "
                         "the tracking was made with")
    return head


def train_and_export(data_dir: str, out: str, preset: str, overrides: dict, device="cpu",
                     resume: bool = False, head_model: str | None = None, progress=None,
                     on_step=None) -> dict:
    """Train (or resume), then evaluate on the held-out frames and write the avatar file.

    Single-frame data (or ``prepare --image`` data, or ``preset="oneshot"``) trains in one-shot
    mode (oneshot.py); its evaluation is on the training view, which the report says.

    ``out/tracking.npz`` is the tracking the avatar was trained with: the prepared data's, with
    every frame's rigid pose registered against the avatar when the preset does that
    (register.py); the preview, the turntable and Blender animate the avatar with it.

    Returns:
        {"avatar": path, "tracking": path, "report": eval report dict, "eval_dir": path,
        "trainer": Trainer}.
    """
    from ..formats import tracking as tracking_format
    from .evaluate import evaluate, write_loss_curve

    ensure_writable_folder(out)
    config = make_config(preset, **overrides)
    data = FrameData(data_dir, images=tuple(p.images for p in config.phases), device=device)
    if config.oneshot.enabled or is_oneshot(data_dir, data.n_frames):
        preset, overrides = oneshot_settings(preset, overrides)
        config = make_config(preset, **overrides)
        log.info("one-shot mode (%d frame%s): preset %s, %d iterations", data.n_frames,
                 "" if data.n_frames == 1 else "s, training on the first", preset, config.iterations)
    head = load_head_for(data, head_model, device)
    trainer = Trainer(data, out, config, head, progress, hooks=training_hooks)
    checkpoint = os.path.join(out, CHECKPOINT)
    if resume and os.path.exists(checkpoint):
        trainer.load_checkpoint(checkpoint)
        if "iterations" in overrides:
            trainer.config.iterations = int(overrides["iterations"])
        log.info("resumed from %s at step %d", checkpoint, trainer.step)
    else:
        trainer.initialize()
    if progress is not None:
        progress.stage("train", f"{trainer.config.iterations} iterations on {len(data.train)} frames "
                       f"({device})", total=trainer.config.iterations)
    trainer.run(on_step=_previewer(out, progress, on_step))
    if trainer.config.fill_unseen and not trainer.config.oneshot.enabled:
        from .fill import fill_unseen, visibility

        fill_unseen(trainer.model, visibility(trainer))
    write_loss_curve(os.path.join(out, "loss.png"), trainer.history)
    if progress is not None:
        what = "held-out" if data.held_out else "training-view (no held-out frame)"
        progress.stage("evaluate", f"{len(data.test)} {what} frames")
    report = evaluate(trainer, os.path.join(out, "eval"))
    tracking_path = os.path.join(out, "tracking.npz")
    tracking_format.write(tracking_path, data.tracking)
    avatar_path = os.path.join(out, "avatar.npz")
    write_avatar(avatar_path, trainer.model, trainer.mesh, data.tracking.expression_names, head.kind,
                 training={"preset": preset, "steps": trainer.step, "psnr": report["psnr"],
                           "ssim": report["ssim"], "split": report["split"],
                           "oneshot": trainer.config.oneshot.enabled})
    return {"avatar": avatar_path, "tracking": tracking_path, "report": report,
            "eval_dir": os.path.join(out, "eval"), "trainer": trainer}


def _previewer(out: str, progress, then=None):
    """on_step callback: a preview image and the loss curve every ``preview_every`` steps, then
    ``then(trainer, loss)`` if given."""
    from .evaluate import save_preview, write_loss_curve

    def on_step(trainer: Trainer, loss: float) -> None:
        every = trainer.config.preview_every
        if every and trainer.step % every == 0:
            path = save_preview(trainer, os.path.join(out, "previews"))
            write_loss_curve(os.path.join(out, "loss.png"), trainer.history)
            if progress is not None:
                progress.preview(path, f"step {trainer.step}")
        if then is not None:
            then(trainer, loss)

    return on_step

