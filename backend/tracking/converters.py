"""Existing trackings -> the prepared-data folder: metrical-tracker / INSTA and VHAP.

Both trackers fit FLAME, so the result names a FLAME head model (``--head-model`` should be the
user's FLAME file; only its expression count and kind are recorded here). Checkpoints are loaded
with ``torch.load(weights_only=True)``, allowing numpy arrays (what metrical-tracker saves) but
no other code; a file that needs more is refused with a message, never unpickled freely.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import numpy as np

from ..errors import FormatError, InputError
from ..fileio import ensure_writable_folder, write_json, write_png
from ..formats import tracking as tracking_format
from ..formats.prepared import FRAMES, MASKS, PreparedData

log = logging.getLogger("toonsplat")
FLAME_EXPRESSIONS = 50  # expressions kept from FLAME's 100 (3DGB uses the first 50)


def rotation_6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """pytorch3d's 6D rotation (two rows, Gram-Schmidt) to matrices. (..., 6) -> (..., 3, 3)."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices to axis-angle vectors. (..., 3, 3) -> (..., 3)."""
    from scipy.spatial.transform import Rotation

    shape = matrix.shape[:-2]
    return Rotation.from_matrix(matrix.reshape(-1, 3, 3)).as_rotvec().reshape(*shape, 3)


def load_frame_file(path: str) -> dict:
    """One metrical-tracker ``.frame`` checkpoint as nested dicts of numpy arrays."""
    import torch

    allowed = [np.ndarray, np.dtype, np.core.multiarray._reconstruct, np.core.multiarray.scalar]
    allowed += [type(np.dtype(name)) for name in ("f4", "f8", "i4", "i8", "u1", "b1")]
    try:
        with torch.serialization.safe_globals(allowed):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError from torch, EOFError, ...
        raise FormatError(
            f"cannot load {path} safely: {str(exc).splitlines()[0][:200]}. ToonSplat loads "
            "checkpoints with torch.load(weights_only=True) (tensors and numpy arrays only) and "
            "will not run the arbitrary code a full unpickle allows; re-save the file with plain "
            "tensors/arrays") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path} is not a metrical-tracker frame (expected a dict)")
    return _to_numpy(data)


def _to_numpy(value):
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def metrical_frame_params(frame: dict, path: str) -> dict:
    """The contract's parameters of one metrical-tracker frame (FLAME, pose in the camera)."""
    try:
        flame, opencv = frame["flame"], frame["opencv"]
        expression = np.asarray(flame["exp"], np.float64).reshape(-1)
        jaw = rotation_6d_to_matrix(np.asarray(flame["jaw"]).reshape(6))
        eyes = rotation_6d_to_matrix(np.asarray(flame["eyes"]).reshape(2, 6))
        rotation = np.asarray(opencv["R"], np.float64).reshape(3, 3)
        translation = np.asarray(opencv["t"], np.float64).reshape(3)
        intrinsics = np.asarray(opencv["K"], np.float64).reshape(3, 3)
        shape = np.asarray(flame["shape"], np.float64).reshape(-1)
    except (KeyError, ValueError, TypeError) as exc:
        raise FormatError(f"{path}: not a metrical-tracker frame ({type(exc).__name__}: {exc}); "
                          "expected flame{exp, shape, jaw, eyes} and opencv{R, t, K}") from None
    rotations = np.zeros((5, 3))
    rotations[2] = matrix_to_axis_angle(jaw)
    rotations[3:] = matrix_to_axis_angle(eyes)
    extrinsic = np.eye(4)
    extrinsic[:3, :3], extrinsic[:3, 3] = rotation, translation
    size = np.asarray(frame.get("img_size", (0, 0))).reshape(-1)
    return {"expression": expression, "rotations": rotations, "extrinsic": extrinsic,
            "intrinsics": intrinsics, "shape": shape, "image_size": size,
            "frame_id": int(np.asarray(frame.get("frame_id", -1)).reshape(-1)[0])}


def _head_model_record(spec: str) -> dict:
    """``head_model`` of a converted tracking; ``path`` tells the trainer which FLAME file to load."""
    record = {"kind": "flame", "spec": spec}
    if spec not in ("flame", "builtin"):
        record["path"] = os.path.abspath(spec)
    return record


