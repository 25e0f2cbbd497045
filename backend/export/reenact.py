"""Drive an avatar file with a tracking file: posed Gaussians per frame, PLY of a frame, video.

Cross-identity reenactment is the same call: a tracking file is only parameters (expressions,
joint rotations, cameras); the avatar's own rest joints and meshes are used.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..formats import animate
from ..formats.avatar import Avatar
from ..formats.tracking import Tracking
from .avatar_file import model_from_avatar


def frame_transforms(avatar: Avatar, tracking: Tracking, index: int) -> torch.Tensor:
    """(J, 4, 4) skinning transforms of frame ``index`` with the avatar's rest joints."""
    transforms = animate.joint_transforms(avatar.joint_positions, avatar.joint_parents,
                                          tracking.joint_rotations[index], tracking.translation[index])
    return torch.from_numpy(transforms).float()


def check_compatible(avatar: Avatar, tracking: Tracking, tracking_path: str) -> None:
    if tracking.n_expressions != avatar.n_expressions:
        raise InputError(f"{tracking_path} has {tracking.n_expressions} expression coefficients per frame "
                         f"but the avatar has {avatar.n_expressions} blendshapes; track the driving "
                         "video with the head model the avatar was trained with")


@torch.no_grad()
def posed_gaussians(model, avatar: Avatar, tracking: Tracking, index: int, camera_center: torch.Tensor):
    """Activated Gaussians (backend.render.Gaussians) and posed Blended of one frame."""
    expressions = torch.as_tensor(tracking.expressions[index]).float()
    return model.gaussians(expressions, frame_transforms(avatar, tracking, index), camera_center)


@torch.no_grad()
def render_tracked_frame(model, avatar: Avatar, tracking: Tracking, index: int, scale: float = 1.0,
                         background=(1.0, 1.0, 1.0)):
    """Frame ``index`` of ``tracking`` seen by its own camera, the image scaled by ``scale``:
    ``backend.render.render``'s output (rgb (1, H, W, 3), alpha (1, H, W, 1))."""
    from ..render import Cameras, render

    viewmat = torch.as_tensor(tracking.extrinsics[index]).float()
    intrinsics = torch.as_tensor(tracking.intrinsics[index]).float().clone()
    intrinsics[:2] *= scale
    width, height = (max(2, int(round(int(v) * scale))) for v in tracking.image_size)
    gaussians, _ = posed_gaussians(model, avatar, tracking, index, torch.linalg.inv(viewmat)[:3, 3])
    return render(gaussians, Cameras(viewmat[None], intrinsics[None], width, height),
                  background=torch.as_tensor(background, dtype=torch.float32))


PREVIEW_FRAMES = 60  # the build's preview: at most this many of the held-out frames


def preview_frames(n_frames: int, limit: int = PREVIEW_FRAMES) -> np.ndarray:
    """Frame indices of the build's preview: the first ``limit`` held-out frames (the frames
    ``train`` evaluates on, ``train.data.split_frames``)."""
    from ..train.data import split_frames

    return split_frames(n_frames)[1][:limit]


@torch.no_grad()
def render_video(avatar: Avatar, tracking: Tracking, out: str, size: int | None = None,
                 background=(1.0, 1.0, 1.0), progress=None, device="cpu",
                 frames=None) -> int:
    """Render the frames of ``tracking`` (every one, or the indices ``frames``) with their
    cameras into an mp4; returns the frame count."""
    from ..synth.render import write_video

    model, _ = model_from_avatar(avatar, device)
    width, height = (int(v) for v in tracking.image_size)
    scale = 1.0 if size is None else size / max(width, height)
    indices = range(tracking.n_frames) if frames is None else [int(i) for i in frames]
    images = []
    for index in indices:
        result = render_tracked_frame(model, avatar, tracking, index, scale, background)
        images.append((result.rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
        if progress is not None:
            progress.progress(len(images), len(indices))
    write_video(out, images, tracking.fps)
    return len(images)


@torch.no_grad()
def frame_ply_arrays(avatar: Avatar, tracking: Tracking | None, index: int) -> dict[str, np.ndarray]:
    """Gaussian arrays of the neutral avatar (tracking None) or of a tracked frame, for PLY."""
    if tracking is None:
        return {"means": avatar.means, "log_scales": avatar.log_scales, "quats": avatar.quats,
                "opacity_logits": avatar.opacity_logits, "sh": avatar.sh}
    if not 0 <= index < tracking.n_frames:
        raise InputError(f"--frame {index} is outside the tracking's 0..{tracking.n_frames - 1}")
    model, _ = model_from_avatar(avatar)
    expressions = torch.as_tensor(tracking.expressions[index]).float()
    posed = model.skin(model.blend(expressions), frame_transforms(avatar, tracking, index))
    return {"means": posed.means.numpy(), "log_scales": posed.log_scales.numpy(),
            "quats": posed.quats.numpy(), "opacity_logits": posed.opacity_logits.numpy(),
            "sh": posed.sh.numpy()}
