"""The file contracts between the backend and the Blender add-on (docs/FORMAT.md).

numpy only: this package is imported by Blender's Python, which has numpy but never torch.
"""

JOINT_NAMES = ("root", "neck", "jaw", "eye_L", "eye_R")
JOINT_PARENTS = (-1, 0, 1, 1, 1)
