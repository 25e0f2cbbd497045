"""Training configuration: nested dataclasses, one comment per field, and the named presets.

Learning rates (3DGB section 3.4 and the official defaults): the five rates the paper lists,
3.2e-7, 5e-5, 5e-4, 1e-4, 1.25e-3 for {x, alpha, s, q, SH}, are those of the *blendshape* deltas
dG^ (the official code sets them as 0.2 * 1.6e-6, 0.001 * 0.05, 0.1 * 0.005, 0.1 * 0.001 and
0.5 * 0.0025); the neutral Gaussians B0 use the 3DGS defaults (position 1.6e-4 decaying to
1.6e-6, SH 2.5e-3 (rest bands / 20), opacity 0.05, scale 5e-3, rotation 1e-3) with a scene scale
of 1 m, which suits a head in metres. ``gpu-paper`` uses exactly these; ``cpu-fast`` trains ~20x
fewer steps, so it multiplies the delta rates by ``delta_lr_scale`` (documented in
docs/TRAINING.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Parameter groups a phase can train (see Phase.trainable).
GROUPS = {
    "geometry": ("means", "log_scales", "quats", "opacity_logits"),
    "texture": ("sh_dc", "sh_rest"),
    "blendshape_geometry": ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits"),
    "blendshape_texture": ("delta_sh",),
}


@dataclass
class ModelConfig:
    n_face_gaussians: int = 50_000   # Poisson-disk samples on the neutral mesh (B0)
    n_mouth_gaussians: int = 14_000  # on the two teeth billboards (B_m)
    sh_degree: int = 3               # SH degree of B0 (blendshape SH deltas are degree 0)
    grid_resolution: int = 256       # nodes per axis of the surface lookup grid (section 3.4)
    epsilon: float = 1e-5            # threshold of f(x) in Eq. 2
    init_opacity: float = 0.1        # like 3DGS
    init_color: tuple[float, float, float] = (0.5, 0.5, 0.5)  # replaced by the mean frame colour
    neck_margin: float | None = 0.01  # B0 on the mesh down to this far below the neck cut (m);
    #                                   None: the whole mesh (the torso is no target: docs/TRAINING.md)
    update_consistency_every: int = 0  # >0: refresh weights and f(d) of all Gaussians from the grid
    flat_init: float = 0.0           # >0: B0 starts as disks in its triangle's plane, the normal
    #                                  axis this fraction of the others; 0: spheres (the paper)


@dataclass
class OptimConfig:
    means: float = 1.6e-4            # B0 position, decays exponentially to means_final
    means_final: float = 1.6e-6
    sh_dc: float = 2.5e-3
    sh_rest: float = 2.5e-3 / 20
    opacity_logits: float = 0.05
    log_scales: float = 5e-3
    quats: float = 1e-3
    delta_means: float = 3.2e-7      # the paper's rates for the blendshape deltas dG^
    delta_opacity_logits: float = 5e-5
    delta_log_scales: float = 5e-4
    delta_quats: float = 1e-4
    delta_sh: float = 1.25e-3
    delta_lr_scale: float = 1.0      # multiplies every delta rate (short schedules)


@dataclass
class DensifyConfig:
    start: int = 500                 # first densification step
    stop: int = 15_000               # last densification step
    every: int = 100
    grad_threshold: float = 2e-4     # mean screen-space gradient (gsplat's normalization)
    percent_dense: float = 0.01      # clone below, split above this fraction of scene_scale
    scene_scale: float = 1.0         # metres
    prune_opacity: float = 0.005
    prune_scale: float = 0.1         # prune Gaussians larger than this fraction of scene_scale
    max_gaussians: int = 0           # 0: no cap


@dataclass
class LossConfig:
    ssim_lambda: float = 0.2         # Eq. 3
    alpha: float = 10.0              # lambda_2 of Eq. 6
    alpha_norm: str = "l2"           # "l2": Eq. 4's squared error; "l1": mean absolute error, which
    #                                  keeps pulling a soft silhouette edge to the mask (docs/TRAINING.md)
    mouth: float = 100.0             # lambda_3 of Eq. 6
    flatten: float = 0.0             # weight of the mean excess of B0's smallest axis over
    flatten_floor: float = 3e-4      # this (metres), in mm (0: off); disks, not needles: Blender's
    #                                  splat shader loses precision past ~1:100 axis ratios
    neck: float = 0.0                # weight of how far B0 reaches below the neck cut minus
    neck_margin: float = 0.02        # this (metres), mean in mm (0: off; no target holds it there)


@dataclass
class NovelViewConfig:
    """The novel-view prior (backend/train/novel.py): the head model's silhouette seen from a
    swung camera must be opaque."""

    weight: float = 0.0              # 0: off (the paper has no such term)
    every: int = 2                   # steps between two novel-view renders
    min_yaw: float = 15.0            # degrees, the swing's range on either side
    max_yaw: float = 60.0
    scale: float = 0.5               # image scale of the novel render
    margin: float = 0.03             # metres past the head model's silhouette where alpha may be
    #                                  anything (hair, ears); beyond it alpha must be 0


@dataclass
class RegisterConfig:
    """Pose registration (backend/train/register.py): every frame's rigid head pose refined
    against the half-trained avatar, training and held-out frames alike."""

    at: float = 0.0                  # share of the run after which poses are registered (0: never)
    every: int = 4                   # key frames: every n-th frame of the clip, interpolated between
    max_keys: int = 400              # ... and at most about this many (long clips: a larger step)
    scale: float = 0.5               # image scale of the renders
    iterations: int = 3              # Gauss-Newton steps per key frame
    alpha: float = 1.0               # weight of the alpha residual against the colour residual
    window: int = 5                  # median filter over this many key frames
    prior: float = 1e-4              # cost per head pixel of a correction of prior_deg and prior_mm
    prior_deg: float = 1.0
    prior_mm: float = 5.0


@dataclass
class Phase:
    """One phase of a (progressive) schedule: which images, which frames, what trains."""

    name: str = "photoreal"
    fraction: float = 1.0            # share of the total iterations
    images: str = "frames"           # "frames" or "stylized" (folder of the prepared data)
    max_abs_yaw: float | None = None  # keep frames with |head yaw| below this (radians)
    trainable: tuple[str, ...] = tuple(GROUPS)  # keys of GROUPS
    densify: bool = True             # False: no clone/split/prune in this phase (the set stays fixed)


@dataclass
class OneShotConfig:
    """One-shot mode (a single portrait, the LAM seed's setting); see backend/train/oneshot.py."""

    enabled: bool = False            # set automatically for single-frame data (session.py)
    init_opacity: float = 0.9        # opaque from the start, so the face hides the back of the head
    init_scale: float = 0.5          # multiplies the initial (nearest-neighbour) scales: less blur
    blur_sigma: float = 0.6          # photo blur before colour sampling, in pixels at 256 px
    depth_tolerance: float = 0.01    # metres: a Gaussian this far behind the mesh's depth is hidden
    min_facing: float = 0.1          # cos of the angle between normal and view ray to count as visible
    train_facing: float = 0.1        # visible Gaussians more side-on than this are frozen too (0.35
    #                                  cost 3 dB on the photo's view and did not look better from the side)
    fill_neighbours: int = 8         # hidden Gaussians average this many visible neighbours' colours
    anchor: float = 1e4              # rest-state prior: weight of mean squared drift of B0 positions (m^2)
    region_dilation: float = 0.01    # the target mask is limited to the head silhouette grown by this
    #                                  fraction of the image size (the torso is not part of the avatar)


@dataclass
class TrainConfig:
    iterations: int = 40_000
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    novel: NovelViewConfig = field(default_factory=NovelViewConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    phases: list[Phase] = field(default_factory=lambda: [Phase()])
    oneshot: OneShotConfig = field(default_factory=OneShotConfig)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # GT frames are composited on it
    random_background: bool = False  # a random background colour per step (evaluation: background)
    fill_unseen: bool = True         # after training, Gaussians no training view shows take their
    #                                  seen neighbours' colour, opaque (fill.py; not in one-shot mode)
    seed: int = 0
    render_backend: str = "auto"     # backend.render backend
    preview_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    eval_max_frames: int = 0         # 0: all held-out frames
    # Coarse-to-fine: (fraction of the iterations, image scale) pairs; from each fraction on,
    # frames are rendered and compared at that scale (cheap early steps on CPU).
    resolution_schedule: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
    crop_to_mask: bool = False       # render only the mask's bounding box (plus a margin)
    time_budget_s: float = 0.0       # >0: stop training after this many seconds (then evaluate)


PRESETS: dict[str, dict[str, Any]] = {
    "gpu-paper": {},
    "cpu-fast": {
        "iterations": 800,
        "model": {"n_face_gaussians": 4000, "n_mouth_gaussians": 400, "sh_degree": 1,
                  "grid_resolution": 64, "flat_init": 0.2},
        "optim": {"delta_lr_scale": 10.0, "means": 1.6e-4, "means_final": 1.6e-5},
        "loss": {"flatten": 0.1, "neck": 0.1},
        "densify": {"start": 150, "stop": 600, "every": 75, "max_gaussians": 9000},
        "preview_every": 100, "checkpoint_every": 100, "eval_max_frames": 30,
        "resolution_schedule": ((0.0, 0.5), (0.7, 1.0)), "crop_to_mask": True,
        "time_budget_s": 780.0, "random_background": True, "novel": {"weight": 1.0},
        "register": {"at": 0.5, "every": 4, "iterations": 2},
    },
    "tiny": {
        "iterations": 150,
        "model": {"n_face_gaussians": 1500, "n_mouth_gaussians": 100, "sh_degree": 0,
                  "grid_resolution": 24},
        "optim": {"delta_lr_scale": 10.0, "means_final": 1.6e-5},
        "densify": {"start": 20, "stop": 100, "every": 20, "max_gaussians": 3000},
        "preview_every": 100, "checkpoint_every": 50, "log_every": 10, "eval_max_frames": 8,
        "crop_to_mask": True,
    },
    # One portrait: no densification, no blendshape training (dB stays dB_init), small position
    # rates with a rest-state prior; a couple of minutes at 256 px on a 2-core CPU.
    "oneshot": {
        "iterations": 200,
        "model": {"n_face_gaussians": 6000, "n_mouth_gaussians": 400, "sh_degree": 0,
                  "grid_resolution": 32},
        "optim": {"means": 2e-5, "means_final": 2e-6, "log_scales": 2e-3, "quats": 5e-4,
                  "opacity_logits": 0.02, "sh_dc": 5e-3},
        "densify": {"start": 10 ** 9, "stop": 0},
        "oneshot": {"enabled": True},
        "phases": [{"name": "oneshot", "images": "frames", "trainable": ["geometry", "texture"]}],
        "preview_every": 100, "checkpoint_every": 50, "log_every": 20, "crop_to_mask": True,
        "resolution_schedule": ((0.0, 0.5), (0.6, 1.0)), "time_budget_s": 150.0,
    },
}

# What one-shot mode changes on top of any preset when the data has a single frame.
ONESHOT_OVERRIDES: dict[str, Any] = {
    "densify": {"start": 10 ** 9, "stop": 0},
    "oneshot": {"enabled": True},
    "optim": PRESETS["oneshot"]["optim"],
}


def make_config(preset: str = "cpu-fast", **overrides: Any) -> TrainConfig:
    """A TrainConfig from a preset name plus nested overrides (dicts for sub-configs)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = _merge(PRESETS[preset], overrides)
    return from_dict(values)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a TrainConfig from ``to_dict`` output (or a partial dict)."""
    values = dict(values)
    subs = {"model": ModelConfig, "optim": OptimConfig, "densify": DensifyConfig, "loss": LossConfig,
            "novel": NovelViewConfig, "oneshot": OneShotConfig, "register": RegisterConfig}
    for key, cls in subs.items():
        values[key] = cls(**_tuples(values.get(key, {})))
    if "phases" in values:
        values["phases"] = [Phase(**_tuples(p)) for p in values["phases"]]
    return TrainConfig(**_tuples(values))


def _tuples(values: dict) -> dict:
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v

    return {k: freeze(v) if isinstance(v, list) and k != "phases" else v for k, v in values.items()}


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
