"""One-shot mode: an animatable avatar from a single portrait (the LAM seed's setting).

With one photo there is no expression variation and most of the head is never seen, so:

1. The Gaussians are initialized on the fitted head as usual (B0, dB_init from the head model,
   teeth billboards), opaque enough that the face hides the back of the head.
2. Visibility: the posed head mesh of the photo's frame is z-buffered (``geometry.raster``); a
   Gaussian is *visible* when it lies within ``depth_tolerance`` of the nearest surface at its
   pixel and its surface normal faces the camera.
3. Colours: visible Gaussians inside the head region (the person's mask above the neck cut, not
   on a collar or a hand) take the photo's colour (bilinear, after a
   small mask-weighted blur so edge Gaussians do not pick up the background). Hidden ones take the
   colour of the visible Gaussians at their mirror image (x -> -x in rest space, for a turned
   head) or, failing that, the mean colour of their nearest visible neighbours (back of the head:
   hair or skin of the sides). Hidden teeth keep their ivory.
4. Training on the single view: hidden and side-on Gaussians are frozen (their gradients are
   zeroed), the others train with small rates and a rest-state prior (squared drift of B0 positions), the
   blendshape variables dG^ do not train (dB = dB_init), and there is no densification. The
   background is a random colour each step, so Gaussians outside the person fit it by turning
   transparent rather than by taking the background's colour.
5. The target mask is limited to the head's silhouette, grown a little for hair, so the torso
   of a portrait is not something the head has to explain.

``OneShotHook`` does all of this as a trainer hook (hooks.py): ``initialize`` colours the new
avatar and limits the data to the photo, ``background`` draws the random colour, ``extra_loss``
is the rest-state prior and ``step_post_backward`` freezes the hidden Gaussians.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..formats.prepared import PreparedData
from .hooks import TrainingHook
from .sh import rgb_to_sh0

log = logging.getLogger("toonsplat")
HEAD_GROUPS = ("geometry", "texture")  # what a one-shot phase may train


def is_oneshot(folder: str, n_frames: int) -> bool:
    """True for single-frame data or data that ``prepare --image`` wrote."""
    if n_frames == 1:
        return True
    path = PreparedData(folder).prepare_report
    if not os.path.exists(path):
        return False
    from ..fileio import read_json

    try:
        report = read_json(path, "prepare report")
    except Exception:  # an unreadable report does not decide the mode
        return False
    return isinstance(report, dict) and report.get("source", {}).get("kind") == "image"


def oneshot_settings(preset: str, overrides: dict) -> tuple[str, dict]:
    """Preset and overrides for one-shot training, from what was asked for.

    ``cpu-fast`` (the default) becomes ``oneshot``; other presets keep their sizes with the one-shot
    changes on top. Every phase trains B0 only (geometry and texture), never the blendshapes.
    """
    from .config import ONESHOT_OVERRIDES, _merge

    if preset in ("cpu-fast", "oneshot"):
        preset, extra = "oneshot", {}
    else:
        extra = dict(ONESHOT_OVERRIDES)
        if preset == "gpu-paper" and "iterations" not in overrides:
            extra["iterations"] = 3000
    merged = _merge(extra, overrides)
    phases = merged.get("phases")
    if phases:
        merged["phases"] = [_head_only(phase) for phase in phases]
    elif preset != "oneshot":
        merged["phases"] = [{"name": "oneshot", "trainable": list(HEAD_GROUPS)}]
    return preset, merged


def _head_only(phase: dict) -> dict:
    phase = dict(phase)
    groups = [g for g in phase.get("trainable", HEAD_GROUPS) if g in HEAD_GROUPS]
    phase["trainable"] = groups or list(HEAD_GROUPS)
    phase.pop("max_abs_yaw", None)
    return phase


@dataclass
class OneShotState:
    """What one-shot training keeps: which Gaussians the photo sees, and their rest positions."""

    visible: torch.Tensor  # (N,) bool, seen well enough to train; the others are frozen
    anchor: torch.Tensor   # (N, 3) B0 positions at initialization (rest-state prior)
    frame: int = 0         # the photo's frame index

    def state_dict(self) -> dict:
        return {"visible": self.visible, "anchor": self.anchor, "frame": self.frame}

    @classmethod
    def from_state_dict(cls, state: dict) -> OneShotState:
        return cls(state["visible"].bool(), state["anchor"].float(), int(state["frame"]))


# -- geometry of the photo's frame ------------------------------------------------------------------
@torch.no_grad()
def posed_mesh(head, tracking, index: int, device) -> torch.Tensor:
    """(V, 3) head-model vertices of tracked frame ``index`` (shape, offsets, expression, joints,
    translation)."""
    t = tracking
    shape = torch.as_tensor(t.shape, device=device).float() if t.shape.size else None
    offsets = None if t.vertex_offsets is None else torch.as_tensor(t.vertex_offsets, device=device).float()
    out = head(shape=None if shape is None else shape[None],
               expression=torch.as_tensor(t.expressions[index:index + 1], device=device).float(),
               joint_rotations=torch.as_tensor(t.joint_rotations[index:index + 1], device=device).float(),
               translation=torch.as_tensor(t.translation[index:index + 1], device=device).float(),
               vertex_offsets=offsets)
    return out.vertices[0].float()


@torch.no_grad()
def depth_buffer(vertices: torch.Tensor, faces: torch.Tensor, viewmat: torch.Tensor,
                 intrinsics: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Depth (H, W) of the nearest front-facing triangle per pixel, inf where there is none."""
    from ..geometry.raster import project, rasterize

    screen = project(vertices.cpu(), viewmat.cpu(), intrinsics.cpu())
    faces = faces.cpu()
    face, bary = rasterize(screen, faces, width, height,
                           cull=torch.ones(len(faces), dtype=torch.bool))
    depth = torch.full((height, width), float("inf"))
    covered = face >= 0
    corner_depth = screen[faces[face[covered]], 2]  # (P, 3)
    depth[covered] = (bary[covered] * corner_depth).sum(dim=1)
    return depth.to(vertices.device)


