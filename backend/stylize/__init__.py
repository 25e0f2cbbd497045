"""Stage 1: frames -> stylized frames (built-in styles, user models, external frames), jitter metrics.

    from backend.stylize import builtin_stylizer, stylize_folder, jitter
    stylizer = builtin_stylizer("toon", {"levels": 4})     # or "cel" (face-aware), "exemplar:IMG"
    for frame in frames:                       # (H, W, 3) uint8 RGB, any size
        out = stylizer.stylize(frame)          # same size; temporal state kept between calls
        # face-aware styles: stylizer.stylize(frame, FrameContext(i, landmarks, mask))
    stylizer.reset()                           # before another sequence

Importing this package is cheap (numpy only); OpenCV, mediapipe, torch and onnxruntime load
when used.
"""

from .base import Stylizer
from .context import FrameContext
from .frontal import frontal_frame_indices, head_yaw
from .metrics import JitterMeter, jitter, psnr, ssim
from .pipeline import stylize_folder
from .styles import builtin_stylizer, model_stylizer, parse_style

__all__ = ["FrameContext", "JitterMeter", "Stylizer", "builtin_stylizer", "frontal_frame_indices", "head_yaw",
           "jitter", "model_stylizer", "parse_style", "psnr", "ssim", "stylize_folder"]
