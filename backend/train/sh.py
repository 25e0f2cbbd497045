"""Real spherical harmonics to degree 3, with the constants and sign conventions of 3DGS.

The trainer evaluates view-dependent colour itself, with the view direction rotated into each
Gaussian's rest frame (the inverse of its skinning rotation). That is the same as rotating the
SH coefficients by the skinning rotation, without a per-Gaussian Wigner-D matrix, and it lets
the rasterizer receive plain degree-0 colours.
"""

from __future__ import annotations

import torch

from ..render.sh import C0, sh_basis


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders as ``rgb`` (3DGS adds 0.5 after evaluation)."""
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * C0 + 0.5


def eval_sh(sh: torch.Tensor, directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Colours of SH coefficients seen from unit ``directions`` (Gaussian to camera negated).

    Args:
        sh: (N, C, 3) coefficients, C >= (degree+1)^2.
        directions: (N, 3) unit view directions (camera centre to Gaussian), in the SH's frame.
        degree: highest band to use.

    Returns:
        (N, 3) RGB, clamped at 0 like 3DGS.
    """
    n_coeffs = (degree + 1) ** 2
    basis = sh_basis(degree, directions)  # (N, n_coeffs)
    rgb = (basis[..., None] * sh[:, :n_coeffs]).sum(dim=1) + 0.5
    return rgb.clamp_min(0.0)