def convert_metrical(folder: str, out: str, head_model: str = "flame", progress=None,
                     size: int | None = None, fps: float = 25.0) -> tracking_format.Tracking:
    """An INSTA / metrical-tracker folder -> prepared-data folder (frames, masks, tracking.npz).

    Args:
        folder: holds ``checkpoint/*.frame`` and ``images/*.png`` (RGBA: alpha is the mask).
        out: the prepared-data folder to write.
        head_model: recorded in the tracking file (the FLAME file the user will train with).
        size: resize frames to this square size (default: keep the images' size).
    """
    files = sorted(glob.glob(os.path.join(folder, "checkpoint", "*.frame")))
    if not files:
        raise InputError(f"no checkpoint/*.frame files in {folder}; point --from-metrical at "
                         "a metrical-tracker output or INSTA subject folder")
    params = [metrical_frame_params(load_frame_file(p), p) for p in files]
    ids = [p["frame_id"] if p["frame_id"] >= 0 else int(_digits(f)) for p, f in zip(params, files)]
    images = [_find_image(folder, i, f) for i, f in zip(ids, files)]
    height, width = _write_frames(images, out, size, progress)
    k = min(FLAME_EXPRESSIONS, params[0]["expression"].shape[0])
    intrinsics = np.stack([p["intrinsics"] for p in params])
    intrinsics = _rescale_intrinsics(intrinsics, params[0]["image_size"], (height, width))
    track = tracking_format.Tracking(
        fps=fps, frame_ids=np.array(ids), timestamps=np.array(ids, np.float64) / fps,
        image_size=np.array([width, height]),
        expressions=np.stack([p["expression"][:k] for p in params]),
        joint_rotations=np.stack([p["rotations"] for p in params]),
        translation=np.zeros((len(params), 3)), intrinsics=intrinsics,
        extrinsics=np.stack([p["extrinsic"] for p in params]), valid=np.ones(len(params), bool),
        shape=params[0]["shape"], expression_names=[f"expr{i:02d}" for i in range(k)],
        head_model=_head_model_record(head_model),
        source={"kind": "metrical-tracker", "path": os.path.abspath(folder)})
    tracking_format.write(PreparedData(out).tracking, track)
    _report(out, folder, "metrical-tracker", track, progress)
    return track


def convert_vhap(folder: str, out: str, head_model: str = "flame", progress=None,
                 size: int | None = None) -> tracking_format.Tracking:
    """A VHAP export (``tracked_flame_params*.npz`` + ``transforms.json``) -> prepared-data folder.

    ``transforms.json`` holds per-frame cameras NeRF-style: ``transform_matrix`` camera-to-world
    in OpenGL axes, ``fl_x, fl_y, cx, cy, w, h``, ``timestep_index`` and ``file_path``.
    """
    params_files = sorted(glob.glob(os.path.join(folder, "tracked_flame_params*.npz")))
    transforms_path = os.path.join(folder, "transforms.json")
    if not params_files or not os.path.isfile(transforms_path):
        raise InputError(f"{folder} needs tracked_flame_params*.npz and transforms.json (a VHAP "
                         "export); point --from-vhap at that folder")
    with np.load(params_files[0], allow_pickle=False) as data:
        flame = {k: data[k] for k in data.files}
    with open(transforms_path, encoding="utf-8") as handle:
        frames = json.load(handle).get("frames", [])
    if not frames:
        raise FormatError(f"{transforms_path} lists no frames")
    steps = np.array([int(f.get("timestep_index", i)) for i, f in enumerate(frames)])
    try:
        rotations = np.stack([flame["rotation"], flame["neck_pose"], flame["jaw_pose"],
                              flame["eyes_pose"][:, :3], flame["eyes_pose"][:, 3:]], axis=1)[steps]
        expression, translation = flame["expr"][steps], flame["translation"][steps]
        shape = np.asarray(flame["shape"]).reshape(-1)
    except (KeyError, IndexError, ValueError) as exc:
        raise FormatError(f"{params_files[0]}: not VHAP FLAME parameters ({exc}); expected "
                          "rotation, neck_pose, jaw_pose, eyes_pose, expr, translation, shape") from None
    images = [os.path.join(folder, f["file_path"]) for f in frames]
    height, width = _write_frames(images, out, size, progress,
                                  [os.path.join(folder, f["fg_mask_path"]) if f.get("fg_mask_path")
                                   else None for f in frames])
    gl_to_cv = np.diag([1.0, -1.0, -1.0, 1.0])
    extrinsics = np.stack([np.linalg.inv(np.asarray(f["transform_matrix"], np.float64) @ gl_to_cv)
                           for f in frames])
    intrinsics = np.stack([[[f["fl_x"], 0, f["cx"]], [0, f["fl_y"], f["cy"]], [0, 0, 1]]
                           for f in frames]).astype(np.float64)
    intrinsics = _rescale_intrinsics(intrinsics, (frames[0]["h"], frames[0]["w"]), (height, width))
    k = min(FLAME_EXPRESSIONS, expression.shape[1])
    offsets = flame.get("static_offset")
    track = tracking_format.Tracking(
        fps=25.0, frame_ids=steps, timestamps=steps / 25.0, image_size=np.array([width, height]),
        expressions=expression[:, :k], joint_rotations=rotations, translation=translation,
        intrinsics=intrinsics, extrinsics=extrinsics, valid=np.ones(len(frames), bool),
        shape=shape, expression_names=[f"expr{i:02d}" for i in range(k)],
        head_model=_head_model_record(head_model),
        source={"kind": "vhap", "path": os.path.abspath(folder)},
        vertex_offsets=None if offsets is None else np.asarray(offsets).reshape(-1, 3))
    tracking_format.write(PreparedData(out).tracking, track)
    _report(out, folder, "vhap", track, progress)
    return track


