"""``render``: one entry point over the torch reference and gsplat."""

from __future__ import annotations

import torch

from ..errors import NotAvailableError
from .gsplat_backend import gsplat_available, render_gsplat
from .torch_backend import render_torch
from .types import Cameras, Gaussians, RenderOutput, sh_degree_from_coefficients

BACKENDS = ("auto", "torch", "gsplat")


def render(gaussians: Gaussians, cameras: Cameras, background: torch.Tensor | None = None,
           sh_degree: int | None = None, backend: str = "auto", tile_size: int | None = None) -> RenderOutput:
    """Render B views of N Gaussians with the 3DGS image formation (differentiable).

    Args:
        gaussians: N activated Gaussians (``Gaussians``).
        cameras: B pinhole cameras sharing one image size (``Cameras``).
        background: (3,) or (B, 3) colour behind the Gaussians; None means black.
        sh_degree: SH degree to evaluate, 0..3; None uses all coefficients of ``gaussians.sh``.
        backend: "torch" (any device), "gsplat" (CUDA + gsplat), or "auto": gsplat when the tensors
            are on CUDA and gsplat is installed, else torch.
        tile_size: tile side in pixels; None picks the backend's best (torch 8, gsplat 16). Images do
            not depend on it.

    Returns:
        ``RenderOutput``: rgb (B, H, W, 3), alpha (B, H, W, 1), depth (B, H, W, 1), info.

    Raises:
        ValueError: wrong shapes, SH degree or backend name.
        NotAvailableError: backend="gsplat" where gsplat or CUDA is missing.
    """
    gaussians.check()
    cameras.check()
    available = sh_degree_from_coefficients(gaussians.sh.shape[1])
    sh_degree = available if sh_degree is None else int(sh_degree)
    if not 0 <= sh_degree <= available:
        raise ValueError(f"sh_degree={sh_degree} needs {(sh_degree + 1) ** 2} SH coefficients, "
                         f"Gaussians.sh has {gaussians.sh.shape[1]} (degree {available})")
    background = _background(background, len(cameras), gaussians.means)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "gsplat" if gaussians.means.is_cuda and gsplat_available() else "torch"
    if backend == "gsplat":
        if not gsplat_available():
            raise NotAvailableError("backend='gsplat' needs CUDA and gsplat==1.5.3; this machine "
                                    f"has CUDA={torch.cuda.is_available()}; use backend='torch' or 'auto'")
        return render_gsplat(gaussians, cameras, background, sh_degree, tile_size or 16)
    return render_torch(gaussians, cameras, background, sh_degree, tile_size)


def _background(background: torch.Tensor | None, n_cameras: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 3) background on ``like``'s device and dtype."""
    if background is None:
        return like.new_zeros(n_cameras, 3)
    background = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if background.shape == (3,):
        return background.expand(n_cameras, 3)
    if background.shape != (n_cameras, 3):
        raise ValueError(f"background must be (3,) or (B={n_cameras}, 3), got {tuple(background.shape)}")
    return background
