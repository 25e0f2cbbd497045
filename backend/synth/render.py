"""Render the synthetic subject's frames, masks, tracking file and video."""

from __future__ import annotations

import os

import numpy as np
import torch

from ..fileio import ensure_writable_folder, write_image, write_json
from ..formats import tracking as tracking_format
from ..formats.prepared import FRAMES, MASKS, PreparedData
from ..geometry.raster import project, rasterize
from ..headmodel.lbs import skin_points
from .performance import make_performance
from .subject import CAVITY, Subject, albedo, build_subject, shading

BACKGROUND = (0.62, 0.64, 0.66)
SUPERSAMPLE = 2
FPS = 25.0


def camera(size: int, center: np.ndarray, distance: float = 0.65) -> tuple[np.ndarray, np.ndarray]:
    """A frontal camera at +Z looking at ``center``: viewmat (4, 4) and K (3, 3)."""
    viewmat = np.diag([1.0, -1.0, -1.0, 1.0])
    viewmat[:3, 3] = [-center[0], center[1], center[2] + distance]
    focal = 2.1 * size
    intrinsics = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    return viewmat.astype(np.float32), intrinsics.astype(np.float32)


def render_frame(subject: Subject, posed_head: torch.Tensor, transforms: torch.Tensor,
                 viewmat: torch.Tensor, intrinsics: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame: RGB (S, S, 3) uint8 on the background and mask (S, S) uint8."""
    extra = skin_points(subject.vertices[None, subject.n_head:], subject.lbs_weights[subject.n_head:],
                        transforms[None])[0]
    posed = torch.cat([posed_head, extra])
    big = size * SUPERSAMPLE
    scaled_k = intrinsics.clone()
    scaled_k[:2] *= SUPERSAMPLE
    cull = torch.arange(len(subject.faces)) < subject.n_head_faces
    face, bary = rasterize(project(posed, viewmat, scaled_k), subject.faces, big, big, cull=cull)
    covered = face >= 0
    corners = subject.faces[face[covered]]  # (P, 3)
    weights = bary[covered][..., None]
    rest = (subject.vertices[corners] * weights).sum(dim=1)
    normals = (subject.normals[corners] * weights).sum(dim=1)
    normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-9)
    parts = subject.parts[corners[:, 0]]
    color = albedo(rest, parts, subject) * torch.where(parts[:, None] == CAVITY, 1.0, shading(normals))
    image = torch.tensor(BACKGROUND).expand(big, big, 3).clone()
    image[covered] = color
    mask = covered.float()
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(dim=(1, 3))
    mask = mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(dim=(1, 3))
    to_u8 = lambda x: (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()  # noqa: E731
    return to_u8(image), to_u8(mask)


def synthesize(out: str, n_frames: int = 300, size: int = 256, seed: int = 0, video: bool = True,
               eye_contact: int = 0, progress=None) -> dict:
    """Write the synthetic subject to ``out``; returns what synth.json holds.

    ``eye_contact``: the first that many frames look into the lens (the head keeps its motion,
    the eyes hold on the camera), as a person asked to do for a gaze calibration would.
    """
    from ..headmodel import load_head_model

    head = load_head_model("builtin")
    k = head.exprdirs.shape[-1]
    rng = np.random.default_rng(seed + 1000)
    shape = (rng.normal(size=head.n_shape) * 0.5).astype(np.float32) if head.n_shape else \
        np.zeros(0, np.float32)
    performance = make_performance(n_frames, k, seed)
    shape_t = torch.from_numpy(shape)[None] if shape.size else None
    with torch.no_grad():
        neutral = head(shape=shape_t, expression=torch.zeros(1, k), joint_rotations=torch.zeros(1, 5, 3),
                       translation=torch.zeros(1, 3))
    subject = build_subject(head, neutral.vertices[0], neutral.rest_joints[0])
    center = subject.vertices[: subject.n_head].mean(dim=0).numpy()
    viewmat, intrinsics = camera(size, center)
    if eye_contact:
        _look_into_lens(head, performance, shape_t, viewmat, eye_contact)
    data = PreparedData(out)
    for kind in (FRAMES, MASKS):
        ensure_writable_folder(data.folder(kind))
    if progress is not None:
        progress.stage("synth", f"rendering {n_frames} frames at {size}x{size}", total=n_frames)
    frames = []
    for index in range(n_frames):
        frames.append(_render_index(head, subject, performance, shape_t, index, viewmat, intrinsics,
                                    size, out))
        if progress is not None:
            progress.progress(index + 1, n_frames)
    tracking = _tracking(performance, shape, viewmat, intrinsics, size, head, seed)
    tracking_format.write(data.tracking, tracking)
    if video:
        write_video(os.path.join(out, "video.mp4"), frames, FPS)
    info = {"frames": n_frames, "size": size, "seed": seed, "n_test": performance.n_test,
            "test_combinations": [list(c) for c in performance.test_combinations],
            "expression_names": list(head.expression_names), "background": BACKGROUND,
            "eye_contact_frames": int(eye_contact)}
    write_json(os.path.join(out, "synth.json"), info)
    return info


def _look_into_lens(head, performance, shape_t, viewmat: np.ndarray, n_frames: int) -> None:
    """Aim both eyes of the first ``n_frames`` frames of ``performance`` at the camera (in place)."""
    from ..headmodel.gaze import camera_centres, look_at_eye_rotations

    rotations = torch.from_numpy(performance.joint_rotations[:n_frames])
    shape = None if shape_t is None else shape_t.expand(n_frames, -1)
    with torch.no_grad():
        posed = head(shape=shape, expression=torch.from_numpy(performance.expressions[:n_frames]),
                     joint_rotations=rotations, translation=torch.zeros(n_frames, 3))
    target = camera_centres(torch.from_numpy(viewmat).double()[None].expand(n_frames, -1, -1))
    eyes = look_at_eye_rotations(posed.transforms.double(), posed.joints.double(), head.parents, target)
    performance.joint_rotations[:n_frames, 3:5] = eyes.numpy()


def _render_index(head, subject, performance, shape_t, index, viewmat, intrinsics, size, out) -> np.ndarray:
    with torch.no_grad():
        frame = head(shape=shape_t, expression=torch.from_numpy(performance.expressions[index:index + 1]),
                     joint_rotations=torch.from_numpy(performance.joint_rotations[index:index + 1]),
                     translation=torch.zeros(1, 3))
    rgb, mask = render_frame(subject, frame.vertices[0].float(), frame.transforms[0].float(),
                             torch.from_numpy(viewmat), torch.from_numpy(intrinsics), size)
    data = PreparedData(out)
    write_image(data.image_path(FRAMES, index), rgb)
    write_image(data.image_path(MASKS, index), mask)
    return rgb


def _tracking(performance, shape, viewmat, intrinsics, size, head, seed) -> tracking_format.Tracking:
    t = len(performance.expressions)
    return tracking_format.Tracking(
        fps=FPS, frame_ids=np.arange(t), timestamps=np.arange(t) / FPS,
        image_size=np.array([size, size]), expressions=performance.expressions,
        joint_rotations=performance.joint_rotations, translation=np.zeros((t, 3), np.float32),
        intrinsics=np.repeat(intrinsics[None], t, 0), extrinsics=np.repeat(viewmat[None], t, 0),
        valid=np.ones(t, bool), shape=shape, expression_names=list(head.expression_names),
        head_model={"kind": head.kind}, source={"kind": "synth", "seed": seed})


def write_video(path: str, frames: list[np.ndarray], fps: float) -> None:
    """Encode RGB uint8 frames as H.264 (or MPEG-4 Part 2 where libx264 is missing), atomically."""
    import av

    from ..fileio import atomic_path

    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(tmp, mode="w") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=int(round(fps)))
            height, width = frames[0].shape[:2]
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)),
                                   mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
