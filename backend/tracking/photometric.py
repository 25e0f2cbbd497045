"""Photometric refinement: align the fitted head to the pixels, not only to the landmarks.

MediaPipe's landmarks carry a steady per-landmark bias of a few pixels (docs/TRACKING.md), which a
landmark fit inherits. This step adds a dense term that does not go through the detector: tens of
thousands of points sampled on the head's surface (denser on the eyeballs, so the iris follows
each frame's gaze) each get one colour shared by all frames (the texture), and every frame is
asked to show that colour where the point projects:

    E = [w * sum_t sum_p vis[t, p] * huber((I_t(proj_t(x_p)) - c_p) / s)
         + w_sil * sum_t sum_p front[t, p] * huber(D_t(proj_t(x_p)) / s_sil)] / n_visible
        + lambda * E_landmarks + priors + smoothness

The second sum is a one-sided silhouette term: D_t is the distance (pixels) outside the frame's
foreground mask, 0 on it, and ``front`` the points on the front-most surface that lie on the
background or within ``OUTLINE_BAND`` pixels of it (elsewhere D and its gradient vanish). The
texture is learned from the frames, so the colour term cannot tell a head that is a little too
large or too near from the truth; the mask edge can. One-sided because masks also hold hair, neck
and body: the head must lie inside the foreground, not fill it. The eyeballs' colours are not
learned freely per point: an eyeball turned by one angle in every frame, with its colours turned
back, would look the same, so nothing would hold the gaze. They are a profile of the angle from
the optical axis (the iris and pupil are discs centred on it) times a smooth shading per eye
(``radial_eye_texture``), which ties the gaze to where the iris is. Eyeball points next to the
lids (``eye_seam_grow``) are left out: blurred with the lid's colour, which does not turn with the
eye, they hold the eye still against the lids. In a frame whose lids hide more of an eye than
usual (a blink), its eyeball points weigh less (``narrowed``) and the smoothness carries the gaze
over from the frames around it (docs/TRACKING.md).

Unknowns and solver are the landmark fit's (``LandmarkProblem``, ``LevenbergMarquardt``): the
points are virtual landmarks of a ``LandmarkHead`` (barycentric points of the mesh), so their
Jacobian is the exact closed form; the image enters through its gradient (Gauss-Newton on the
linearized colour). Alternation: visibility and texture (the per-point median over the frames
that see it) are fixed during a few solver steps, then re-estimated; coarse to fine over image
sizes and blurs, with the landmark weight lowered as the photometric term takes over.

Visibility is exact, from a z-buffer of the posed mesh (``geometry.raster``): a point counts in a
frame only if the triangle seen at its pixel is its own or a neighbour, it faces the camera, and
no depth edge or eyelid/eyeball seam is near (a blurred pixel there mixes surfaces that move
differently). Points outside the foreground mask are dropped too.

The cost is CPU time: a few seconds per frame at the default schedule (2 cores), and memory: a
level's frames are held (colour, mask distance, mask: 5.2 MB per frame at 512; ``check_memory``
refuses a clip that would not fit before the fit starts). So it is an option of ``prepare``
(``--refine photometric``), not the default.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..geometry.triangles import uniform_barycentric
from ..geometry.triangles import vertex_normals as _vertex_normals
from .landmark_head import LandmarkHead
from .solver import LevenbergMarquardt, NormalBlocks

log = logging.getLogger("toonsplat")
CHUNK_FRAMES = 8
OUTLINE_BAND = 3  # pixels: silhouette points are those on or within this of the background
MASK_MISS = 0.1   # share of the visible head beyond OUTLINE_BAND outside a mask that is not trusted


@dataclass
class PhotometricConfig:
    """Schedule and weights of the refinement (losses per frame, see the module docstring)."""

    # (working image size, blur sigma in its pixels); levels above the prepared size are skipped
    levels: tuple = ((128, 2.0), (256, 1.0), (512, 1.0))
    landmark_weights: tuple = (0.1, 0.01, 0.01)  # lambda per level: the landmarks step back
    rounds: int = 3                            # texture / visibility updates per level
    iterations: int = 4                        # solver steps per round (fewer when converged)
    weight: float = 100.0                      # w
    intensity_scale: float = 0.05              # s: colour difference (0..1) that costs one unit
    density: float = 0.25                      # surface points per pixel^2 at 512 (eyes x4)
    min_frames: int = 3                        # a point seen in fewer frames is not used
    facing: float = 0.3                        # cosine to the camera below which a point is dropped
    edge_depth_m: float = 0.001                # depth step that marks an occlusion edge
    edge_grow: int = 2                         # pixels around occlusion edges left out
    seam_grow: int = 2                         # pixels around eyelid seams left out (skin side)
    eye_seam_grow: int = 1                     # pixels (at 512) around eyelid seams left out (eyeball side)
    narrowed: tuple = (0.6, 0.9)               # eyeball weight ramps 0 -> 1 between these shares of
                                               # an eye's median visible points (blinks)
    silhouette_weight: float = 100.0           # the visible surface inside the foreground mask
    silhouette_px: float = 1.0                 # distance outside the mask that costs one unit
    eye_ring_deg: float = 1.0                  # eyeball colour: one per ring of this width about the axis
    radial_eyes: bool = True                   # eyeball colours as a radial profile (else free per point)
    shape_prior_scale: float = 1.0             # identity prior relative to the landmark fit's
    expression_prior_scale: float = 1.0        # expression prior relative to the landmark fit's


@dataclass
class SurfaceSamples:
    """Points on the head mesh: triangle and barycentric coordinates, and which are on an eye."""

    faces: torch.Tensor   # (N,) int64
    bary: torch.Tensor    # (N, 3)
    on_eye: torch.Tensor  # (N,) bool


def surface_samples(model, density: float, pixels_per_metre: float = 1400.0,
                    seed: int = 0) -> SurfaceSamples:
    """Random points on the triangles that face forward (rest normal z > -0.2) above the lower
    neck, about ``density`` per square pixel of a 512 crop (eyeballs four times denser)."""
    rest, faces = model.v_template, model.faces
    normals = _vertex_normals(rest, faces)
    keep_vertex = (normals[:, 2] > -0.2) & (rest[:, 1] > rest[:, 1].min() + 0.3 * (
        rest[:, 1].max() - rest[:, 1].min()))
    eye_face = eye_faces(model)
    corners = rest[faces]
    area = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=1) / 2
    count = (area * pixels_per_metre ** 2 * density * torch.where(eye_face, 4.0, 1.0)).round().long()
    count = count.clamp_min(1) * keep_vertex[faces].all(dim=1)
    face_ids = torch.repeat_interleave(torch.arange(len(faces)), count)
    bary = uniform_barycentric(len(face_ids), torch.Generator().manual_seed(seed))
    return SurfaceSamples(face_ids, bary, eye_face[face_ids])


def eye_faces(model) -> torch.Tensor:
    """(F,) bool: triangles skinned to an eye joint (the eyeballs)."""
    weights = model.lbs_weights
    if weights.shape[1] < 5:
        return torch.zeros(len(model.faces), dtype=torch.bool)
    return weights[model.faces[:, 0], 3:].max(dim=1).values > 0.5


@dataclass
class EyeRings:
    """Where the eyeball samples lie about their eye's optical axis (rest pose)."""

    ring: torch.Tensor       # (N,) int64: ring index about its eye's axis, -1 off the eyeballs
    direction: torch.Tensor  # (N, 3) unit vector from the eye's centre, rest pose
    eye: torch.Tensor        # (N,) int64: 0 left, 1 right (meaningless off the eyeballs)


