"""The avatar file: a trained Gaussian blendshape head (docs/FORMAT.md, "Avatar file").

numpy only. ``read`` validates everything and raises FormatError naming the file and the problem;
``write`` is atomic. Deltas may be stored as float16 to keep a 70k x 50 avatar small.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError
from . import JOINT_NAMES
from .npzio import ArraySpec, atomic_write_npz, check_header, read_npz, validate_arrays

FORMAT_NAME = "toonsplat-avatar"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
KIND = "avatar file"
AXES = ("head space: +X the subject's left, +Y up, +Z out of the face (FLAME's axes); "
        "the Blender add-on converts to Blender's Z-up axes on import")

_F, _I, _B = "f", "iu", "b"
SPECS: dict[str, ArraySpec] = {
    "means": ArraySpec(("N", 3), _F),
    "log_scales": ArraySpec(("N", 3), _F),
    "quats": ArraySpec(("N", 4), _F),
    "opacity_logits": ArraySpec(("N",), _F),
    "sh": ArraySpec(("N", "C", 3), _F),
    "mouth": ArraySpec(("N",), _B),
    "lbs_weights": ArraySpec(("N", 5), _F),
    "delta_means": ArraySpec(("K", "N", 3), _F),
    "delta_log_scales": ArraySpec(("K", "N", 3), _F),
    "delta_quats": ArraySpec(("K", "N", 4), _F),
    "delta_opacity_logits": ArraySpec(("K", "N"), _F),
    "delta_sh": ArraySpec(("K", "N", "Cd", 3), _F),
    "joint_positions": ArraySpec((5, 3), _F),
    "joint_parents": ArraySpec((5,), _I),
    "mesh_vertices": ArraySpec(("V", 3), _F),
    "mesh_faces": ArraySpec(("F", 3), _I),
    "mesh_expression_dirs": ArraySpec(("K", "V", 3), _F),
    "mesh_lbs_weights": ArraySpec(("V", 5), _F),
}
DELTA_FIELDS = ("delta_means", "delta_log_scales", "delta_quats", "delta_opacity_logits",
                "delta_sh")
# Toon proportions (docs/FORMAT.md, "Proportions"): the avatar before its 3D proportions were
# applied. The four arrays and the meta key ``proportions`` are present together or not at all.
REST_SPECS: dict[str, ArraySpec] = {
    "rest_means": ArraySpec(("N", 3), _F, required=False),
    "rest_delta_means": ArraySpec(("K", "N", 3), _F, required=False),
    "rest_mesh_vertices": ArraySpec(("V", 3), _F, required=False),
    "rest_mesh_expression_dirs": ArraySpec(("K", "V", 3), _F, required=False),
}
REST_FIELDS = tuple(REST_SPECS)


@dataclass
class Avatar:
    """A Gaussian blendshape avatar. Shapes: N Gaussians, K expressions, C = (sh_degree+1)^2,
    Cd = (delta_sh_degree+1)^2 <= C, V mesh vertices, F mesh faces. Lengths in metres."""

    means: np.ndarray                 # (N, 3) float32, neutral Gaussian centres
    log_scales: np.ndarray            # (N, 3) float32, log of the standard deviations
    quats: np.ndarray                 # (N, 4) float32, rotation quaternion w, x, y, z
    opacity_logits: np.ndarray        # (N,) float32, opacity = sigmoid(logit)
    sh: np.ndarray                    # (N, C, 3) float32, SH coefficients per RGB channel
    mouth: np.ndarray                 # (N,) bool, mouth-interior Gaussians: skinned, never blended
    lbs_weights: np.ndarray           # (N, 5) float32, rows sum to 1 over JOINT_NAMES
    delta_means: np.ndarray           # (K, N, 3) float16/32, blendshape deltas
    delta_log_scales: np.ndarray      # (K, N, 3)
    delta_quats: np.ndarray           # (K, N, 4)
    delta_opacity_logits: np.ndarray  # (K, N)
    delta_sh: np.ndarray              # (K, N, Cd, 3)
    joint_positions: np.ndarray       # (5, 3) float32, rest positions of the joints
    joint_parents: np.ndarray         # (5,) int32, parent index, -1 for the root
    mesh_vertices: np.ndarray         # (V, 3) float32, neutral head mesh
    mesh_faces: np.ndarray            # (F, 3) int32
    mesh_expression_dirs: np.ndarray  # (K, V, 3) float32, mesh blendshape per expression
    mesh_lbs_weights: np.ndarray      # (V, 5) float32
    expression_names: list[str]
    joint_names: list[str] = field(default_factory=lambda: list(JOINT_NAMES))
    head_model: dict[str, Any] = field(default_factory=lambda: {"kind": "builtin"})
    training: dict[str, Any] = field(default_factory=dict)
    # Toon proportions: all five set (an avatar with proportions) or all None (docs/FORMAT.md).
    rest_means: np.ndarray | None = None                 # (N, 3) means before proportions
    rest_delta_means: np.ndarray | None = None           # (K, N, 3) delta_means before proportions
    rest_mesh_vertices: np.ndarray | None = None         # (V, 3) mesh_vertices before proportions
    rest_mesh_expression_dirs: np.ndarray | None = None  # (K, V, 3) before proportions
    proportions: dict[str, Any] | None = None            # preset, strength, components

    @property
    def has_proportions(self) -> bool:
        """Whether the arrays hold a proportioned avatar (the rest_* arrays hold the original)."""
        return self.proportions is not None

    @property
    def n_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.delta_means.shape[0])

    @property
    def sh_degree(self) -> int:
        return _sh_degree(self.sh.shape[1])

    @property
    def delta_sh_degree(self) -> int:
        return _sh_degree(self.delta_sh.shape[2])


def _sh_degree(n_coeffs: int) -> int:
    degree = int(round(np.sqrt(n_coeffs))) - 1
    if (degree + 1) ** 2 != n_coeffs or degree > 3:
        raise ValueError(f"{n_coeffs} SH coefficients is not (degree+1)^2 for degree 0..3")
    return degree


def _array_fields() -> list[str]:
    return list(SPECS)


def write(path: str | os.PathLike, avatar: Avatar, delta_dtype: Any = np.float16) -> None:
    """Validate ``avatar`` and write it atomically; deltas are stored as ``delta_dtype``."""
    _check_rest_complete(os.fspath(path), avatar)
    arrays = {name: np.asarray(getattr(avatar, name)) for name in _array_fields()}
    for name in DELTA_FIELDS:
        arrays[name] = arrays[name].astype(delta_dtype, copy=False)
    for name, array in arrays.items():
        if array.dtype.kind == "f" and name not in DELTA_FIELDS:
            arrays[name] = array.astype(np.float32, copy=False)
    if avatar.has_proportions:
        for name in REST_FIELDS:
            arrays[name] = np.asarray(getattr(avatar, name))
        arrays["rest_delta_means"] = arrays["rest_delta_means"].astype(delta_dtype, copy=False)
        for name in ("rest_means", "rest_mesh_vertices", "rest_mesh_expression_dirs"):
            arrays[name] = arrays[name].astype(np.float32, copy=False)
    arrays["mesh_faces"] = arrays["mesh_faces"].astype(np.int32)
    arrays["joint_parents"] = arrays["joint_parents"].astype(np.int32)
    meta = {
        "format": FORMAT_NAME, "version": VERSION, "units": "m", "axes": AXES,
        "expression_names": list(avatar.expression_names), "joint_names": list(avatar.joint_names),
        "sh_degree": avatar.sh_degree, "delta_sh_degree": avatar.delta_sh_degree,
        "head_model": avatar.head_model, "training": avatar.training,
    }
    if avatar.has_proportions:
        meta["proportions"] = avatar.proportions
    _validate(os.fspath(path), arrays, meta)
    atomic_write_npz(path, arrays, meta)


def read(path: str | os.PathLike) -> Avatar:
    """Read and validate an avatar file. Raises FormatError naming the file and the problem."""
    path = os.fspath(path)
    arrays, meta = read_npz(path, KIND)
    check_header(path, meta, FORMAT_NAME, SUPPORTED_VERSIONS, KIND)
    _validate(path, arrays, meta)
    values = {name: arrays[name] for name in _array_fields()}
    rest = {name: arrays.get(name) for name in REST_FIELDS}
    return Avatar(**values, **rest, expression_names=list(meta["expression_names"]),
                  joint_names=list(meta["joint_names"]),
                  head_model=dict(meta.get("head_model", {})),
                  training=dict(meta.get("training", {})),
                  proportions=dict(meta["proportions"]) if "proportions" in meta else None)


def _validate(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    dims = validate_arrays(path, arrays, SPECS, KIND)
    _validate_proportions(path, arrays, meta, dims)
    try:
        _sh_degree(dims["C"])
        _sh_degree(dims["Cd"])
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from None
    if dims["Cd"] > dims["C"]:
        raise FormatError(f"{path}: delta_sh has {dims['Cd']} coefficients, more than sh ({dims['C']})")
    names = meta.get("expression_names")
    if not isinstance(names, list) or len(names) != dims["K"]:
        raise FormatError(f"{path}: expression_names must list {dims['K']} names (one per "
                          f"blendshape), found {names!r:.80}")
    if list(meta.get("joint_names", [])) != list(JOINT_NAMES):
        raise FormatError(f"{path}: joint_names must be {list(JOINT_NAMES)}, "
                          f"found {meta.get('joint_names')!r}")
    _check_weights(path, "lbs_weights", arrays["lbs_weights"])
    _check_weights(path, "mesh_lbs_weights", arrays["mesh_lbs_weights"])
    _check_parents(path, arrays["joint_parents"])
    faces = arrays["mesh_faces"]
    if faces.size and (faces.min() < 0 or faces.max() >= dims["V"]):
        raise FormatError(f"{path}: mesh_faces index vertices outside 0..{dims['V'] - 1}")


def _validate_proportions(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                          dims: dict[str, int]) -> None:
    """The rest_* arrays and meta ``proportions``: all present or none; shapes; the meta's keys."""
    present = [name for name in REST_FIELDS if name in arrays]
    has_meta = "proportions" in meta
    if not present and not has_meta:
        return
    missing = [name for name in REST_FIELDS if name not in arrays] + ([] if has_meta else [
        "the meta key 'proportions'"])
    if missing:
        raise FormatError(f"{path}: an avatar with proportions needs the arrays "
                          f"{', '.join(REST_FIELDS)} and the meta key 'proportions' together; "
                          f"missing {', '.join(missing)}. Re-apply the proportions "
                          "(python -m backend proportions) or re-export the avatar")
    validate_arrays(path, arrays, REST_SPECS, KIND, dims)
    info = meta["proportions"]
    ok = (isinstance(info, dict) and isinstance(info.get("preset"), str)
          and isinstance(info.get("strength"), (int, float)) and 0.0 <= info["strength"] <= 1.0
          and isinstance(info.get("components"), dict)
          and all(isinstance(k, str) and isinstance(v, (int, float))
                  for k, v in info["components"].items()))
    if not ok:
        raise FormatError(f"{path}: meta 'proportions' must be an object with 'preset' (text), "
                          f"'strength' (0..1) and 'components' (name: strength), found "
                          f"{info!r:.120}")


