"""ToonSplat compute backend.

Importing this package is cheap and imports neither torch nor bpy: the Blender add-on imports
``backend.formats`` (numpy only) from it. Heavy modules are imported by the commands that need them.
"""

__version__ = "0.1.0"
