"""ToonSplat as a Blender extension (id ``toonsplat``): registers what ``addon/`` provides.

The repository root is the extension; ``backend/`` ships inside it and the add-on runs it as
``python -m backend`` with this folder as the working directory.
"""

from .addon import register, unregister

__all__ = ["register", "unregister"]