def _check_rest_complete(path: str, avatar: Avatar) -> None:
    given = [getattr(avatar, name) is not None for name in REST_FIELDS]
    if any(given) != avatar.has_proportions or any(given) != all(given):
        raise FormatError(f"{path}: an avatar with proportions sets {', '.join(REST_FIELDS)} and "
                          "'proportions' together, or none of them")


def _check_weights(path: str, name: str, weights: np.ndarray) -> None:
    if weights.size == 0:
        return
    if weights.min() < -1e-4:
        raise FormatError(f"{path}: '{name}' has negative skinning weights")
    sums = weights.astype(np.float64).sum(axis=1)
    worst = float(np.abs(sums - 1.0).max())
    if worst > 1e-3:
        raise FormatError(f"{path}: '{name}' rows must sum to 1 (worst row sums to "
                          f"{1.0 + worst:.4f} or {1.0 - worst:.4f})")


def _check_parents(path: str, parents: np.ndarray) -> None:
    if parents[0] != -1 or any(not 0 <= parents[j] < j for j in range(1, len(parents))):
        raise FormatError(f"{path}: joint_parents {parents.tolist()} is not a tree rooted at "
                          "joint 0 with each parent listed before its child")


def replace(avatar: Avatar, **changes: Any) -> Avatar:
    """A copy of ``avatar`` with some fields replaced (dataclasses.replace, re-exported)."""
    return dataclasses.replace(avatar, **changes)


