"""Real spherical harmonics up to degree 3, the 3DGS colour model.

colour = max(0, sum_l,m  sh_lm * Y_lm(direction) + 0.5), direction = unit vector from the camera
centre to the Gaussian's mean. The basis and its sign convention are the ones 3DGS and gsplat use,
so coefficients trained here render the same in any 3DGS viewer.
"""

from __future__ import annotations

import torch

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """The real SH basis functions evaluated at unit directions.

    Args:
        degree: 0..3.
        dirs: (..., 3) unit vectors.

    Returns:
        (..., (degree + 1) ** 2) basis values, in the 3DGS coefficient order.
    """
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, C0)]
    if degree >= 1:
        basis += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz,
                  C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [C3[0] * y * (3.0 * xx - yy), C3[1] * xy * z, C3[2] * y * (4.0 * zz - xx - yy),
                  C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), C3[4] * x * (4.0 * zz - xx - yy),
                  C3[5] * z * (xx - yy), C3[6] * x * (xx - 3.0 * yy)]
    return torch.stack(basis, dim=-1)


def sh_to_rgb(degree: int, sh: torch.Tensor, means: torch.Tensor,
              camera_centres: torch.Tensor) -> torch.Tensor:
    """View-dependent colours of N Gaussians seen from B camera centres.

    Args:
        degree: SH degree to use, 0..3; only the first (degree + 1) ** 2 coefficients are read.
        sh: (N, C, 3) coefficients, C >= (degree + 1) ** 2.
        means: (N, 3) Gaussian centres.
        camera_centres: (B, 3) camera centres in the same frame.

    Returns:
        (B, N, 3) colours, sum + 0.5 clamped at 0.
    """
    n_coefficients = (degree + 1) ** 2
    coefficients = sh[:, :n_coefficients, :]
    if degree == 0:
        rgb = (C0 * coefficients[:, 0, :]).unsqueeze(0).expand(camera_centres.shape[0], -1, -1)
    else:
        dirs = means.unsqueeze(0) - camera_centres[:, None, :]
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        basis = sh_basis(degree, dirs)  # (B, N, n_coefficients)
        rgb = torch.einsum("bnk,nkc->bnc", basis, coefficients)
    return torch.clamp_min(rgb + 0.5, 0.0)
