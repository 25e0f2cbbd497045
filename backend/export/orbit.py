"""Turntables and novel-view coverage of an avatar.

The orbit: the avatar posed with one tracked frame's expression, jaw and eyes (the neutral face
without a tracking), the head itself unrotated (root and neck at rest, no translation), seen by
a camera that circles the head's vertical axis (+Y, head space) through the pivot, the centre
of the head region of the posed head mesh. Yaw 0 looks at the face from the front (+Z);
**positive yaw moves the camera towards the subject's left** (+X), so it shows the left cheek.
The camera keeps the tracked camera's distance to the head and its focal length (a 0.65 m,
``2.1 * size`` px camera without a tracking), with the principal point at the image centre.

Coverage at a yaw: the fraction of the pixels of the posed head model's silhouette above the
neck cut (``headmodel.regions.head_faces``) where the avatar's rendered alpha is >= 0.9, from
the same camera. The head mesh is the avatar's own neutral mesh (``mesh_vertices``: the
subject's identity), posed by the head model with the same expression and joint rotations.
Surface coverage asks in addition that the avatar's rendered depth there is at most 2 cm
behind the mesh's: alpha alone cannot tell a hole in the near cheek from the cheek, when the
inside of the far side shows through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..formats import animate
from ..formats.avatar import Avatar
from ..formats.tracking import Tracking

STRIP_YAWS = (-60, -40, -20, 0, 20, 40, 60)   # degrees, the turntable strip's views
COVERAGE_YAWS = (-45, 45)                     # degrees, where coverage is measured
ALPHA_COVERED = 0.9                           # rendered alpha that counts as covered
SURFACE_TOLERANCE_M = 0.02                    # surface coverage: depth at most this far behind
DEFAULT_DISTANCE_M = 0.65                     # camera distance without a tracking (synth's)
DEFAULT_SIZE = 512                            # image side without a tracking
BACKGROUND = (1.0, 1.0, 1.0)


@dataclass
class OrbitPose:
    """What the orbit shows and from how far.

    Attributes:
        expressions: (K,) expression coefficients.
        joint_rotations: (5, 3) axis-angle; root and neck at rest, jaw and eyes as tracked.
        distance: camera distance to the pivot, metres.
        focal: (fx, fy) in pixels of an image of ``width`` x ``height``.
        width, height: image size in pixels.
        frame: the tracking frame it came from (None: neutral).
    """

    expressions: np.ndarray
    joint_rotations: np.ndarray
    distance: float
    focal: tuple[float, float]
    width: int
    height: int
    frame: int | None


# -- pose and cameras --------------------------------------------------------------------------
def orbit_pose(avatar: Avatar, tracking: Tracking | None, frame: int | None,
               size: int | None = None) -> OrbitPose:
    """The expression, jaw and eyes of ``frame`` (neutral without a tracking), the camera's
    distance and focal length, and the image size (its longer side ``size`` when given)."""
    rotations = np.zeros((5, 3), np.float32)
    if tracking is None:
        side = size or DEFAULT_SIZE
        return OrbitPose(np.zeros(avatar.n_expressions, np.float32), rotations, DEFAULT_DISTANCE_M,
                         (2.1 * side, 2.1 * side), side, side, None)
    if tracking.n_expressions != avatar.n_expressions:
        raise InputError(f"the tracking has {tracking.n_expressions} expression coefficients per frame "
                         f"but the avatar has {avatar.n_expressions} blendshapes; use a tracking made "
                         "with the head model the avatar was trained with")
    frame = 0 if frame is None else int(frame)
    if not 0 <= frame < tracking.n_frames:
        raise InputError(f"--frame {frame} is outside the tracking's frames 0..{tracking.n_frames - 1}")
    rotations[2:] = tracking.joint_rotations[frame, 2:]
    width, height = (int(v) for v in tracking.image_size)
    scale = 1.0 if size is None else size / max(width, height)
    width, height = max(2, round(width * scale)), max(2, round(height * scale))
    intrinsics = tracking.intrinsics[frame]
    focal = (float(intrinsics[0, 0]) * scale, float(intrinsics[1, 1]) * scale)
    return OrbitPose(np.asarray(tracking.expressions[frame], np.float32), rotations,
                     _tracked_distance(avatar, tracking, frame), focal, width, height, frame)


def _tracked_distance(avatar: Avatar, tracking: Tracking, frame: int) -> float:
    """Distance from frame's camera centre to the posed centre of the avatar's head mesh."""
    transforms = animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                          tracking.joint_rotations[frame], tracking.translation[frame])
    posed = animate.skin(avatar.mesh_vertices.astype(np.float64), avatar.mesh_lbs_weights, transforms)
    centre = 0.5 * (posed.min(axis=0) + posed.max(axis=0))
    camera_centre = np.linalg.inv(tracking.extrinsics[frame].astype(np.float64))[:3, 3]
    return float(np.linalg.norm(camera_centre - centre))


def look_at_viewmat(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(4, 4) world-to-camera transform (OpenCV axes) of a camera at ``eye`` looking at
    ``target`` with head-space +Y up in the image."""
    forward = target - eye
    forward = forward / forward.norm()
    down = torch.tensor([0.0, -1.0, 0.0]) - forward * -forward[1]
    down = down / down.norm()
    right = torch.linalg.cross(down, forward)
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.stack([right, down, forward])
    viewmat[:3, 3] = -viewmat[:3, :3] @ eye
    return viewmat


