"""The ToonSplat Blender add-on (see README.md in this folder).

Registration is symmetric: ``classes`` in order, then the one PointerProperty and the viewport's
timer (``viewport.py``); unregister cancels any backend run and removes everything in reverse.
Nothing heavy runs here: node groups and materials are built when an avatar is first imported.
"""

import bpy

from . import jobs, operators, panels, preferences, properties, viewport

classes = (*preferences.classes, *properties.classes, *operators.classes, *panels.classes)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register()
    viewport.register()


def unregister():
    jobs.cancel_all()
    viewport.unregister()
    properties.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