def _digits(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    digits = "".join(c for c in stem if c.isdigit())
    if not digits:
        raise FormatError(f"{path}: cannot tell the frame number from the name")
    return digits


def _find_image(folder: str, frame_id: int, checkpoint: str) -> str:
    for name in (f"{frame_id:05d}.png", f"{frame_id:05d}.jpg", f"{frame_id}.png",
                 f"{_digits(checkpoint)}.png"):
        path = os.path.join(folder, "images", name)
        if os.path.isfile(path):
            return path
    raise InputError(f"no image for frame {frame_id} in {folder}/images (expected "
                     f"{frame_id:05d}.png, as INSTA writes it)")


def _write_frames(images: list[str], out: str, size: int | None, progress,
                  masks: list[str | None] | None = None) -> tuple[int, int]:
    """Copy images (alpha or a mask file -> masks/) as frames/{i:06d}.png. Returns (H, W)."""
    from PIL import Image, UnidentifiedImageError

    data = PreparedData(out)
    ensure_writable_folder(data.folder(FRAMES))
    ensure_writable_folder(data.folder(MASKS))
    shape = None
    for i, path in enumerate(images):
        try:
            with Image.open(path) as handle:
                rgba = handle.convert("RGBA")
            mask = rgba.getchannel("A")
            if masks and masks[i]:
                with Image.open(masks[i]) as handle:
                    mask = handle.convert("L")
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        rgb_image = rgba.convert("RGB")   # resized apart from alpha (PIL premultiplies RGBA)
        if size:
            rgb_image = rgb_image.resize((size, size), Image.BILINEAR)
            mask = mask.resize((size, size), Image.BILINEAR)
        rgb = np.asarray(rgb_image)
        shape = shape or rgb.shape[:2]
        if rgb.shape[:2] != shape:
            raise InputError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, the first frame was "
                             f"{shape[1]}x{shape[0]}; all frames must share one size")
        write_png(data.image_path(FRAMES, i), rgb)
        write_png(data.image_path(MASKS, i), np.asarray(mask.resize(rgb.shape[1::-1])))
        if progress is not None:
            progress.progress(i + 1, len(images))
    return shape


def _rescale_intrinsics(intrinsics: np.ndarray, source_hw, target_hw) -> np.ndarray:
    """Scale pinhole matrices from the tracker's image size to the written frames' size."""
    source_h, source_w = (int(v) for v in np.asarray(source_hw).reshape(-1)[:2])
    if source_h <= 0 or source_w <= 0:
        return intrinsics
    out = intrinsics.copy()
    out[:, 0] *= target_hw[1] / source_w
    out[:, 1] *= target_hw[0] / source_h
    return out


def _report(out: str, folder: str, kind: str, track, progress) -> None:
    write_json(PreparedData(out).prepare_report,
               {"source": {"kind": kind, "path": os.path.abspath(folder)},
                "frames": track.n_frames, "converted": True})
    if progress is not None:
        progress.result(f"converted {track.n_frames} {kind} frames", path=out)