def orbit_camera(pose: OrbitPose, pivot: torch.Tensor, yaw_degrees: float):
    """``backend.render.Cameras`` (one view) at ``yaw_degrees`` around ``pivot`` (3,)."""
    from ..render import Cameras

    yaw = math.radians(yaw_degrees)
    eye = pivot + pose.distance * torch.tensor([math.sin(yaw), 0.0, math.cos(yaw)])
    intrinsics = torch.tensor([[pose.focal[0], 0.0, pose.width / 2],
                               [0.0, pose.focal[1], pose.height / 2], [0.0, 0.0, 1.0]])
    return Cameras(look_at_viewmat(eye, pivot)[None], intrinsics[None], pose.width, pose.height)


# -- the head model, posed ---------------------------------------------------------------------
def load_orbit_head(avatar: Avatar, tracking: Tracking | None, head_model: str | None = None):
    """The head model the avatar was trained with (``head_model``, else the tracking's file,
    else the built-in one when the avatar says so), with as many expressions as the avatar."""
    import os

    from ..headmodel import load_head_model

    named = tracking.head_model if tracking is not None else {}
    spec = head_model or named.get("path")
    if not spec:
        if avatar.head_model.get("kind", "builtin") != "builtin":
            raise InputError(f"the avatar was trained with head model {avatar.head_model}; pass "
                             "--head-model with that FLAME file (or --tracking with its tracking)")
        spec = "builtin"
    if spec != "builtin" and not os.path.exists(spec):
        raise InputError(f"the head model {spec!r} is not on this machine; pass --head-model "
                         "with the file's path")
    embedding = named.get("landmark_embedding") if spec != "builtin" else None
    head = load_head_model(spec, n_expressions=avatar.n_expressions, landmark_embedding=embedding)
    if head.n_vertices != len(avatar.mesh_vertices):
        raise InputError(f"the head model {spec!r} has {head.n_vertices} vertices but the avatar's "
                         f"mesh has {len(avatar.mesh_vertices)}; pass the --head-model the avatar "
                         "was trained with")
    return head


@torch.no_grad()
def posed_head(head, avatar: Avatar, pose: OrbitPose) -> tuple[torch.Tensor, torch.Tensor]:
    """The posed head mesh's vertices (V, 3) and its head-region faces (F_head, 3)."""
    from ..headmodel.regions import head_faces

    rest = torch.as_tensor(avatar.mesh_vertices, dtype=torch.float32)
    offsets = rest - head.v_template.float()
    out = head(expression=torch.as_tensor(pose.expressions)[None].float(),
               joint_rotations=torch.as_tensor(pose.joint_rotations)[None].float(),
               vertex_offsets=offsets)
    faces = head.faces.long()
    return out.vertices[0].float(), faces[head_faces(head, rest)]


