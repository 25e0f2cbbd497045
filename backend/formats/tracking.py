"""The tracking file: per-frame head-model parameters and cameras (docs/FORMAT.md, "Tracking file").

numpy only. Written by ``prepare`` (and by the converters for metrical-tracker and VHAP data),
read by the trainer, ``render`` and the Blender add-on's "apply tracking".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError
from . import JOINT_NAMES
from .npzio import ArraySpec, atomic_write_npz, check_header, read_npz, validate_arrays

FORMAT_NAME = "toonsplat-tracking"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
KIND = "tracking file"

SPECS: dict[str, ArraySpec] = {
    "fps": ArraySpec((), "f"),
    "frame_ids": ArraySpec(("T",), "iu"),
    "timestamps": ArraySpec(("T",), "f"),
    "image_size": ArraySpec((2,), "iu"),
    "expressions": ArraySpec(("T", "K"), "f"),
    "joint_rotations": ArraySpec(("T", 5, 3), "f"),
    "translation": ArraySpec(("T", 3), "f"),
    "intrinsics": ArraySpec(("T", 3, 3), "f"),
    "extrinsics": ArraySpec(("T", 4, 4), "f"),
    "valid": ArraySpec(("T",), "b"),
    "shape": ArraySpec(("S",), "f"),
    "vertex_offsets": ArraySpec(("V", 3), "f", required=False),
}


@dataclass
class Tracking:
    """Per-frame parameters of a head model. T frames, K expressions, S identity coefficients.

    Cameras follow OpenCV: x right, y down, z forward; ``extrinsics`` map head-model world
    coordinates (metres) to camera coordinates, ``intrinsics`` are in pixels of ``image_size``.
    """

    fps: float
    frame_ids: np.ndarray        # (T,) int32, index of the frame in the source video
    timestamps: np.ndarray       # (T,) float64, seconds from the start of the source
    image_size: np.ndarray       # (2,) int32, width, height in pixels
    expressions: np.ndarray      # (T, K) float32, expression coefficients
    joint_rotations: np.ndarray  # (T, 5, 3) float32, axis-angle per joint, JOINT_NAMES order
    translation: np.ndarray      # (T, 3) float32, global translation of the head, metres
    intrinsics: np.ndarray       # (T, 3, 3) float32, pinhole K in pixels
    extrinsics: np.ndarray       # (T, 4, 4) float32, world-to-camera, OpenCV axes
    valid: np.ndarray            # (T,) bool, False where the frame was filled in (no face found)
    shape: np.ndarray            # (S,) float32, identity coefficients, shared by all frames
    expression_names: list[str]
    head_model: dict[str, Any] = field(default_factory=lambda: {"kind": "builtin"})
    source: dict[str, Any] = field(default_factory=dict)
    vertex_offsets: np.ndarray | None = None  # (V, 3) float32, per-subject detail on the template

    @property
    def n_frames(self) -> int:
        return int(self.frame_ids.shape[0])

    @property
    def n_expressions(self) -> int:
        return int(self.expressions.shape[1])


def write(path: str | os.PathLike, tracking: Tracking) -> None:
    """Validate ``tracking`` and write it atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name in SPECS:
        value = getattr(tracking, name)
        if value is None:
            continue
        array = np.asarray(value)
        if name == "fps":
            array = array.astype(np.float64)
        if array.dtype.kind == "f":
            array = array.astype(np.float64 if name in ("fps", "timestamps") else np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int32)
        arrays[name] = array
    meta = {"format": FORMAT_NAME, "version": VERSION, "units": "m",
            "joint_names": list(JOINT_NAMES), "expression_names": list(tracking.expression_names),
            "head_model": tracking.head_model, "source": tracking.source}
    _validate(os.fspath(path), arrays, meta)
    atomic_write_npz(path, arrays, meta)


def read(path: str | os.PathLike) -> Tracking:
    """Read and validate a tracking file. Raises FormatError naming the file and the problem."""
    path = os.fspath(path)
    arrays, meta = read_npz(path, KIND)
    check_header(path, meta, FORMAT_NAME, SUPPORTED_VERSIONS, KIND)
    _validate(path, arrays, meta)
    values = {name: arrays.get(name) for name in SPECS}
    values["fps"] = float(values["fps"])
    return Tracking(**values, expression_names=list(meta["expression_names"]),
                    head_model=dict(meta.get("head_model", {})),
                    source=dict(meta.get("source", {})))


def _validate(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    dims = validate_arrays(path, arrays, SPECS, KIND)
    names = meta.get("expression_names")
    if not isinstance(names, list) or len(names) != dims["K"]:
        raise FormatError(f"{path}: expression_names must list {dims['K']} names, "
                          f"found {names!r:.80}")
    if float(arrays["fps"]) <= 0:
        raise FormatError(f"{path}: fps must be positive, found {float(arrays['fps'])}")
    width, height = (int(v) for v in arrays["image_size"])
    if width <= 0 or height <= 0:
        raise FormatError(f"{path}: image_size must be positive (width, height), "
                          f"found {width} x {height}")
    if dims["T"] == 0:
        raise FormatError(f"{path}: the tracking file holds no frames")


def slice_frames(tracking: Tracking, index: np.ndarray | slice) -> Tracking:
    """The frames ``index`` of ``tracking`` (e.g. a train/test split)."""
    per_frame = ("frame_ids", "timestamps", "expressions", "joint_rotations", "translation",
                 "intrinsics", "extrinsics", "valid")
    values = {name: getattr(tracking, name) for name in tracking.__dataclass_fields__}
    for name in per_frame:
        values[name] = values[name][index]
    return Tracking(**values)


def summary(tracking: Tracking, path: str = "") -> str:
    """A few readable lines describing the tracking."""
    t = tracking.n_frames
    duration = float(tracking.timestamps[-1] - tracking.timestamps[0]) if t > 1 else 0.0
    focal = tracking.intrinsics[:, 0, 0]
    rot_deg = np.degrees(np.linalg.norm(tracking.joint_rotations, axis=-1))
    lines = [
        f"tracking file {path}".rstrip(),
        f"  format      {FORMAT_NAME} v{VERSION}",
        f"  frames      {t} ({int(tracking.valid.sum())} valid), {tracking.fps:.2f} fps, "
        f"{duration:.2f} s, source frames {int(tracking.frame_ids[0])}..{int(tracking.frame_ids[-1])}",
        f"  image       {int(tracking.image_size[0])} x {int(tracking.image_size[1])} px, "
        f"focal {focal.min():.1f}..{focal.max():.1f} px",
        f"  expressions {tracking.n_expressions}, |coefficient| max {np.abs(tracking.expressions).max():.2f}",
        "  rotations   max " + ", ".join(f"{n} {d:.1f} deg"
                                         for n, d in zip(JOINT_NAMES, rot_deg.max(axis=0))),
        f"  identity    {tracking.shape.shape[0]} shape coefficients"
        + (", per-vertex offsets" if tracking.vertex_offsets is not None else ""),
        f"  head model  {tracking.head_model}",
    ]
    return "\n".join(lines)
