"""The gsplat backend (CUDA): the same interface on top of ``gsplat.rasterization`` (gsplat 1.5.3).

gsplat is imported lazily, so this module imports anywhere. Differences from the torch reference
(documented in docs/RENDER.md): gsplat clamps alpha at 0.999 instead of 0.99, and its CUDA radii may be
tightened by opacity; neither changes images where opacities stay below 0.99. Its low-pass ``eps2d`` is set
to the torch backend's (0.1 px^2, not gsplat's 0.3).
"""

from __future__ import annotations

import importlib.util

import torch

from ..errors import NotAvailableError
from .projection import LOW_PASS
from .types import Cameras, Gaussians, RenderOutput

GSPLAT_VERSION = "1.5.3"


def gsplat_available() -> bool:
    """True when CUDA is usable and the gsplat package is installed (does not import it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def render_gsplat(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor, sh_degree: int,
                  tile_size: int = 16) -> RenderOutput:
    """Render with ``gsplat.rasterization`` (non-packed, "RGB+ED"); same contract as the torch backend.

    Args:
        gaussians: N Gaussians on a CUDA device. cameras: B cameras on that device.
        background: (B, 3). sh_degree: SH degree to evaluate. tile_size: gsplat's tile size.

    Returns:
        ``RenderOutput``; ``info`` is gsplat's own dict plus "backend": "gsplat".

    Raises:
        NotAvailableError: gsplat is not installed or the tensors are not on CUDA.
    """
    if not gaussians.means.is_cuda:
        raise NotAvailableError("the gsplat backend needs CUDA tensors; move the Gaussians and cameras "
                                "to a CUDA device or use backend='torch'")
    try:
        import gsplat
    except ImportError as exc:
        raise NotAvailableError(f"the gsplat backend needs gsplat=={GSPLAT_VERSION} ({exc}); install "
                                "it with `pip install .[cuda]` or use backend='torch'") from exc
    n_coefficients = (sh_degree + 1) ** 2
    colors, alphas, info = gsplat.rasterization(
        gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
        gaussians.sh[:, :n_coefficients], cameras.viewmats, cameras.Ks, int(cameras.width),
        int(cameras.height), sh_degree=sh_degree, packed=False, tile_size=tile_size,
        backgrounds=background, render_mode="RGB+ED", eps2d=LOW_PASS)
    info = dict(info)
    if info["means2d"].requires_grad:
        info["means2d"].retain_grad()  # as the torch backend; DefaultStrategy also asks for it
    info["backend"] = "gsplat"
    info.setdefault("packed", False)
    return RenderOutput(colors[..., :3], alphas, colors[..., 3:4], info)