def head_pivot(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(3,) the centre of the bounding box of the head region's vertices."""
    used = vertices[faces.unique()]
    return 0.5 * (used.min(dim=0).values + used.max(dim=0).values)


# -- rendering ---------------------------------------------------------------------------------
class Orbit:
    """An avatar posed once, rendered and measured from any yaw."""

    def __init__(self, avatar: Avatar, tracking: Tracking | None = None, frame: int | None = None,
                 head_model: str | None = None, size: int | None = None, head=None):
        from .avatar_file import model_from_avatar

        self.avatar, self.pose = avatar, orbit_pose(avatar, tracking, frame, size)
        self.head = head if head is not None else load_orbit_head(avatar, tracking, head_model)
        self.vertices, self.head_faces = posed_head(self.head, avatar, self.pose)
        self.pivot = head_pivot(self.vertices, self.head_faces)
        self.model, _ = model_from_avatar(avatar)
        self.transforms = torch.from_numpy(animate.joint_transforms(
            avatar.joint_positions, avatar.joint_parents, self.pose.joint_rotations)).float()

    @torch.no_grad()
    def render(self, yaw_degrees: float):
        """``backend.render.RenderOutput`` of the avatar at ``yaw_degrees``."""
        from ..render import render

        camera = orbit_camera(self.pose, self.pivot, yaw_degrees)
        centre = torch.linalg.inv(camera.viewmats[0])[:3, 3]
        gaussians, _ = self.model.gaussians(torch.as_tensor(self.pose.expressions).float(),
                                            self.transforms, centre)
        return render(gaussians, camera, background=torch.tensor(BACKGROUND))

    @torch.no_grad()
    def silhouette(self, yaw_degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The head region of the posed head model seen at ``yaw_degrees``: (H, W) bool, and
        the mesh's depth (H, W), metres (inf outside)."""
        from ..geometry.raster import project, rasterize

        camera = orbit_camera(self.pose, self.pivot, yaw_degrees)
        screen = project(self.vertices, camera.viewmats[0], camera.Ks[0])
        face, bary = rasterize(screen, self.head_faces, self.pose.width, self.pose.height)
        inside = face >= 0
        depth = torch.full(inside.shape, float("inf"))
        depth[inside] = (bary[inside] * screen[self.head_faces[face[inside]], 2]).sum(dim=1)
        return inside, depth

    def coverage(self, yaw_degrees: float, result=None) -> tuple[float, float]:
        """(coverage, surface coverage) at ``yaw_degrees``: the fractions of the head
        silhouette's pixels where the avatar's alpha is >= 0.9, and where in addition its
        rendered depth is at most ``SURFACE_TOLERANCE_M`` behind the mesh (not seen through a
        hole in the near side). ``result``: the avatar's ``RenderOutput`` at that yaw, if any."""
        inside, mesh_depth = self.silhouette(yaw_degrees)
        result = result if result is not None else self.render(yaw_degrees)
        if not inside.any():
            return 0.0, 0.0
        covered = result.alpha[0, ..., 0][inside] >= ALPHA_COVERED
        in_front = result.depth[0, ..., 0][inside] <= mesh_depth[inside] + SURFACE_TOLERANCE_M
        return float(covered.float().mean()), float((covered & in_front).float().mean())


def coverage_key(yaw: float, name: str = "coverage") -> str:
    """``coverage_45``, ``coverage_-45``, ``surface_45``: a metric's name at a yaw (degrees)."""
    return f"{name}_{int(round(yaw))}" if float(yaw).is_integer() else f"{name}_{yaw:g}"


def _as_avatar(avatar) -> Avatar:
    from ..formats import avatar as avatar_format

    return avatar if isinstance(avatar, Avatar) else avatar_format.read(avatar)


def _as_tracking(tracking) -> Tracking | None:
    from ..formats import tracking as tracking_format

    if tracking is None or isinstance(tracking, Tracking):
        return tracking
    return tracking_format.read(tracking)


def orbit_coverage(avatar, tracking=None, frame: int | None = None, yaws=COVERAGE_YAWS,
                   head_model: str | None = None, size: int | None = None) -> dict:
    """Novel-view coverage of an avatar (see the module docstring).

    Args:
        avatar: an ``Avatar`` or the path of an avatar file.
        tracking: a ``Tracking``, its path, or None (neutral face, default camera).
        frame: the tracking frame whose expression, jaw, eyes and camera are used (default 0).
        yaws: degrees; positive = the camera on the subject's left.
        head_model: the head model's spec (default: the tracking's, else the built-in one).
        size: longer image side in pixels (default: the tracking's image size).

    Returns:
        ``{"coverage_-45": 0.99, "coverage_45": 0.98, "coverage_min": 0.98, "surface_-45": 0.97,
        "surface_45": 0.95, "surface_min": 0.95, "frame": N, "yaws": [...], "size": [W, H]}``;
        fractions in [0, 1]. ``coverage_*`` counts alpha >= 0.9 only; ``surface_*`` also asks
        that the avatar's depth there is within 2 cm behind the head mesh's (a hole in the near
        side through which the inside of the far side shows is opaque, but not surface).
    """
    orbit = Orbit(_as_avatar(avatar), _as_tracking(tracking), frame, head_model, size)
    return coverage_report(orbit, yaws)


def coverage_report(orbit: Orbit, yaws=COVERAGE_YAWS, results: dict | None = None) -> dict:
    """Coverage at each yaw of an ``Orbit`` (``results``: yaw -> its RenderOutput, if rendered)."""
    results = results or {}
    measured = {y: orbit.coverage(y, results.get(y)) for y in yaws}
    report: dict = {}
    for name, index in (("coverage", 0), ("surface", 1)):
        values = {coverage_key(y, name): round(pair[index], 4) for y, pair in measured.items()}
        report.update(values, **{f"{name}_min": min(values.values()) if values else None})
    return {**report, "frame": orbit.pose.frame, "yaws": [float(y) for y in yaws],
            "size": [orbit.pose.width, orbit.pose.height]}


# -- the turntable -----------------------------------------------------------------------------
VIDEO_STEP = 3.0       # degrees between video frames (a multiple of 15: +-45 and +-60 are frames)
VIDEO_FPS = 25.0


def video_yaws(limit: float = 60.0, step: float = VIDEO_STEP) -> list[float]:
    """-limit..+limit in ``step`` degrees."""
    count = int(round(2 * limit / step))
    return [-limit + i * step for i in range(count + 1)]


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def strip_image(views: list[tuple[float, np.ndarray]]):
    """The views (yaw, (H, W, 3) uint8) side by side, each labelled with its yaw; a PIL image."""
    from PIL import Image, ImageDraw

    height, width = views[0][1].shape[:2]
    strip = Image.new("RGB", (width * len(views), height), "white")
    draw = ImageDraw.Draw(strip)
    for i, (yaw, image) in enumerate(views):
        strip.paste(Image.fromarray(image), (i * width, 0))
        draw.text((i * width + 3, 2), f"{yaw:+.0f}", fill=(0, 0, 0))
    return strip


def turntable(orbit: Orbit, video: str | None = None, strip: str | None = None,
              coverage_yaws=COVERAGE_YAWS, progress=None) -> dict:
    """Render the turntable: an mp4 sweeping -60..+60..-60 deg (``video``) and/or the strip PNG
    of ``STRIP_YAWS`` (``strip``); returns the coverage report at ``coverage_yaws``."""
    from ..fileio import write_image

    yaws = sorted(set(STRIP_YAWS) | set(coverage_yaws) | (set(video_yaws()) if video else set()))
    images, results = {}, {}
    for i, yaw in enumerate(yaws):
        result = orbit.render(yaw)
        images[yaw] = to_uint8(result.rgb[0])
        if yaw in coverage_yaws:
            results[yaw] = result
        if progress is not None:
            progress.progress(i + 1, len(yaws))
    if strip:
        write_image(strip, strip_image([(yaw, images[yaw]) for yaw in STRIP_YAWS]))
    if video:
        from ..synth.render import write_video

        sweep = [images[yaw] for yaw in video_yaws()]
        write_video(video, sweep + sweep[-2:0:-1], VIDEO_FPS)
    return coverage_report(orbit, coverage_yaws, results)