def eye_rings(model, samples: SurfaceSamples, ring_deg: float) -> EyeRings:
    """Rings of ``ring_deg`` about each eye joint's +z axis (the optical axis at rest)."""
    rest = (model.v_template[model.faces[samples.faces]] * samples.bary[..., None]).sum(dim=1)
    centres = (model.J_regressor @ model.v_template)[3:5]
    eye = torch.cdist(rest, centres).argmin(dim=1)
    direction = rest - centres[eye]
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-9)
    theta = torch.rad2deg(torch.acos(direction[:, 2].clamp(-1.0, 1.0)))
    ring = torch.where(samples.on_eye, (theta / ring_deg).long(), -1)
    return EyeRings(ring, direction, eye)


def radial_eye_texture(texture: torch.Tensor, seen: torch.Tensor, rings: EyeRings,
                       passes: int = 3) -> torch.Tensor:
    """The eyeballs' colours as a profile of the angle from the optical axis times a smooth shading.

    A colour learned freely per point cannot fix the gaze: turning an eyeball by a constant angle
    and its texture back by the same angle changes no pixel, so any prior drags the eyes. The iris
    is a disc centred on the optical axis, so here each ring about the axis has one albedo (median
    of the points seen), multiplied by a grey shading exp(a + b . d) per eye, d the point's rest
    direction (light falls on one side of the ball), fitted to the log ratio by least squares.

    Args:
        texture: (N, 3) per-point colours (medians over frames); seen: (N,) bool, enough frames.
    Returns:
        (N, 3): ``texture`` with the eyeball points replaced where their ring has seen points.
    """
    out = texture.clone()
    for eye in (0, 1):
        points = torch.nonzero((rings.ring >= 0) & (rings.eye == eye))[:, 0]
        used = seen[points]
        if int(used.sum()) < 10:
            continue
        basis = torch.cat([torch.ones(len(points), 1), rings.direction[points]], dim=1)
        ids = torch.unique(rings.ring[points], return_inverse=True)[1]
        colour, ring, fit_basis = texture[points[used]].clamp_min(1e-3), ids[used], basis[used]
        shade = torch.ones(len(colour), 1)
        for _ in range(passes):
            albedo = torch.full((int(ids.max()) + 1, 3), float("nan"))
            for index in torch.unique(ring):
                albedo[index] = (colour[ring == index] / shade[ring == index]).median(dim=0).values
            log_ratio = torch.log(colour / albedo[ring].clamp_min(1e-3)).mean(dim=1, keepdim=True)
            coefficients = torch.linalg.lstsq(fit_basis, log_ratio).solution
            shade = torch.exp(fit_basis @ coefficients)
        model_colour = albedo[ids] * torch.exp(basis @ coefficients)
        known = ~torch.isnan(model_colour[:, 0])
        out[points[known]] = model_colour[known].clamp(0.0, 1.0)
    return out