def silhouette_region(depth: torch.Tensor, dilation_px: int) -> torch.Tensor:
    """(H, W, 1) float map: the mesh's silhouette grown by ``dilation_px`` pixels (max pooling)."""
    inside = torch.isfinite(depth).float()[None, None]
    if dilation_px > 0:
        inside = torch.nn.functional.max_pool2d(inside, 2 * dilation_px + 1, stride=1,
                                                padding=dilation_px)
    return inside[0, 0, :, :, None]


def region_function(data, head, region_dilation: float):
    """A cached ``index -> (H, W, 1)`` map of the head region, for ``FrameData.region_fn``.

    Args:
        data: FrameData. head: HeadModel. region_dilation: growth as a fraction of the image size.
    """
    cache: dict[int, torch.Tensor] = {}
    dilation = int(round(region_dilation * max(data.width, data.height)))
    faces = head.faces.long()

    def region(index: int) -> torch.Tensor:
        if index not in cache:
            viewmat, intrinsics = data.camera(index)
            depth = depth_buffer(posed_mesh(head, data.tracking, index, data.device), faces, viewmat,
                                 intrinsics, data.width, data.height)
            cache[index] = silhouette_region(depth, dilation)
        return cache[index]

    return region


# -- visibility and colours -------------------------------------------------------------------------
@torch.no_grad()
def gaussian_visibility(config, data, head, model, transforms: torch.Tensor,
                        index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which Gaussians the camera of frame ``index`` sees, and where.

    Args:
        config: OneShotConfig. data: FrameData. head: HeadModel. model: GaussianBlendshapes.
        transforms: (J, 4, 4) skinning transforms of frame ``index``.

    Returns:
        visible (N,) bool, facing (N,) cosine between surface normal and the ray to the camera
        (1 for mouth Gaussians) and pixel coordinates (N, 2) (u, v; pixel centres at +0.5).
    """
    from scipy.spatial import cKDTree

    from ..geometry.triangles import vertex_normals

    cfg, faces = config, head.faces.long()
    expressions = torch.as_tensor(data.tracking.expressions[index], device=data.device).float()
    means = model.skin(model.blend(expressions), transforms).means
    viewmat, intrinsics = data.camera(index)
    cam = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2].clamp_min(1e-6)
    u = intrinsics[0, 0] * cam[:, 0] / z + intrinsics[0, 2]
    v = intrinsics[1, 1] * cam[:, 1] / z + intrinsics[1, 2]
    mesh = posed_mesh(head, data.tracking, index, data.device)
    depth = depth_buffer(mesh, faces, viewmat, intrinsics, data.width, data.height)
    # The farthest surface depth of the 3x3 neighbourhood: lenient on steep slopes.
    depth = torch.nn.functional.max_pool2d(depth[None, None], 3, stride=1, padding=1)[0, 0]
    px, py = u.floor().long(), v.floor().long()
    inside = (px >= 0) & (px < data.width) & (py >= 0) & (py < data.height) & (cam[:, 2] > 0)
    surface = torch.full_like(z, float("inf"))
    surface[inside] = depth[py[inside], px[inside]]
    in_front = z <= surface + cfg.depth_tolerance
    normals = vertex_normals(mesh, faces)
    _, nearest = cKDTree(mesh.cpu().numpy()).query(means.cpu().numpy())
    center = torch.linalg.inv(viewmat)[:3, 3]
    to_camera = center - means
    to_camera = to_camera / to_camera.norm(dim=1, keepdim=True).clamp_min(1e-12)
    facing = (normals[torch.as_tensor(nearest, device=means.device)] * to_camera).sum(dim=1)
    facing = torch.where(model.mouth, torch.ones_like(facing), facing)
    visible = inside & in_front & (facing > cfg.min_facing)
    return visible, facing, torch.stack([u, v], dim=1)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W, C) image (identity for sigma < 0.1)."""
    if sigma < 0.1:
        return image
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = image.shape[-1]
    out = image.permute(2, 0, 1)[None]
    out = torch.nn.functional.pad(out, (radius, radius, radius, radius), mode="replicate")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                                     groups=channels)
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                                     groups=channels)
    return out[0].permute(1, 2, 0)


