"""The Gaussian rasterizer: a differentiable PyTorch reference on any device, gsplat on CUDA.

    from backend.render import Gaussians, Cameras, render, RenderOutput
    out = render(Gaussians(means, quats, scales, opacities, sh), Cameras(viewmats, Ks, W, H))
    out.rgb (B, H, W, 3); out.alpha, out.depth (B, H, W, 1); out.info (gsplat DefaultStrategy keys)

See docs/RENDER.md for the image formation, the tiling and how gsplat is used.
"""

from .renderer import BACKENDS, render
from .types import Cameras, Gaussians, RenderOutput

__all__ = ["BACKENDS", "Cameras", "Gaussians", "RenderOutput", "render"]
