"""The ToonSplat Blender add-on (see README.md in this folder)."""


def register():
    pass


def unregister():
    pass