def summary(avatar: Avatar, path: str = "") -> str:
    """A few readable lines describing the avatar."""
    delta_bytes = sum(getattr(avatar, name).nbytes for name in DELTA_FIELDS)
    extent = avatar.means.max(axis=0) - avatar.means.min(axis=0) if avatar.n_gaussians else np.zeros(3)
    names = avatar.expression_names
    shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
    lines = [
        f"avatar file {path}".rstrip(),
        f"  format      {FORMAT_NAME} v{VERSION}, units metres",
        f"  gaussians   {avatar.n_gaussians} ({int(avatar.mouth.sum())} mouth interior), "
        f"SH degree {avatar.sh_degree} (deltas to degree {avatar.delta_sh_degree})",
        f"  extent      {extent[0]:.3f} x {extent[1]:.3f} x {extent[2]:.3f} m",
        f"  expressions {avatar.n_expressions}: {shown}",
        f"  deltas      {avatar.delta_means.dtype}, {delta_bytes / 1e6:.1f} MB in memory",
        "  joints      " + ", ".join(f"{n}<-{avatar.joint_names[p] if p >= 0 else '-'}"
                                      for n, p in zip(avatar.joint_names, avatar.joint_parents)),
        f"  head mesh   {avatar.mesh_vertices.shape[0]} vertices, {avatar.mesh_faces.shape[0]} faces",
        f"  head model  {avatar.head_model}",
    ]
    if avatar.has_proportions:
        lines.append(f"  proportions {avatar.proportions}")
    if avatar.training:
        lines.append(f"  training    {avatar.training}")
    return "\n".join(lines)
