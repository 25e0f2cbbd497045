"""Evaluation on the held-out frames (PSNR, SSIM), previews and the loss curve.

LPIPS is not computed: it needs network weights, which are never downloaded; it is left for
when the user supplies them.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..fileio import ensure_writable_folder, write_image, write_json
from .losses import psnr, ssim_map


def _to_u8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def evaluate(trainer, out_dir: str, max_frames: int | None = None, n_pictures: int = 6) -> dict:
    """Render every held-out frame; write report.json and side-by-sides [truth | render | error].

    With a single frame (one-shot mode) there is no held-out frame: the training view is
    evaluated and ``split`` says "training-view".

    Pixels that are no target (the torso below the neck cut, crop pixels past the source
    frame) count as rendered right in every metric.

    Returns:
        {"psnr", "ssim", "baseline_psnr", "psnr_head", "baseline_psnr_head", "ssim_head", "split",
        "frames", "per_frame": [...]} (means over frames; ``*_head``: within the frame's head
        region only, SSIM as the mean of its SSIM map there).
    """
    ensure_writable_folder(out_dir)
    data = trainer.data
    test = data.test
    limit = max_frames if max_frames is not None else trainer.config.eval_max_frames
    if limit and len(test) > limit:
        test = test[np.linspace(0, len(test) - 1, limit).round().astype(int)]
    images = trainer.config.phases[-1].images  # what the avatar was last fitted to
    baseline = _mean_color(trainer, images)
    rows, pictures = [], set(test[np.linspace(0, len(test) - 1, min(n_pictures, len(test)))
                                  .round().astype(int)].tolist())
    for index in test.tolist():
        target, mask = data.target(index, trainer.background, images)
        out, _ = trainer.render_frame(index)
        weight = data.weight(index)
        image = out.rgb[0].clamp(0, 1) * weight + target * (1 - weight)
        value = float(psnr(image, target))
        structural_map = ssim_map(image.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
        structural = float(structural_map[..., 5:-5, 5:-5].mean())
        base = float(psnr(baseline.expand_as(target), target))
        inside = (mask[..., 0] > 0.5) & (weight[..., 0] > 0.5)
        masked = float(psnr(image[inside], target[inside])) if inside.any() else float("nan")
        masked_base = float(psnr(target[inside].mean(dim=0).expand_as(target[inside]), target[inside])) \
            if inside.any() else float("nan")
        head = float(structural_map[0].mean(dim=0)[inside].mean()) if inside.any() else float("nan")
        rows.append({"frame": index, "psnr": value, "ssim": structural, "baseline_psnr": base,
                     "psnr_head": masked, "baseline_psnr_head": masked_base, "ssim_head": head})
        if index in pictures:
            error = (image - target).abs().mean(dim=-1, keepdim=True).expand_as(image) * 4
            write_image(os.path.join(out_dir, f"{index:06d}.png"),
                        _to_u8(torch.cat([target, image, error], dim=1)))
    report = {
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "baseline_psnr": float(np.mean([r["baseline_psnr"] for r in rows])),
        "psnr_head": float(np.mean([r["psnr_head"] for r in rows])),
        "baseline_psnr_head": float(np.mean([r["baseline_psnr_head"] for r in rows])),
        "ssim_head": float(np.mean([r["ssim_head"] for r in rows])),
        "split": "held-out" if data.held_out else "training-view", "images": images,
        "frames": len(rows), "held_out": [int(data.test[0]), int(data.test[-1])],
        "step": trainer.step, "n_gaussians": trainer.model.n_gaussians,
        "lpips": None, "per_frame": rows,
        # the poses evaluated: the tracking's, or those registered against the avatar (register.py)
        "poses": "registered" if trainer.registration else "tracked",
        **{f"register_{k}": v for k, v in (trainer.registration or {}).items()},
    }
    write_json(os.path.join(out_dir, "report.json"), report)
    return report


def _mean_color(trainer, images: str | None = None) -> torch.Tensor:
    """The mean-colour baseline: one constant RGB, the mean of a few training targets."""
    data = trainer.data
    picks = data.train[:: max(1, len(data.train) // 10)][:10]
    means = [data.target(int(i), trainer.background, images)[0].mean(dim=(0, 1)) for i in picks]
    return torch.stack(means).mean(dim=0)


@torch.no_grad()
def save_preview(trainer, folder: str) -> str:
    """Side-by-side [truth | render] of a fixed held-out frame at the current step."""
    ensure_writable_folder(folder)
    index = int(trainer.data.test[len(trainer.data.test) // 2])
    target, _ = trainer.data.target(index, trainer.background, trainer.phase_at(trainer.step).images)
    out, _ = trainer.render_frame(index)
    path = os.path.join(folder, f"step_{trainer.step:06d}.png")
    write_image(path, _to_u8(torch.cat([target, out.rgb[0]], dim=1)))
    return path


def write_loss_curve(path: str, history: list[tuple[int, float]]) -> None:
    """Plot the training loss (raw and smoothed) against the step into a PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..fileio import atomic_path

    steps = np.array([s for s, _ in history])
    losses = np.array([v for _, v in history])
    window = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(steps, losses, color="0.75", linewidth=0.6, label="loss")
    axis.plot(steps[window - 1:], smooth, color="C0", linewidth=1.5, label=f"mean of {window}")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (Eq. 6)")
    axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp)
    plt.close(figure)