class _SampleView:
    """The model with the samples as its landmarks (what ``LandmarkHead`` reads)."""

    def __init__(self, model, samples: SurfaceSamples):
        for name in ("faces", "shapedirs", "exprdirs", "v_template", "posedirs", "lbs_weights",
                     "J_regressor", "parents", "n_shape", "n_expressions"):
            setattr(self, name, getattr(model, name))
        self.landmark_faces, self.landmark_bary = samples.faces, samples.bary
        # Iris ids present so no pupil points are appended; the ids themselves are unused.
        self.landmark_ids = torch.full((len(samples.faces),), -1, dtype=torch.int64)
        self.landmark_ids[:2] = torch.tensor([468, 473])


def load_frames(folder: str, count: int, size: int, sigma: float) -> tuple:
    """The first ``count`` prepared frames (``frames/{t:06d}.png``, docs/DEVELOPING.md) and masks
    at ``size``: (T, 4, S, S) values (the blurred colour and the distance in pixels outside the
    foreground mask, 0 inside) and the masks (T, 1, S, S). Image gradients are not stored:
    ``sample_with_gradient`` takes them by central differences where the points fall.

    Raises:
        InputError: a frame or mask PNG is missing or unreadable.
    """
    import cv2

    from ..formats.prepared import PreparedData

    data = PreparedData(folder)
    images = np.empty((count, 4, size, size), np.float32)
    masks = np.ones((count, 1, size, size), np.float32)
    for t in range(count):
        image = cv2.resize(data.read_frame(t), (size, size),
                           interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        if sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), sigma)
        mask = data.read_mask(t)
        if mask is not None:
            masks[t, 0] = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA) / 255.0
        outside = (masks[t, 0] < 0.5).astype(np.uint8)
        # Distance from a background pixel's centre to the mask's edge (half a pixel short of
        # the nearest foreground centre); 0 on the foreground.
        distance = np.maximum(cv2.distanceTransform(outside, cv2.DIST_L2, 5) - 0.5, 0)
        images[t] = np.concatenate([image, distance[..., None]], axis=2).transpose(2, 0, 1)
    return torch.from_numpy(images), torch.from_numpy(masks)


