"""Safe, atomic reading and writing of the ``.npz`` containers behind every contract file.

A container is an uncompressed zip of ``.npy`` arrays plus one ``__meta__`` array that holds a
UTF-8 JSON object (format name, version, names, provenance). Reading never unpickles
(``allow_pickle=False``); writing goes to a temporary file in the same folder, is flushed to disk,
then renamed over the target, so a crash or a full disk never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

import numpy as np

from ..errors import FormatError

META_KEY = "__meta__"


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                     meta: dict[str, Any]) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` atomically (temp file, fsync, rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FormatError(f"cannot write {path}: folder {folder} does not exist")
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"),
                                      dtype=np.uint8)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise


def read_meta(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """Read only the metadata of a container (cheap: the arrays are not loaded)."""
    path = _existing_file(os.fspath(path), kind)
    try:
        with np.load(path, allow_pickle=False) as archive:
            raw = archive[META_KEY] if META_KEY in archive.files else None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path} is not a readable {kind} (truncated or corrupted: {exc}); "
                          "re-create it with the command that wrote it") from exc
    return _decode_meta(path, raw, kind)


def _existing_file(path: str, kind: str) -> str:
    if not os.path.exists(path):
        raise FormatError(f"{kind} not found: {path}")
    if os.path.isdir(path):
        raise FormatError(f"{path} is a folder, expected a {kind} (.npz)")
    return path


def _decode_meta(path: str, raw: np.ndarray | None, kind: str) -> dict[str, Any]:
    if raw is None:
        raise FormatError(f"{path} has no '{META_KEY}' entry, so it is not a ToonSplat {kind}")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: the metadata of this {kind} is corrupted ({exc})") from exc
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: the metadata of this {kind} is not a JSON object")
    return meta


def read_npz(path: str | os.PathLike, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array and the metadata of a container; raise FormatError naming ``path``.

    Args:
        path: the file.
        kind: what the file should be ("avatar file", "tracking file"), for messages.
    """
    path = _existing_file(os.fspath(path), kind)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{path} is not a readable {kind} (truncated or corrupted: {exc}); "
                          "re-create it with the command that wrote it") from exc
    meta = _decode_meta(path, arrays.pop(META_KEY, None), kind)
    return arrays, meta


def check_header(path: str, meta: dict[str, Any], format_name: str, supported: tuple[int, ...],
                 kind: str) -> int:
    """Check the format name and version in ``meta``; return the version."""
    found = meta.get("format")
    if found != format_name:
        raise FormatError(f"{path} is a {found!r} file, not a {kind} ({format_name!r})")
    version = meta.get("version")
    if version not in supported:
        raise FormatError(f"{path} has {kind} version {version!r}; this ToonSplat reads versions "
                          f"{', '.join(map(str, supported))}. Update ToonSplat or re-export the file")
    return int(version)


class ArraySpec:
    """What one array of a contract must look like.

    ``shape`` holds ints (exact), strings (named dimensions that must agree across arrays) or
    None (any size). ``dtypes`` are the numpy kinds accepted ("f" float, "i"/"u" integer, "b" bool).
    """

    def __init__(self, shape: tuple, dtypes: str, required: bool = True, finite: bool = True):
        self.shape = shape
        self.dtypes = dtypes
        self.required = required
        self.finite = finite


def validate_arrays(path: str, arrays: dict[str, np.ndarray], specs: dict[str, ArraySpec],
                    kind: str, dims: dict[str, int] | None = None) -> dict[str, int]:
    """Check presence, dtype kind, shape agreement and finiteness; return the named dimensions."""
    dims = dict(dims or {})
    for name, spec in specs.items():
        if name not in arrays:
            if spec.required:
                raise FormatError(f"{path}: {kind} is missing the array '{name}'")
            continue
        array = arrays[name]
        if array.dtype.kind not in spec.dtypes:
            raise FormatError(f"{path}: '{name}' has dtype {array.dtype}, expected kind "
                              f"{spec.dtypes!r}")
        if array.ndim != len(spec.shape):
            raise FormatError(f"{path}: '{name}' has shape {array.shape}, expected "
                              f"{len(spec.shape)} dimensions {_describe(spec.shape)}")
        for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
            if isinstance(want, int) and want != got:
                raise FormatError(f"{path}: '{name}' has shape {array.shape}, expected "
                                  f"{_describe(spec.shape)} (axis {axis} should be {want})")
            if isinstance(want, str):
                if dims.setdefault(want, got) != got:
                    raise FormatError(f"{path}: '{name}' has {want}={got} along axis {axis}, but "
                                      f"other arrays have {want}={dims[want]}")
        if spec.finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise FormatError(f"{path}: '{name}' contains {bad} NaN or Inf values")
    return dims


def _describe(shape: tuple) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
