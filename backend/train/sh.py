"""Real spherical harmonics to degree 3, with the constants and sign conventions of 3DGS.

The trainer evaluates view-dependent colour itself, with the view direction rotated into each
Gaussian's rest frame (the inverse of its skinning rotation). That is the same as rotating the
SH coefficients by the skinning rotation, without a per-Gaussian Wigner-D matrix, and it lets
the rasterizer receive plain degree-0 colours.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders as ``rgb`` (3DGS adds 0.5 after evaluation)."""
    return (rgb - 0.5) / C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * C0 + 0.5


def sh_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """SH basis values for unit directions. (..., 3) -> (..., (degree+1)^2)."""
    x, y, z = directions.unbind(-1)
    values = [torch.full_like(x, C0)]
    if degree >= 1:
        values += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        values += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz,
                   C2[4] * (xx - yy)]
    if degree >= 3:
        values += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                   C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                   C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(values, dim=-1)


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
    basis = sh_basis(directions, degree)  # (N, n_coeffs)
    rgb = (basis[..., None] * sh[:, :n_coeffs]).sum(dim=1) + 0.5
    return rgb.clamp_min(0.0)
