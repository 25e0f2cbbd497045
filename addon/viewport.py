"""Keep every avatar's ``View`` empty on the 3D viewport's eye, so the viewport's splats face it.

The splat preview draws each Gaussian as a flat polygon facing an eye (``addon/splats.py``):
renders use the active camera; the viewport uses the avatar's ``View`` empty, which a timer moves
to the eye of the 3D view that last moved (the view matrix's inverse translation: the camera of
a camera view, the orbit's eye otherwise). Seen from elsewhere, for example in a second 3D view,
the polygons are tilted and the splats thinner than they should be. Timers never fire in
background mode: there the empty stays where the import put it.
"""

from __future__ import annotations

import bpy
from mathutils import Vector

from .importer import ROLE_PROP

INTERVAL = 0.1  # seconds between two looks at the 3D views
TOLERANCE = 1e-5  # metres: an eye closer than this to the empty does not move it
_eyes: dict[int, tuple] = {}  # 3D view area -> its eye at the last look
_current: list = []  # the eye the empties were last moved to
_ticks = [0]
RESCAN = 10  # ticks between two looks for View empties not at the current eye


def moved_eye() -> Vector | None:
    """The eye of a 3D view that moved since the last call, else None."""
    seen, moved = {}, None
    for window in bpy.context.window_manager.windows:
        for area in (window.screen.areas if window.screen is not None else ()):
            if area.type != "VIEW_3D":
                continue
            eye = tuple(area.spaces.active.region_3d.view_matrix.inverted().translation)
            seen[area.as_pointer()] = eye
            if _eyes.get(area.as_pointer()) != eye:
                moved = eye
    _eyes.clear()
    _eyes.update(seen)
    return None if moved is None else Vector(moved)


def place_views(eye) -> int:
    """Move every avatar's ``View`` empty to ``eye`` (world space); returns how many moved."""
    eye = Vector(eye)
    moved = 0
    for obj in bpy.data.objects:
        if obj.get(ROLE_PROP) == "view" and (obj.matrix_world.translation - eye).length > TOLERANCE:
            obj.matrix_world.translation = eye
            moved += 1
    return moved


def follow_view() -> float:
    """The timer: a moved view's eye becomes the current one and every ``View`` empty goes
    there; between moves, every RESCAN-th tick places the empties of avatars imported since (the
    scan walks all objects, so it does not run on every tick). Nothing moves while a render runs."""
    if bpy.app.is_job_running("RENDER"):
        return INTERVAL
    eye = moved_eye()
    _ticks[0] += 1
    if eye is not None:
        _current[:] = [eye]
    if _current and (eye is not None or _ticks[0] % RESCAN == 0):
        place_views(_current[0])
    return INTERVAL


def register() -> None:
    if not bpy.app.timers.is_registered(follow_view):
        bpy.app.timers.register(follow_view, first_interval=INTERVAL, persistent=True)


def unregister() -> None:
    if bpy.app.timers.is_registered(follow_view):
        bpy.app.timers.unregister(follow_view)
    _eyes.clear()
    _current.clear()
