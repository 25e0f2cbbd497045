"""EWA projection of 3D Gaussians into pinhole cameras (differentiable, batched over cameras).

Steps, for each camera b and Gaussian n:
1. Sigma = R S S^T R^T from the quaternion and the scales (world frame).
2. To camera space: t = W mean + w, Sigma_c = W Sigma W^T (W, w: the viewmat's rotation, translation).
3. Local affine approximation of the perspective map at t (Zwicker et al.'s EWA splatting):
   J = [[fx / z, 0, -fx x / z^2], [0, fy / z, -fy y / z^2]], with x / z and y / z clamped to 1.3x
   the half field of view (as 3DGS and gsplat do, so off-screen Gaussians do not explode),
   Sigma_2D = J Sigma_c J^T + 0.1 I (the low-pass filter, about a one-pixel box;
   formats.SPLAT_LOW_PASS_PX2).
4. mean_2D = (fx x / z + cx, fy y / z + cy); the conic is Sigma_2D^-1 as (a, b, c).
5. Box: half-sizes where alpha can reach 1/255, at most 3.33 sigma (gsplat's opacity-aware radii).
   Culling: z outside (near, far), opacity < 1/255, or the box entirely off the image -> radius 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..formats import SPLAT_LOW_PASS_PX2
from ..geometry.rotations import quat_to_matrix

LOW_PASS = SPLAT_LOW_PASS_PX2  # px^2 added to the 2D covariance's diagonal
EXTENT_SIGMAS = 3.33    # box half-size in standard deviations (gsplat's GAUSSIAN_EXTEND)
NEAR_PLANE = 0.01       # metres, as gsplat's default
FAR_PLANE = 1e10
ALPHA_MIN = 1.0 / 255.0


@dataclass
class Projected:
    """Per-camera screen-space Gaussians; every tensor is (B, N, ...).

    Attributes:
        means2d: (B, N, 2) pixel coordinates of the centres.
        conics: (B, N, 3) inverse 2D covariance (a, b, c): d^T Sigma^-1 d = a dx^2 + 2 b dx dy + c dy^2.
        depths: (B, N) camera-space z of the centres.
        radii: (B, N, 2) int32 half-sizes of the box where alpha can reach 1/255, rounded up (gsplat's
            opacity-aware radii); 0 where culled.
        extents: (B, N, 2) the same half-sizes unrounded; 0 where culled. Used to bin into tiles.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    extents: torch.Tensor


def covariance_3d(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T.

    Args:
        quats: (N, 4) wxyz. scales: (N, 3) activated standard deviations.

    Returns:
        (N, 3, 3) symmetric covariances.
    """
    rs = quat_to_matrix(quats) * scales[:, None, :]  # R S
    return rs @ rs.transpose(1, 2)


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                      opacities: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
                      width: int, height: int) -> Projected:
    """EWA-project N Gaussians into B cameras (see the module docstring for the steps).

    Args:
        means: (N, 3). quats: (N, 4) wxyz. scales: (N, 3). opacities: (N,) used for tight extents.
        viewmats: (B, 4, 4) world-to-camera (OpenCV). Ks: (B, 3, 3).
        width, height: image size in pixels.

    Returns:
        ``Projected`` with (B, N, ...) tensors.
    """
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("bij,nj->bni", rotation, means) + translation[:, None, :]
    covars_c = rotation[:, None] @ covariance_3d(quats, scales)[None] @ rotation[:, None].transpose(-1, -2)
    x, y, z = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    ux = (x / safe_z).clamp(-(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)
    uy = (y / safe_z).clamp(-(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)
    zeros = torch.zeros_like(z)
    jacobian = torch.stack([fx / safe_z, zeros, -fx * ux / safe_z,
                            zeros, fy / safe_z, -fy * uy / safe_z], dim=-1).reshape(*z.shape, 2, 3)
    cov2d = jacobian @ covars_c @ jacobian.transpose(-1, -2)
    var_x, cov_xy, var_y = cov2d[..., 0, 0] + LOW_PASS, cov2d[..., 0, 1], cov2d[..., 1, 1] + LOW_PASS
    det = (var_x * var_y - cov_xy * cov_xy).clamp_min(1e-12)
    conics = torch.stack([var_y / det, -cov_xy / det, var_x / det], dim=-1)
    means2d = torch.stack([fx * x / safe_z + cx, fy * y / safe_z + cy], dim=-1)
    radii, extents = _screen_boxes(means2d.detach(), var_x.detach(), var_y.detach(), z.detach(),
                                   opacities.detach(), width, height)
    return Projected(means2d, conics, z, radii, extents)


def _screen_boxes(means2d: torch.Tensor, var_x: torch.Tensor, var_y: torch.Tensor, z: torch.Tensor,
                  opacities: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity-aware box half-sizes, as gsplat 1.5's CUDA projection computes them, and culling.

    A pixel can only reach alpha >= 1/255 where 0.5 d^T Sigma^-1 d <= log(255 o); the axis-aligned box of
    that ellipse has half-sizes sqrt(2 log(255 o) var), capped at 3.33 sigma (which it never exceeds for
    o <= 1). So binning by it changes no pixel, and the images do not depend on the tile size.

    Returns:
        radii (B, N, 2) int32, ceil of the extents; extents (B, N, 2) float; both 0 where culled
        (behind the near plane, opacity < 1/255, or the box entirely off the image).
    """
    sigmas = torch.sqrt(2.0 * torch.log((opacities * 255.0).clamp_min(1.0))).clamp_max(EXTENT_SIGMAS)
    std = torch.stack([var_x, var_y], dim=-1).clamp_min(0).sqrt()
    extents = std * sigmas[None, :, None]
    radii = torch.ceil(extents)
    valid = (z > NEAR_PLANE) & (z < FAR_PLANE) & (opacities[None, :] >= ALPHA_MIN)
    valid &= ((means2d + radii > 0) & (means2d - radii < means2d.new_tensor([width, height]))).all(-1)
    valid &= torch.isfinite(means2d).all(-1)
    radii = torch.where(valid[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    extents = torch.where(valid[..., None], extents, torch.zeros_like(extents))
    return radii, extents
