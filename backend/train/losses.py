"""Losses of 3DGB section 3.3 (Eq. 3-6) and the image metrics (PSNR, SSIM).

SSIM is the standard one (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03, data range 1, as in 3DGS; the tests compare it with scikit-image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim_map(a: torch.Tensor, b: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM of images (B, C, H, W) in [0, 1], 'same' padding like 3DGS -> (B, C, H, W)."""
    channels = a.shape[1]
    window = _window(window_size, sigma, channels, a)
    pad = window_size // 2
    conv = lambda x: F.conv2d(x, window, padding=pad, groups=channels)  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    var_a = conv(a * a) - mu_a ** 2
    var_b = conv(b * b) - mu_b ** 2
    cov = conv(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def ssim(a: torch.Tensor, b: torch.Tensor, valid_only: bool = False) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images. ``valid_only`` averages away from the borders (as
    scikit-image does), for reporting; training uses the padded mean like 3DGS."""
    values = ssim_map(a, b)
    if valid_only:
        values = values[..., 5:-5, 5:-5]
    return values.mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] (any shape)."""
    mse = ((a - b) ** 2).mean().clamp_min(1e-12)
    return -10 * torch.log10(mse)


def rgb_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """Eq. 3: (1 - lambda) L1 + lambda D-SSIM, D-SSIM = 1 - SSIM. Images (B, H, W, 3)."""
    l1 = (render - target).abs().mean()
    d_ssim = 1 - ssim(render.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2))
    return (1 - ssim_lambda) * l1 + ssim_lambda * d_ssim


def alpha_loss(alpha: torch.Tensor, mask: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Eq. 4: squared difference between accumulated opacity and the head mask, averaged.

    ``norm="l1"`` averages the absolute difference instead: its gradient does not fade as the
    error shrinks, so a half-transparent edge keeps being pulled to the mask."""
    diff = alpha - mask
    if norm == "l1":
        return diff.abs().mean()
    if norm != "l2":
        raise ValueError(f"alpha_norm must be 'l1' or 'l2', not {norm!r}")
    return (diff ** 2).mean()


def flatness_loss(log_scales: torch.Tensor, floor: float) -> torch.Tensor:
    """Mean excess of each Gaussian's smallest standard deviation over ``floor``, in mm (the
    scales are in metres): pulls Gaussians towards disks, which stay on the surface seen from
    any side. (N, 3) log scales -> scalar."""
    if len(log_scales) == 0:
        return log_scales.new_zeros(())
    smallest = log_scales.min(dim=1).values.exp()
    return 1000 * (smallest - floor).clamp_min(0).mean()


def below_floor_loss(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                     floor: float) -> torch.Tensor:
    """Mean of how far (mm) each Gaussian's 2-sigma extent reaches below the height ``floor``
    (rest pose, +Y up): keeps the neck from growing past the head region's cut, where no target
    pixel holds it. (N, 3) means, (N, 3) log scales, (N, 4) quaternions -> scalar."""
    if len(means) == 0:
        return means.new_zeros(())
    from ..geometry.rotations import quat_to_matrix

    spread = quat_to_matrix(quats)[:, 1, :] * log_scales.exp()  # each axis' share of the height
    bottom = means[:, 1] - 2 * spread.norm(dim=1)
    return 1000 * (floor - bottom).clamp_min(0).mean()


def mouth_loss(points: torch.Tensor, volume) -> torch.Tensor:
    """Eq. 5: mean squared outside-distance of mouth Gaussians to the cylinder ``volume``."""
    if len(points) == 0:
        return points.new_zeros(())
    return volume.sdf(points).clamp_min(0).pow(2).mean()
