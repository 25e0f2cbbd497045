"""The rasterizer's inputs and output: ``Gaussians``, ``Cameras``, ``RenderOutput``.

Shapes are checked by ``check()`` (called by ``render``), not only commented: a wrong shape raises
``ValueError`` naming the field, its shape and the expected one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Gaussians:
    """A cloud of 3D Gaussians in activated form (what the rasterizer consumes).

    Attributes:
        means: (N, 3) centres, metres, in the frame the cameras' ``viewmats`` map from.
        quats: (N, 4) rotations as quaternions (w, x, y, z); need not be normalized.
        scales: (N, 3) standard deviations along the rotated axes, metres (activated, not log).
        opacities: (N,) in [0, 1] (activated, not logits).
        sh: (N, C, 3) spherical-harmonic colour coefficients, C = (degree + 1) ** 2, C <= 16.
    """

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    sh: torch.Tensor

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def check(self) -> None:
        """Raise ``ValueError`` when a field has the wrong shape or the fields disagree on N."""
        n = len(self)
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        for name, shape in expected.items():
            _check_shape(f"Gaussians.{name}", getattr(self, name), shape)
        if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh must be (N={n}, C, 3), got {tuple(self.sh.shape)}")
        if sh_degree_from_coefficients(self.sh.shape[1]) is None:
            raise ValueError(f"Gaussians.sh has C={self.sh.shape[1]} coefficients; C must be "
                             "(degree + 1) ** 2 with degree 0..3 (1, 4, 9 or 16)")


@dataclass
class Cameras:
    """A batch of B pinhole cameras sharing one image size.

    Attributes:
        viewmats: (B, 4, 4) world-to-camera transforms, OpenCV axes (x right, y down, z forward).
        Ks: (B, 3, 3) intrinsics in pixels (fx, fy, cx, cy; pixel centres at integer + 0.5).
        width: image width in pixels.
        height: image height in pixels.
    """

    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.viewmats.shape[0])

    def check(self) -> None:
        """Raise ``ValueError`` when a field has the wrong shape or the image size is not positive."""
        b = len(self)
        _check_shape("Cameras.viewmats", self.viewmats, (b, 4, 4))
        _check_shape("Cameras.Ks", self.Ks, (b, 3, 3))
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Cameras image size must be positive, got {self.width} x {self.height}")


@dataclass
class RenderOutput:
    """What ``render`` returns.

    Attributes:
        rgb: (B, H, W, 3) colour composited over the background.
        alpha: (B, H, W, 1) accumulated opacity, 1 - final transmittance.
        depth: (B, H, W, 1) alpha-weighted expected camera-space depth, sum(w_i z_i) / alpha.
        info: per-render side data; gsplat DefaultStrategy keys ("means2d" (B, N, 2) with retained
            grad, "radii" (B, N, 2) int32, "width", "height", "n_cameras", "gaussian_ids" (None:
            not packed)) plus "depths" (B, N), "conics" (B, N, 3), "tile_size", "backend".
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    info: dict = field(default_factory=dict)


def sh_degree_from_coefficients(n_coefficients: int) -> int | None:
    """The SH degree d with (d + 1) ** 2 == n_coefficients, or None when there is none in 0..3."""
    degree = int(round(math.sqrt(n_coefficients))) - 1
    return degree if 0 <= degree <= 3 and (degree + 1) ** 2 == n_coefficients else None


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
