"""The training loop of Stage 2: render, Eq. 6 loss, Adam, densification, checkpoints.

A run is resumable: ``checkpoint.pt`` (plain tensors and dicts, read with weights_only=True)
is written atomically every ``checkpoint_every`` steps and when the run is cancelled
(KeyboardInterrupt / SIGTERM), so an interrupted run continues where it stopped.
The schedule is a list of ``Phase``s (config.py): each names the images it trains on, a frame
filter and the parameter groups it trains, so a progressive schedule is configuration only.
What else runs around a step (densification, one-shot mode) is a list of hooks (hooks.py),
called generically; ``hooks.training_hooks`` picks them from the config.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from ..fileio import atomic_path
from .config import GROUPS, Phase, TrainConfig, from_dict, to_dict
from .data import FrameData
from .grid import SurfaceGrid
from .hooks import TrainingHook, training_hooks
from .init import SubjectMesh, initialize_avatar, subject_mesh
from .losses import alpha_loss, below_floor_loss, flatness_loss, mouth_loss, rgb_loss
from .model import PARAMETERS, GaussianBlendshapes
from .mouth import MouthVolume

log = logging.getLogger("toonsplat")
CHECKPOINT = "checkpoint.pt"


class Trainer:
    """Trains one avatar from a prepared-data folder into ``out``.

    ``hooks(config, data, head) -> list[TrainingHook]`` makes the step's hooks (hooks.py) when the
    run starts or resumes (default ``training_hooks``: the density strategy or one-shot mode).
    """

    def __init__(self, data: FrameData, out: str, config: TrainConfig, head, progress=None,
                 hooks: Callable[..., list[TrainingHook]] = training_hooks):
        self.data, self.out, self.config, self.head = data, out, config, head
        self.progress = progress
        self.device = data.device
        self.background = torch.tensor(config.background, device=self.device)
        self.step = 0
        self.make_hooks = hooks
        self.hooks: list[TrainingHook] = []
        self._started: float | None = None
        self.history: list[tuple[int, float]] = []
        self.generator = torch.Generator().manual_seed(config.seed)
        self.transforms = self._frame_transforms()
        self.mesh: SubjectMesh = subject_mesh(head, self._shape(), self._offsets())
        self._head_faces: torch.Tensor | None = None  # the head region's faces (novel_view_loss)
        self._floor: float | None = None  # the neck floor's height (_neck_floor)
        self._head_centre: torch.Tensor | None = None  # rest_head_centre
        self.registration: dict | None = None  # register.py's summary once poses are registered

    # -- set-up -----------------------------------------------------------------------------------
    def _shape(self):
        shape = self.data.tracking.shape
        return torch.as_tensor(shape, device=self.device).float() if shape.size else None

    def _offsets(self):
        offsets = self.data.tracking.vertex_offsets
        return None if offsets is None else torch.as_tensor(offsets, device=self.device).float()

    @torch.no_grad()
    def _rest_vertices(self) -> torch.Tensor:
        """(V, 3) the subject's head model in the rest pose (shape and offsets, no expression)."""
        shape = self._shape()
        return self.head(shape=None if shape is None else shape[None],
                         vertex_offsets=self._offsets()).vertices[0]

    @torch.no_grad()
    def _frame_transforms(self) -> torch.Tensor:
        """(T, J, 4, 4) skinning transforms of every frame from the head model; also gives the
        data every frame's neck cut (the head region's lower edge, headmodel/regions.py)."""
        from ..headmodel import regions

        t = self.data.tracking
        rest = self._rest_vertices()
        ring, above = regions.cut_ring(self.head, rest), regions.head_vertices(self.head, rest)
        chin = regions.chin_vertex(self.head, rest)
        out, ring_pixels, up_pixels, chin_pixels = [], [], [], []
        for start, stop, result in self._posed_batches():
            out.append(result.transforms.float())
            vertices = result.vertices.float()
            ring_centre = vertices[:, ring].mean(dim=1, keepdim=True)
            head_centre = vertices[:, above].mean(dim=1, keepdim=True)
            pixels = _project(torch.cat([vertices[:, ring], vertices[:, chin:chin + 1], ring_centre,
                                         head_centre], dim=1),
                              t.extrinsics[start:stop], t.intrinsics[start:stop])
            ring_pixels.append(pixels[:, :-3])
            chin_pixels.append(pixels[:, -3])
            up_pixels.append(pixels[:, -1] - pixels[:, -2])
        lines = regions.image_cut_lines(torch.cat(ring_pixels), torch.cat(up_pixels))
        zones = regions.image_shoulder_zones(torch.cat(ring_pixels), torch.cat(chin_pixels), lines)
        self.data.set_cut_lines(lines, zones)
        return torch.cat(out)

    @torch.no_grad()
    def rest_head_centre(self) -> torch.Tensor:
        """(3,) centre of the rest head above the neck cut (register.py's pivot)."""
        if self._head_centre is None:
            from ..headmodel import regions

            rest = self._rest_vertices()
            self._head_centre = rest[regions.head_vertices(self.head, rest)].mean(dim=0)
        return self._head_centre

    @torch.no_grad()
    def rest_root_joints(self) -> np.ndarray:
        """(T, 3) the root joint's rest position in every frame (it moves with the expression)."""
        return np.concatenate([result.rest_joints[:, 0].double().cpu().numpy()
                               for _, _, result in self._posed_batches()])

    def _posed_batches(self, size: int = 256):
        """(start, stop, HeadOutput) of the head model posed by the tracking, ``size`` frames at
        a time."""
        t = self.data.tracking
        shape = self._shape()
        for start in range(0, t.n_frames, size):
            stop = min(start + size, t.n_frames)
            frames = slice(start, stop)
            yield start, stop, self.head(
                shape=None if shape is None else shape[None].expand(stop - start, -1),
                expression=torch.as_tensor(t.expressions[frames], device=self.device),
                joint_rotations=torch.as_tensor(t.joint_rotations[frames], device=self.device),
                translation=torch.as_tensor(t.translation[frames], device=self.device),
                vertex_offsets=self._offsets())

    def initialize(self) -> None:
        """A fresh avatar, grid, hooks and optimizer."""
        cfg = self.config
        color = self._mean_foreground_color()
        self.model, self.grid, self.volume = initialize_avatar(
            self.mesh, self.head, cfg.model, tuple(self.head.parents), color=color, seed=cfg.seed)
        self.model.to(self.device)
        self.hooks = self.make_hooks(cfg, self.data, self.head)
        for hook in self.hooks:
            hook.initialize(self.model, self.transforms)
        self.optimizer = self._make_optimizer()
        log.info("initialized %d Gaussians (%d mouth), K=%d", self.model.n_gaussians,
                 int(self.model.mouth.sum()), self.model.n_expressions)

    def _mean_foreground_color(self) -> tuple[float, float, float]:
        picks = self.data.train[:: max(1, len(self.data.train) // 8)][:8]
        sums, weight = torch.zeros(3, device=self.device), torch.zeros((), device=self.device)
        for index in picks:
            rgb, mask = self.data.target(int(index), self.background)
            sums += (rgb * mask).sum(dim=(0, 1))
            weight += mask.sum()
        return tuple((sums / weight.clamp_min(1)).clamp(0.05, 0.95).tolist())

    def _make_optimizer(self) -> torch.optim.Adam:
        optim = self.config.optim
        groups = []
        for name in PARAMETERS:
            lr = getattr(optim, name)
            if name.startswith("delta_"):
                lr *= optim.delta_lr_scale
            groups.append({"params": [self.model.params[name]], "lr": lr, "name": name})
        return torch.optim.Adam(groups, lr=0.0, eps=1e-15)

    # -- schedule ---------------------------------------------------------------------------------
    def phase_at(self, step: int) -> Phase:
        total = sum(p.fraction for p in self.config.phases)
        edge = 0.0
        for phase in self.config.phases:
            edge += phase.fraction / total * self.config.iterations
            if step < edge:
                return phase
        return self.config.phases[-1]

    def frame_pool(self, phase: Phase) -> np.ndarray:
        pool = self.data.train
        if phase.max_abs_yaw is not None:
            yaw = self.data.head_yaw()
            pool = pool[np.abs(yaw[pool]) < phase.max_abs_yaw]
            if len(pool) == 0:
                log.warning("phase %s: no frame with |yaw| < %.2f; using all", phase.name,
                            phase.max_abs_yaw)
                pool = self.data.train
        return pool

    def _set_trainable(self, phase: Phase) -> None:
        names = {n for group in phase.trainable for n in GROUPS[group]}
        for name in PARAMETERS:
            self.model.params[name].requires_grad_(name in names)

    def _update_lr(self) -> None:
        optim = self.config.optim
        fraction = self.fraction_done()
        lr = math.exp((1 - fraction) * math.log(optim.means) + fraction * math.log(optim.means_final))
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = lr

    # -- one step -------------------------------------------------------------------------------
    def render_frame(self, index: int, sh_degree: int | None = None, scale: float = 1.0,
                     box: tuple[int, int, int, int] | None = None, background: torch.Tensor | None = None):
        """Render tracked frame ``index`` at ``scale``, optionally only the pixel ``box``
        (x0, y0, x1, y1 at that scale). Returns (RenderOutput, posed Blended)."""
        from ..render import Cameras, render

        t = self.data.tracking
        viewmat, intrinsics = self.data.camera(index)
        center = torch.linalg.inv(viewmat)[:3, 3]
        expressions = torch.as_tensor(t.expressions[index], device=self.device).float()
        gaussians, posed = self.model.gaussians(expressions, self.transforms[index], center, sh_degree)
        width, height, intrinsics = self._scaled_camera(intrinsics, scale)
        if box is not None:
            intrinsics[0, 2] -= box[0]
            intrinsics[1, 2] -= box[1]
            width, height = box[2] - box[0], box[3] - box[1]
        cameras = Cameras(viewmat[None], intrinsics[None], width, height)
        out = render(gaussians, cameras, background=self.background if background is None else background,
                     backend=self.config.render_backend)
        return out, posed

    def _scaled_camera(self, intrinsics: torch.Tensor, scale: float):
        """(width, height, intrinsics) of the frames' camera with the image scaled by ``scale``."""
        width, height = _scaled_size(self.data.width, self.data.height, scale)
        intrinsics = intrinsics.clone()
        intrinsics[:2] *= torch.tensor([[width / self.data.width], [height / self.data.height]],
                                       device=self.device)
        return width, height, intrinsics

    def novel_view_loss(self, index: int) -> torch.Tensor:
        """The novel-view prior of frame ``index`` (novel.py): a camera swung by a random yaw;
        mean (1 - alpha) inside the head model's head silhouette there, mean alpha farther than
        ``novel.margin`` from the whole model's."""
        from ..render import Cameras, render
        from .novel import coverage_loss, prior_regions, random_yaw, swung_viewmat
        from .oneshot import posed_mesh

        cfg = self.config.novel
        if self._head_faces is None:
            from ..headmodel.regions import head_faces

            self._head_faces = head_faces(self.head, self._rest_vertices())
        faces = self.head.faces.long()
        vertices = posed_mesh(self.head, self.data.tracking, index, self.device)
        used = vertices[faces[self._head_faces].unique()]
        pivot = 0.5 * (used.min(dim=0).values + used.max(dim=0).values)
        viewmat, intrinsics = self.data.camera(index)
        viewmat = swung_viewmat(viewmat, pivot, random_yaw(self.generator, cfg.min_yaw, cfg.max_yaw))
        width, height, intrinsics = self._scaled_camera(intrinsics, cfg.scale)
        depth = float((viewmat[:3, :3] @ pivot + viewmat[:3, 3])[2])
        margin = max(1, int(round(float(intrinsics[0, 0]) * cfg.margin / max(depth, 1e-3))))
        opaque, clear, (x0, y0, x1, y1) = prior_regions(vertices, faces, self._head_faces, viewmat,
                                                        intrinsics, width, height, margin)
        intrinsics[0, 2] -= x0
        intrinsics[1, 2] -= y0
        expressions = torch.as_tensor(self.data.tracking.expressions[index], device=self.device).float()
        center = torch.linalg.inv(viewmat)[:3, 3]
        gaussians, _ = self.model.gaussians(expressions, self.transforms[index], center)
        out = render(gaussians, Cameras(viewmat[None], intrinsics[None], x1 - x0, y1 - y0),
                     background=self.background, backend=self.config.render_backend)
        return coverage_loss(out.alpha[0, ..., 0], opaque[y0:y1, x0:x1], clear[y0:y1, x0:x1],
                             n_clear=int(clear.sum()))

    def _neck_floor(self) -> float:
        """Rest-pose height below which no Gaussian should reach: the neck cut minus the margin."""
        if self._floor is None:
            from ..headmodel.regions import cut_height

            self._floor = cut_height(self.head, self._rest_vertices()) - self.config.loss.neck_margin
        return self._floor

    def fraction_done(self) -> float:
        """Share of the run done: of the iterations, or of the time budget if that is further."""
        cfg = self.config
        done = self.step / max(cfg.iterations, 1)
        if cfg.time_budget_s and self._started is not None:
            done = max(done, (time.monotonic() - self._started) / cfg.time_budget_s)
        return min(done, 1.0)

    def scale_at(self, step: int) -> float:
        scale = 1.0
        done = self.fraction_done()
        for fraction, value in self.config.resolution_schedule:
            if done >= fraction:
                scale = value
        return scale

    def train_step(self, phase: Phase, pool: np.ndarray) -> float:
        cfg = self.config
        index = int(pool[torch.randint(len(pool), (1,), generator=self.generator)])
        background = self.background
        if cfg.random_background:  # a new colour each step: no colour can stand in for alpha
            background = torch.rand(3, generator=self.generator).to(self.device)
        for hook in self.hooks:
            background = hook.background(background, self.generator)
        target, mask = self.data.target(index, background, phase.images)
        weight = self.data.weight(index)
        scale = self.scale_at(self.step)
        target, mask, weight = _resize(target, scale), _resize(mask, scale), _resize(weight, scale)
        box = _mask_box(mask) if cfg.crop_to_mask else None
        if box is not None:
            target = target[box[1]:box[3], box[0]:box[2]]
            mask = mask[box[1]:box[3], box[0]:box[2]]
            weight = weight[box[1]:box[3], box[0]:box[2]]
        out, _ = self.render_frame(index, scale=scale, box=box, background=background)
        # Pixels that are no target (the torso, past the frame's edge) take the target's value:
        # no loss term sees them.
        rendered = out.rgb * weight + target[None] * (1 - weight)
        alpha = out.alpha[0] * weight + mask * (1 - weight)
        loss = rgb_loss(rendered, target[None], cfg.loss.ssim_lambda)
        loss = loss + cfg.loss.alpha * alpha_loss(alpha, mask, cfg.loss.alpha_norm)
        mouth_means = self.model.params["means"][self.model.mouth]
        loss = loss + cfg.loss.mouth * mouth_loss(mouth_means, self.volume)
        if cfg.loss.flatten:
            loss = loss + cfg.loss.flatten * flatness_loss(self.model.params["log_scales"],
                                                           cfg.loss.flatten_floor)
        if cfg.loss.neck:
            face = ~self.model.mouth
            params = self.model.params
            loss = loss + cfg.loss.neck * below_floor_loss(
                params["means"][face], params["log_scales"][face], params["quats"][face],
                self._neck_floor())
        if cfg.novel.weight and self.step % max(cfg.novel.every, 1) == 0:
            loss = loss + cfg.novel.weight * self.novel_view_loss(index)
        for hook in self.hooks:
            hook.step_pre_backward(self.model, self.optimizer, out.info, self.step)
            extra = hook.extra_loss(self.model)
            if extra is not None:
                loss = loss + extra
        loss.backward()
        self.step += 1
        refresh = self._refresh if cfg.model.grid_resolution else None
        for hook in self.hooks:
            hook.step_post_backward(self.model, self.optimizer, out.info, self.step, refresh=refresh,
                                    generator=self.generator, densify=phase.densify)
        self._update_lr()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.model.update_consistency_every and self.step % cfg.model.update_consistency_every == 0:
            self._refresh_all()
        return float(loss.detach())

    @torch.no_grad()
    def _refresh(self, points: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
        """Grid lookup of LBS weights and Eq. 2 scales for new face Gaussians (mouth unchanged)."""
        from .deform import consistency_scale

        face = ~tensors["mouth"]
        if not bool(face.any()):
            return
        weights, lengths = self.grid.lookup(points[face], self.mesh.faces, self.mesh.lbs_weights,
                                            self.mesh.expression_dirs)
        tensors["lbs_weights"][face] = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-8)
        tensors["consistency"][face] = consistency_scale(lengths, self.mesh.max_distances,
                                                         self.config.model.epsilon)

    def _refresh_all(self) -> None:
        self._refresh(self.model.params["means"].detach(), self.model.per_gaussian())

    # -- the loop -------------------------------------------------------------------------------
    def run(self, on_step=None) -> None:
        """Train until ``config.iterations``; checkpoint on schedule and on cancellation."""
        cfg = self.config
        phase, pool = None, None
        started = self._started = time.monotonic()
        try:
            while self.step < cfg.iterations:
                current = self.phase_at(self.step)
                if current is not phase:
                    phase, pool = current, self.frame_pool(current)
                    self._set_trainable(phase)
                    log.info("phase %s: %d frames, training %s", phase.name, len(pool),
                             ", ".join(phase.trainable))
                if self._registration_due():
                    paused = time.monotonic()
                    self.register(phase.images)
                    self._started = started = started + time.monotonic() - paused
                if cfg.time_budget_s and time.monotonic() - started > cfg.time_budget_s:
                    log.warning("time budget of %.0f s reached at step %d of %d; stopping early",
                                cfg.time_budget_s, self.step, cfg.iterations)
                    self.save_checkpoint()
                    break
                loss = self.train_step(phase, pool)
                self.history.append((self.step, loss))
                if on_step is not None:
                    on_step(self, loss)
                if self.progress is not None:
                    self.progress.progress(self.step, cfg.iterations,
                                           f"loss {loss:.4f}, {self.model.n_gaussians} Gaussians")
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.iterations:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            log.warning("training cancelled at step %d; checkpoint saved, run again with --resume",
                        self.step)
            raise
        log.info("trained %d steps in %.1f s", self.step, time.monotonic() - started)

    def _registration_due(self) -> bool:
        at = self.config.register.at
        return bool(at) and self.registration is None and self.data.n_frames > 1 \
            and not self.config.oneshot.enabled and self.fraction_done() >= at

    def register(self, images: str) -> dict:
        """Register every frame's rigid pose against the avatar (register.py), then go on."""
        from .register import register_poses

        if self.progress is not None:
            self.progress.log(f"register: every frame's head pose against the avatar at step {self.step}")
        self.registration = register_poses(self, images, self.progress)
        self.save_checkpoint()
        return self.registration

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        return {
            "format": "toonsplat-train-checkpoint", "version": 1, "step": self.step,
            "config": to_dict(self.config), "tensors": self.model.tensors(),
            "sh_degree": self.model.sh_degree, "joint_parents": list(self.model.joint_parents),
            "optimizer": self.optimizer.state_dict(),
            "grid": self.grid.state_dict(),
            "mouth_volume": {"center": self.volume.center, "radius": self.volume.radius,
                             "half_length": self.volume.half_length},
            "history": [list(item) for item in self.history],
            "generator": self.generator.get_state(),
            "registration": None if self.registration is None else {
                "summary": self.registration,
                "root_rotations": torch.as_tensor(self.data.tracking.joint_rotations[:, 0]),
                "translation": torch.as_tensor(self.data.tracking.translation)},
            **{hook.name: hook.state_dict() for hook in self.hooks},
        }

    def save_checkpoint(self) -> str:
        path = os.path.join(self.out, CHECKPOINT)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(self.checkpoint_state(), tmp)
        return path

    def load_checkpoint(self, path: str) -> None:
        """Restore model, optimizer, hooks and step from a checkpoint written by this class."""
        state = load_checkpoint_file(path, self.device)
        self.config = from_dict(state["config"])
        self.model = GaussianBlendshapes(state["tensors"], tuple(state["joint_parents"]),
                                         state["sh_degree"]).to(self.device)
        self.optimizer = self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.hooks = self.make_hooks(self.config, self.data, self.head)
        for hook in self.hooks:
            hook.load_state_dict(state.get(hook.name) or {})
        self.grid = SurfaceGrid.from_state_dict(state["grid"])
        volume = state["mouth_volume"]
        self.volume = MouthVolume(volume["center"], float(volume["radius"]), float(volume["half_length"]))
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        self.generator.set_state(state["generator"])
        self.step = int(state["step"])
        registration = state.get("registration")
        if registration is not None:
            self._restore_registration(registration)

    def _restore_registration(self, registration: dict) -> None:
        """The registered poses of a checkpoint back into the tracking and frame transforms."""
        import dataclasses

        tracking = self.data.tracking
        rotations = tracking.joint_rotations.copy()
        rotations[:, 0] = registration["root_rotations"].cpu().numpy()
        self.data.tracking = dataclasses.replace(
            tracking, joint_rotations=rotations, translation=registration["translation"].cpu().numpy())
        self.transforms = self._frame_transforms()
        self.registration = dict(registration["summary"])


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def _resize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Area-resample an (H, W, C) image by ``scale`` (identity at 1)."""
    if scale == 1.0:
        return image
    height, width = _scaled_size(image.shape[0], image.shape[1], scale)
    resized = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=(height, width),
                                              mode="area")
    return resized[0].permute(1, 2, 0)


def _project(points: torch.Tensor, extrinsics, intrinsics) -> torch.Tensor:
    """(B, N, 3) world points -> (B, N, 2) pixels of the tracked cameras (B, 4, 4), (B, 3, 3)."""
    viewmat = torch.as_tensor(extrinsics, dtype=points.dtype, device=points.device)
    k = torch.as_tensor(intrinsics, dtype=points.dtype, device=points.device)
    camera = points @ viewmat[:, :3, :3].transpose(1, 2) + viewmat[:, None, :3, 3]
    pixels = camera @ k.transpose(1, 2)
    return pixels[..., :2] / pixels[..., 2:].clamp_min(1e-6)


def _mask_box(mask: torch.Tensor, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the mask (H, W, 1) with a relative margin; None if empty."""
    ys, xs = torch.nonzero(mask[..., 0] > 0.01, as_tuple=True)
    if len(xs) == 0:
        return None
    height, width = mask.shape[:2]
    pad_x = int(margin * (int(xs.max()) - int(xs.min()) + 1)) + 2
    pad_y = int(margin * (int(ys.max()) - int(ys.min()) + 1)) + 2
    return (max(int(xs.min()) - pad_x, 0), max(int(ys.min()) - pad_y, 0),
            min(int(xs.max()) + 1 + pad_x, width), min(int(ys.max()) + 1 + pad_y, height))


def load_checkpoint_file(path: str, device) -> dict:
    """torch.load with weights_only=True; raises InputError for unreadable files."""
    from ..errors import InputError

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # corrupted, truncated, or not ours
        raise InputError(f"cannot read the training checkpoint {path} ({type(exc).__name__}: {exc}); "
                         "delete it and train without --resume") from exc