def sample_images(images: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear samples at continuous pixel coordinates (pixel centres at +0.5).
    (B, C, S, S), (B, N, 2) -> (B, N, C)."""
    grid = (pixels / size * 2 - 1)[:, :, None].to(images.dtype)
    return F.grid_sample(images, grid, align_corners=False, padding_mode="border")[..., 0].transpose(1, 2)


_STENCIL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def sample_with_gradient(images: torch.Tensor, pixels: torch.Tensor, size: int) -> tuple:
    """Bilinear samples and their image gradient (central differences one pixel either side:
    the same as interpolating the central-difference images, without storing them).
    (B, C, S, S), (B, N, 2) -> values (B, N, C), gradient (B, N, C, 2) per pixel in x, y."""
    grid = ((pixels[:, :, None] + _STENCIL.to(pixels.dtype)) / size * 2 - 1).to(images.dtype)
    taps = F.grid_sample(images, grid, align_corners=False, padding_mode="border")  # (B, C, N, 5)
    taps = taps.permute(0, 2, 1, 3)                                                  # (B, N, C, 5)
    gradient = torch.stack([taps[..., 1] - taps[..., 2], taps[..., 3] - taps[..., 4]], dim=-1) / 2
    return taps[..., 0], gradient


class PhotometricTerm:
    """The photometric data term at one image level, in the landmark problem's unknowns."""

    def __init__(self, model, problem, samples: SurfaceSamples, images: torch.Tensor,
                 masks: torch.Tensor, size: int, config: PhotometricConfig):
        self.model, self.problem, self.samples, self.config = model, problem, samples, config
        self.images, self.masks, self.size = images, masks, size
        self.scale = size / problem.image_size
        self.head = LandmarkHead(_SampleView(model, samples))
        self.eye_face = eye_faces(model)
        self.rings = eye_rings(model, samples, config.eye_ring_deg)
        self.visible = torch.zeros(images.shape[0], len(samples.faces))
        self.outline = torch.zeros(images.shape[0], len(samples.faces))
        self.texture = torch.zeros(len(samples.faces), 3)

    def _pixels(self, x_frames, x_shared, frames=slice(None)) -> tuple:
        shape, expression, rotations, translation, log_focal = self.problem.unpack(x_frames, x_shared)
        intrinsics = self.problem.scaled_intrinsics(log_focal)[frames]
        return shape, expression[frames], rotations[frames], translation[frames], intrinsics

    def update(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> None:
        """Re-estimate visibility and the texture at the current unknowns."""
        from ..geometry.raster import rasterize
        from .fit import project

        problem, config, size = self.problem, self.config, self.size
        shape, expression, rotations, translation, intrinsics = self._pixels(x_frames, x_shared)
        frames = expression.shape[0]
        mesh = self.model(shape=shape[None].expand(frames, -1), expression=expression,
                          joint_rotations=rotations, translation=translation).vertices
        points = self.head(shape, expression, rotations, translation)
        corners = self.model.faces[self.samples.faces]                          # (N, 3)
        normals = (_vertex_normals(mesh, self.model.faces)[:, corners]
                   * self.samples.bary[None, :, :, None]).sum(dim=2)
        pixels = project(points, intrinsics, problem.depth) * self.scale         # (T, N, 2)
        visible = torch.zeros(frames, len(corners))
        outline = torch.zeros(frames, len(corners))
        turned_to_camera = torch.zeros(frames, len(corners))
        camera = torch.tensor([0.0, 0.0, problem.depth])
        for t in range(frames):
            if float(problem.frame_weight[t]) == 0:
                continue
            vertices = mesh[t]
            screen = torch.cat([project(vertices[None], intrinsics[t:t + 1], problem.depth)[0] * self.scale,
                                (problem.depth - vertices[:, 2:3])], dim=1)
            face, bary = rasterize(screen, self.model.faces, size, size)
            edges, seams = self._edges(face, bary, screen[:, 2])
            background = F.max_pool2d((self.masks[t:t + 1] < 0.5).float(), 2 * OUTLINE_BAND + 1, 1,
                                      OUTLINE_BAND)[0, 0] > 0
            px = pixels[t, :, 0].long().clamp(0, size - 1)
            py = pixels[t, :, 1].long().clamp(0, size - 1)
            seen = face[py, px]
            near = (self.model.faces[seen.clamp_min(0)][:, :, None] == corners[:, None, :]).any(2).any(1)
            view = camera - points[t]
            facing = (view / view.norm(dim=1, keepdim=True) * normals[t]).sum(dim=1)
            clear = torch.where(self.samples.on_eye, ~seams[py, px], ~edges[py, px])
            inside = sample_images(self.masks[t:t + 1], pixels[t:t + 1], size)[0, :, 0] > 0.5
            front = near & (seen >= 0)
            visible[t] = (front & (facing > config.facing) & clear & inside).float()
            turned_to_camera[t] = (facing > config.facing).float()
            outline[t] = (front & background[py, px]).float()
            # A mask that leaves much of the head out (segmentation lost it, an occluder) would
            # drag the head: that frame gets no silhouette term.
            far_out = sample_images(self.images[t:t + 1, 3:4], pixels[t:t + 1], size)[0, :, 0] > OUTLINE_BAND
            if float((front & far_out).sum()) > MASK_MISS * max(float(front.sum()), 1.0):
                outline[t] = 0
        colours = sample_images(self.images[:, :3], pixels, size)
        masked = torch.where(visible[..., None] > 0, colours, torch.full_like(colours, float("nan")))
        texture = torch.nan_to_num(torch.nanmedian(masked, dim=0).values)
        seen = visible.sum(dim=0) >= config.min_frames
        self.texture = radial_eye_texture(texture, seen, self.rings) if config.radial_eyes else texture
        visible = visible * seen.float()[None]
        self.visible = visible * self._eye_weights(visible, turned_to_camera)
        self.outline = outline

    def _eye_weights(self, visible: torch.Tensor, turned_to_camera: torch.Tensor) -> torch.Tensor:
        """(T, N) weights: 1 off the eyeballs; on an eyeball, a ramp (``config.narrowed``) over
        the share of its points turned to the camera that the lids leave in view, against that
        share's median over the clip: a lid over most of the eye (a blink) leaves the gaze of that
        frame to the frames around it. ``visible``, ``turned_to_camera``: (T, N) 0/1."""
        low, high = self.config.narrowed
        weights = torch.ones_like(visible)
        if high <= 0:
            return weights
        for eye in (0, 1):
            points = self.samples.on_eye & (self.rings.eye == eye)
            shown = visible[:, points].sum(dim=1) / turned_to_camera[:, points].sum(dim=1).clamp_min(1.0)
            seen = shown[shown > 0]
            typical = seen.median() if len(seen) else torch.tensor(1.0)
            share = shown / typical.clamp_min(1e-6)
            ramp = ((share - low) / max(high - low, 1e-6)).clamp(0.0, 1.0)
            weights[:, points] = ramp[:, None]
        return weights

    def _edges(self, face: torch.Tensor, bary: torch.Tensor, depth: torch.Tensor) -> tuple:
        """Pixels near occlusion edges (all points) and near eyelid seams (eye points)."""
        valid = face >= 0
        corners = self.model.faces[face.clamp_min(0)]
        zbuffer = torch.where(valid, (bary * depth[corners]).sum(-1), torch.full_like(bary[..., 0], 10.0))
        padded = F.pad(zbuffer[None, None], (1, 1, 1, 1), mode="replicate")
        step = (zbuffer - F.avg_pool2d(padded, 3, stride=1)[0, 0]).abs() > self.config.edge_depth_m
        label = torch.where(valid, self.eye_face[face.clamp_min(0)].float(), -1.0)[None, None]
        seams = (F.max_pool2d(label, 3, 1, 1) != -F.max_pool2d(-label, 3, 1, 1))[0, 0]

        def dilate(flags, grow):
            return F.max_pool2d(flags.float()[None, None], 2 * grow + 1, 1, grow)[0, 0] > 0

        return (dilate(step, self.config.edge_grow) | dilate(seams, self.config.seam_grow),
                dilate(seams, round(self.config.eye_seam_grow * self.size / 512)))

    def _normalizer(self) -> float:
        return max(float(self.visible.sum()) / max(self.visible.shape[0], 1), 1.0)

    def loss(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> float:
        from .fit import project

        shape, expression, rotations, translation, intrinsics = self._pixels(x_frames, x_shared)
        points = self.head(shape, expression, rotations, translation)
        sampled = sample_images(self.images, project(points, intrinsics, self.problem.depth)
                                * self.scale, self.size)
        rho, _ = _huber(self._residual(sampled, self.texture))
        config = self.config
        return float((rho[..., :3].sum(-1) * self.visible).sum() * config.weight
                     + (rho[..., 3] * self.outline).sum() * config.silhouette_weight) / self._normalizer()

    def _residual(self, sampled: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        """Normalized residuals (..., 4): colour minus texture, distance outside the mask."""
        config = self.config
        return torch.cat([(sampled[..., :3] - texture) / config.intensity_scale,
                          sampled[..., 3:4] / config.silhouette_px], dim=-1)

    def linearize(self, x_frames: torch.Tensor, x_shared: torch.Tensor) -> NormalBlocks:
        from .fit import _project_with_jacobian

        problem, config = self.problem, self.config
        shape, expression, rotations, translation, intrinsics = self._pixels(x_frames, x_shared)
        frames, p, s = x_frames.shape[0], problem.n_frame, problem.n_shared
        k, n_fit = problem.n_expressions, problem.n_fit_shape
        out = NormalBlocks(0.0, torch.zeros(frames, p, p), torch.zeros(frames, p, s),
                           torch.zeros(s, s, dtype=torch.float64), torch.zeros(frames, p),
                           torch.zeros(s, dtype=torch.float64))
        channel_weight = torch.tensor([config.weight] * 3 + [config.silhouette_weight]) / self._normalizer()
        channel_scale = torch.tensor([config.intensity_scale] * 3 + [config.silhouette_px])
        for start in range(0, frames, CHUNK_FRAMES):
            part = slice(start, min(start + CHUNK_FRAMES, frames))
            visible = torch.stack([self.visible[part]] * 3 + [self.outline[part]], dim=-1)  # (B, N, 4)
            used = torch.nonzero(visible.flatten(2).any(dim=2).any(dim=0))[:, 0]
            if not len(used):
                continue
            # Only the points some frame of the chunk sees (under half of them at 512).
            visible, head, texture = visible[:, used], self.head.subset(used), self.texture[used]
            coefficients = torch.cat([shape.expand(part.stop - start, -1), expression[part]], 1)
            posed = head.pose(coefficients, rotations[part], translation[part])
            pixels, jacobian = _project_with_jacobian(posed.points, intrinsics[part], problem.depth)
            sampled, gradient = sample_with_gradient(self.images[part], pixels * self.scale, self.size)
            gradient = gradient / channel_scale[:, None]                                # (B, N, 4, 2)
            residual = self._residual(sampled, texture)                                 # (B, N, 4)
            # Derivatives of the level's pixel position (2 rows per point), then of the 4 values
            # through their image gradients: cheaper than carrying 4 rows through the chain rule.
            d_coefficients, d_rotations = head.jacobian(posed, jacobian * self.scale)
            d_pixels = torch.zeros(*jacobian.shape[:3], p + s)                          # (B, N, 2, P+S)
            d_pixels[..., :k] = d_coefficients[..., self.head.n_shape:]
            d_pixels[..., k:k + 15] = d_rotations
            d_pixels[..., k + 15:p] = jacobian * (self.scale * 0.1)
            d_pixels[..., p:p + n_fit] = d_coefficients[..., :n_fit]
            if problem.config.fit_focal:
                d_pixels[..., p + s - 1] = (pixels - intrinsics[part, None, :2, 2]) * self.scale
            columns = torch.cat([gradient @ d_pixels, residual[..., None]], dim=-1)     # (B, N, 4, P+S+1)
            rho, irls = _huber(residual)
            weight = visible * channel_weight
            out.loss += float((rho * weight).sum())
            columns.mul_(torch.sqrt(weight * irls)[..., None])
            flat = columns.flatten(1, 2)
            gram = flat.transpose(1, 2) @ flat
            out.frames[part] = gram[:, :p, :p]
            out.coupling[part] = gram[:, :p, p:p + s]
            out.gradient_frames[part] = gram[:, :p, -1]
            out.shared += gram[:, p:p + s, p:p + s].sum(0).double()
            out.gradient_shared += gram[:, p:p + s, -1].sum(0).double()
        return out


def refine(model, problem, x_frames: torch.Tensor, x_shared: torch.Tensor, folder: str,
           config: PhotometricConfig | None = None, progress=None) -> tuple:
    """Photometric refinement of a landmark fit. Returns (x_frames, x_shared, report dict).

    Args:
        model: the ``HeadModel`` of the fit; problem: its ``LandmarkProblem``.
        x_frames, x_shared: the landmark fit's unknowns.
        folder: the prepared-data folder (``frames/`` and ``masks/`` PNGs of the fit's frames).
    """
    config = config or PhotometricConfig()
    if len(config.landmark_weights) != len(config.levels):
        raise ValueError("one landmark weight per level")
    # The landmark fit runs on one thread (next to mediapipe); these products are large.
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return _refine(model, problem, x_frames, x_shared, folder, config, progress)
    finally:
        torch.set_num_threads(threads)


def levels_for(config: PhotometricConfig, image_size: int) -> list:
    """The schedule's levels that the prepared frames can feed: [((size, sigma), lambda)], sizes
    not above ``image_size`` (the smallest level alone, at ``image_size``, if none is)."""
    levels = [(level, weight) for level, weight in zip(config.levels, config.landmark_weights)
              if level[0] <= image_size]
    if not levels:
        levels = [((image_size, config.levels[0][1]), config.landmark_weights[0])]
    return levels


def bytes_per_frame(size: int) -> int:
    """Memory a level holds per frame: colour, distance outside the mask and the mask, float32."""
    return 5 * size * size * 4


def check_memory(frames: int, image_size: int, config: PhotometricConfig | None = None,
                 available: int | None = None) -> None:
    """Refuse a clip whose largest level would not fit in half the memory (called before the fit).

    Raises:
        InputError: saying how much is needed and what to do.
    """
    config = config or PhotometricConfig()
    size = max(level[0] for level, _ in levels_for(config, image_size))
    needed = frames * bytes_per_frame(size)
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available // 2:
        most = max(available // 2 // bytes_per_frame(size), 1)
        raise InputError(f"--refine photometric holds every frame in memory at {size} px "
                         f"({bytes_per_frame(size) / 1e6:.1f} MB each): {frames} frames need "
                         f"{needed / 1e9:.1f} GB, more than half of this machine's "
                         f"{available / 1e9:.1f} GB; refine at most {most} frames (--start/--end "
                         "or --stride), or leave the refinement out")


def _refine(model, problem, x_frames, x_shared, folder, config, progress) -> tuple:
    samples = surface_samples(model, config.density)
    levels = levels_for(config, problem.image_size)
    started, steps, total = time.perf_counter(), 0, len(levels) * config.rounds
    report = {"samples": int(len(samples.faces)), "levels": []}
    for level, ((size, sigma), landmark_weight) in enumerate(levels):
        images, masks = load_frames(folder, x_frames.shape[0], size, sigma)
        term = PhotometricTerm(model, problem, samples, images, masks, size, config)
        for round_index in range(config.rounds):
            term.update(x_frames, x_shared)
            linearize, evaluate = _combined(problem, term, landmark_weight)
            solver = LevenbergMarquardt(linearize, _regularizer(problem, config), evaluate)
            x_frames, x_shared, loss, taken = solver.run(x_frames, x_shared, config.iterations)
            steps += taken
            if progress is not None:
                progress.progress(level * config.rounds + round_index + 1, total, "photometric")
        report["levels"].append({"size": size, "sigma": sigma, "landmark_weight": landmark_weight,
                                 "visible_per_frame": float(term.visible.sum(1).mean()),
                                 "loss": float(loss)})
    report.update(steps=steps, seconds=time.perf_counter() - started)
    log.info("photometric refinement: %d samples, %d steps, %.1f s", report["samples"], steps,
             report["seconds"])
    return x_frames, x_shared, report


def _regularizer(problem, config: PhotometricConfig):
    """The landmark fit's priors with the identity and expression priors rescaled."""
    regularizer = problem.regularizer(False)
    regularizer.prior_frames[:problem.n_expressions] *= config.expression_prior_scale
    regularizer.prior_shared[:problem.n_fit_shape] *= config.shape_prior_scale
    return regularizer


def _combined(problem, term: PhotometricTerm, landmark_weight: float) -> tuple:
    """Linearize / evaluate of landmark_weight * landmarks + photometric."""

    def linearize(x_frames, x_shared):
        a, b = problem.linearize(x_frames, x_shared), term.linearize(x_frames, x_shared)
        return NormalBlocks(a.loss * landmark_weight + b.loss,
                            a.frames * landmark_weight + b.frames,
                            a.coupling * landmark_weight + b.coupling,
                            a.shared * landmark_weight + b.shared,
                            a.gradient_frames * landmark_weight + b.gradient_frames,
                            a.gradient_shared * landmark_weight + b.gradient_shared)

    def evaluate(x_frames, x_shared):
        return problem.loss(x_frames, x_shared) * landmark_weight + term.loss(x_frames, x_shared)

    return linearize, evaluate


def _huber(normalized: torch.Tensor) -> tuple:
    """Huber loss (threshold 1) and its IRLS weight, elementwise."""
    magnitude = normalized.abs()
    small = magnitude < 1
    rho = torch.where(small, 0.5 * magnitude ** 2, magnitude - 0.5)
    irls = torch.where(small, torch.ones_like(magnitude), 1 / magnitude.clamp_min(1e-6))
    return rho, irls