def sample_photo(rgb: torch.Tensor, mask: torch.Tensor, pixels: torch.Tensor,
                 sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear colour of the photo at ``pixels``, blurred within the mask.

    Args:
        rgb: (H, W, 3) in [0, 1]; mask: (H, W, 1) in [0, 1]; pixels: (N, 2) (u, v) with pixel
        centres at +0.5; sigma: blur in pixels (mask-weighted, so no background bleeds in).

    Returns:
        colours (N, 3) and mask coverage (N,) at the points.
    """
    height, width = rgb.shape[:2]
    weight = _blur(mask, sigma)
    image = _blur(rgb * mask, sigma) / weight.clamp_min(1e-4)
    stacked = torch.cat([image, weight], dim=-1).permute(2, 0, 1)[None]
    scale = torch.tensor([width, height], dtype=pixels.dtype, device=pixels.device)
    grid = (pixels / scale * 2 - 1)[None, None]
    values = torch.nn.functional.grid_sample(stacked, grid, mode="bilinear", padding_mode="border",
                                             align_corners=False)[0, :, 0].T  # (N, 4)
    return values[:, :3].clamp(0, 1), values[:, 3]


def fill_hidden(points: np.ndarray, colours: np.ndarray, source: np.ndarray, targets: np.ndarray,
                neighbours: int = 8) -> np.ndarray:
    """Colours for Gaussians the photo does not show, from the ones it does.

    A target whose mirror image (x -> -x, rest space) has a source within twice the sources'
    typical spacing takes that source's colour; the others take the inverse-distance mean of
    their ``neighbours`` nearest sources.

    Args:
        points: (N, 3) rest positions; colours: (N, 3); source, targets: (N,) bool.

    Returns:
        (N, 3) colours with the targets filled.
    """
    from scipy.spatial import cKDTree

    out = colours.copy()
    if not targets.any():
        return out
    tree = cKDTree(points[source])
    palette = colours[source]
    spacing = np.median(tree.query(points[source], k=2)[0][:, 1])
    query = points[targets]
    distances, nearest = tree.query(query, k=min(neighbours, len(palette)))
    distances, nearest = distances.reshape(len(query), -1), nearest.reshape(len(query), -1)
    weights = 1.0 / (distances + spacing)
    filled = (palette[nearest] * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)
    mirror_distance, mirror = tree.query(query * np.array([-1.0, 1.0, 1.0]))
    use_mirror = mirror_distance < 2 * spacing
    filled[use_mirror] = palette[mirror[use_mirror]]
    out[targets] = filled
    return out


@torch.no_grad()
def prepare(config, data, head, model, frame_transforms: torch.Tensor) -> OneShotState:
    """Colour a freshly initialized avatar from the photo and decide what trains.

    Limits ``data`` to the photo's frame and its head region (``region_fn``) and sets the
    colours, opacities and scales of ``model``; returns the state the training step uses.

    Args:
        config: OneShotConfig. data: FrameData. head: HeadModel. model: GaussianBlendshapes.
        frame_transforms: (T, J, 4, 4) skinning transforms of every tracked frame.
    """
    from ..errors import InputError
    from .sh import sh0_to_rgb

    cfg = config
    index = int(data.train[0])
    data.use_first_frame_only()
    data.region_fn = region_function(data, head, cfg.region_dilation)
    visible, facing, pixels = gaussian_visibility(cfg, data, head, model, frame_transforms[index], index)
    rgb, mask = data.photo(index)
    # Only the head region colours the head: not a hand on the face, not the torso or a collar
    # below the neck cut (the neck's last 2 cm below the cut take their neighbours' colour).
    mask = mask * data.weight(index)
    sigma = cfg.blur_sigma * max(data.width, data.height) / 256
    sampled, coverage = sample_photo(rgb, mask, pixels, sigma)
    seen = visible & (coverage > 0.5)
    source = seen & ~model.mouth
    if int(source.sum()) < 10:
        raise InputError(f"the fitted head of {data.folder} covers almost none of the photo's person "
                         "mask; check qa/ of the prepared data and re-run prepare on a clearer portrait")
    colours = sh0_to_rgb(model.params["sh_dc"][:, 0]).clamp(0, 1)
    colours[seen] = sampled[seen]
    targets = ~model.mouth & ~source
    filled = fill_hidden(model.params["means"].cpu().numpy(), colours.cpu().numpy(),
                         source.cpu().numpy(), targets.cpu().numpy(), cfg.fill_neighbours)
    colours = torch.as_tensor(filled, device=data.device).float()
    model.params["sh_dc"][:, 0] = rgb_to_sh0(colours)
    logit = float(np.log(cfg.init_opacity / (1 - cfg.init_opacity)))
    model.params["opacity_logits"].fill_(logit)
    model.params["log_scales"] += float(np.log(cfg.init_scale))
    log.info("one-shot: %d of %d Gaussians seen in frame %d, %d coloured from their neighbours",
             int(seen.sum()), model.n_gaussians, index, int(targets.sum()))
    trained = visible & (facing > cfg.train_facing)
    return OneShotState(trained, model.params["means"].detach().clone(), index)


# -- the training hook ------------------------------------------------------------------------------
class OneShotHook(TrainingHook):
    """One-shot training as a trainer hook (hooks.py); its state is a ``OneShotState``.

    Args:
        config: OneShotConfig. data: the run's FrameData (limited to the photo by ``initialize``
            or ``load_state_dict``). head: the HeadModel the tracking was made with.
    """

    name = "oneshot"

    def __init__(self, config, data, head):
        self.config, self.data, self.head = config, data, head
        self.state: OneShotState | None = None

    def initialize(self, model, frame_transforms: torch.Tensor) -> None:
        self.state = prepare(self.config, self.data, self.head, model, frame_transforms)

    def background(self, background: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A random colour each step: transparency, not the background's colour, fits it."""
        return torch.rand(3, generator=generator).to(background.device)

    def extra_loss(self, model) -> torch.Tensor:
        return anchor_loss(model, self.state, self.config.anchor)

    def step_post_backward(self, model, optimizer, info, step, refresh=None, generator=None,
                           densify=True) -> dict[str, int]:
        freeze_hidden(model, self.state)  # and no densification: N stays fixed
        return {}

    def state_dict(self) -> dict:
        return self.state.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.state = OneShotState.from_state_dict(state)
        self.data.use_first_frame_only()
        self.data.region_fn = region_function(self.data, self.head, self.config.region_dilation)


def anchor_loss(model, state: OneShotState, weight: float) -> torch.Tensor:
    """Rest-state prior: mean squared drift (m^2) of the trained B0 positions, times ``weight``."""
    drift = model.params["means"][state.visible] - state.anchor[state.visible]
    return weight * drift.pow(2).sum(dim=1).mean()


@torch.no_grad()
def freeze_hidden(model, state: OneShotState) -> None:
    """Zero the gradients of every parameter of the Gaussians the photo does not show."""
    hidden = ~state.visible
    for param in model.params.values():
        if param.grad is not None:
            param.grad[hidden] = 0
