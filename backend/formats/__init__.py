"""The file contracts between the backend and the Blender add-on (docs/FORMAT.md).

numpy only: this package is imported by Blender's Python, which has numpy but never torch.
"""

JOINT_NAMES = ("root", "neck", "jaw", "eye_L", "eye_R")
JOINT_PARENTS = (-1, 0, 1, 1, 1)
# The splats' low-pass: px^2 added to every projected 2D covariance, by the backend's rasterizer
# and (converted to metres at the render's pixel size) by the add-on's splat preview. 0.1 px^2 is
# about a one-pixel box filter (Mip-Splatting's 2D filter); 3DGS and gsplat default to 0.3, which
# widened every avatar edge by ~0.55 px (docs/RENDER.md, docs/TRAINING.md).
SPLAT_LOW_PASS_PX2 = 0.1
