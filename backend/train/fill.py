"""What the video never shows, filled from what it shows.

A clip shows the face and, as the head turns, some of its sides; the back and much of the sides
of the head are never in view. Their Gaussians get no gradient, so they keep their first,
faint opacity, and a turntable shows holes there. After training, each Gaussian's visibility
is measured over a spread of training frames: how much of the images it would cover, were it
opaque (the gradient of the summed alpha with respect to its opacity: the transmittance in
front of it times its footprint). Gaussians no frame would show become opaque and take the mean
colour of their nearest seen neighbours on the head (hair at the back of the head, skin at the
jaw's far side). Seen Gaussians are left as trained, so the training views do not change.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger("toonsplat")


def visibility(trainer, n_frames: int = 24, scale: float = 0.5) -> torch.Tensor:
    """(N,) per Gaussian: the summed d(alpha)/d(opacity) over ``n_frames`` training frames
    rendered at ``scale`` (pixels of alpha it would add, were it fully opaque)."""
    model, data = trainer.model, trainer.data
    picks = data.train[np.unique(np.linspace(0, len(data.train) - 1, n_frames).round().astype(int))]
    logits = model.params["opacity_logits"]
    was = logits.requires_grad
    logits.requires_grad_(True)
    score = torch.zeros(len(logits), device=logits.device)
    try:
        for index in picks.tolist():
            logits.grad = None
            out, _ = trainer.render_frame(int(index), scale=scale)
            out.alpha.sum().backward()
            if logits.grad is not None:
                opacity = torch.sigmoid(logits.detach())
                score += logits.grad.detach().clamp_min(0) / (opacity * (1 - opacity)).clamp_min(1e-6)
    finally:
        logits.grad = None
        logits.requires_grad_(was)
    return score


@torch.no_grad()
def fill_unseen(model, score: torch.Tensor, relative: float = 1e-3, opacity: float = 0.9,
                neighbours: int = 8) -> int:
    """Make the Gaussians whose visibility is below ``relative`` times the 90th percentile's
    opaque, coloured like their ``neighbours`` nearest seen, fairly opaque Gaussians (mouth
    Gaussians stay as they are). The bar is relative, so it does not depend on the image size;
    behind an opaque face the transmittance, and with it the score, is orders of magnitude
    below it, while a semi-transparent avatar (a short run) has nothing that low.
    Returns how many were filled."""
    from scipy.spatial import cKDTree

    face = ~model.mouth
    params = model.params
    alpha = torch.sigmoid(params["opacity_logits"])
    min_score = relative * float(score[face].quantile(0.9)) if bool(face.any()) else 0.0
    unseen = face & (score < max(min_score, 1e-9))
    sources = face & ~unseen & (alpha > 0.3)
    if not bool(unseen.any()) or int(sources.sum()) < neighbours:
        return 0
    points = params["means"].detach().cpu().numpy()
    tree = cKDTree(points[sources.cpu().numpy()])
    _, nearest = tree.query(points[unseen.cpu().numpy()], k=neighbours)
    colours = params["sh_dc"].detach()[sources][torch.as_tensor(nearest)].mean(dim=1)
    target = torch.full_like(alpha[unseen], opacity)
    params["opacity_logits"].data[unseen] = torch.maximum(
        params["opacity_logits"].data[unseen], torch.log(target / (1 - target)))
    params["sh_dc"].data[unseen] = colours
    if "sh_rest" in params:
        params["sh_rest"].data[unseen] = 0
    log.info("filled %d of %d face Gaussians no training view shows", int(unseen.sum()),
             int(face.sum()))
    return int(unseen.sum())

