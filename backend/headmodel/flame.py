"""Load FLAME files the user owns, safely: a restricted unpickler, never chumpy, never arbitrary code.

A FLAME ``.pkl`` is a (often Python 2) pickle that references chumpy and scipy.sparse. Unpickling
runs whatever globals a file names, so ``RestrictedUnpickler`` resolves only an allow-list:
numpy's array reconstruction, inert stand-ins for chumpy classes (their state holds the array as
``x``) and for scipy sparse matrices (rebuilt as dense numpy from data/indices/indptr). Every other
global raises ``FormatError`` naming the file and the global, before anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np

from ..errors import FormatError, InputError
from ..formats import npzio
from .model import HeadAssets

CONVERTED_FORMAT = "toonsplat-head-model"
CONVERTED_VERSION = 1


class ChumpyStub:
    """Stands in for any chumpy class: keeps the pickled state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"state": state}


class SparseStub:
    """Stands in for scipy.sparse csc/csr matrices: keeps data, indices, indptr and shape."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}


def _reconstructor(cls, base, state):
    """copyreg._reconstructor limited to the stand-in classes."""
    if cls not in (ChumpyStub, SparseStub):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    return cls.__new__(cls)


def _encode(text, encoding="utf-8"):
    """_codecs.encode as Python 3 pickles bytes in protocols 0-2 (text, 'latin1'); nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise pickle.UnpicklingError("refusing an unexpected _codecs.encode call")
    return text.encode(encoding)


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = np.core.multiarray._reconstruct
        allowed[(module, "scalar")] = np.core.multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for module in ("copy_reg", "copyreg"):
        allowed[(module, "_reconstructor")] = _reconstructor
    for module in ("__builtin__", "builtins"):
        allowed[(module, "object")] = object
        allowed[(module, "set")] = set
    allowed[("_codecs", "encode")] = _encode
    for kind in ("csc", "csr"):
        for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}"):
            allowed[(module, f"{kind}_matrix")] = SparseStub
            allowed[(module, f"{kind}_array")] = SparseStub
    return allowed


ALLOWED_GLOBALS = _allowed_globals()
CHUMPY_MODULES = ("chumpy", "chumpy.ch", "chumpy.reordering", "chumpy.ch_ops", "chumpy.utils",
                  "chumpy.linalg", "chumpy.logic")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays, chumpy stand-ins and sparse stand-ins; refuses any other global."""

    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if module in CHUMPY_MODULES and name[:1].isalpha():
            return ChumpyStub
        raise FormatError(f"{self.path}: refusing to load the global '{module}.{name}' from this "
                          "pickle; only numpy arrays, chumpy arrays and scipy sparse matrices are "
                          "allowed in a FLAME file. Do not use this file; get the model again from "
                          "flame.is.tue.mpg.de")


def restricted_load(data: bytes, path: str):
    """Unpickle ``data`` with ``RestrictedUnpickler`` and turn the stand-ins into numpy arrays."""
    try:
        value = RestrictedUnpickler(io.BytesIO(data), path).load()
    except FormatError:
        raise
    except Exception as exc:  # truncated or malformed pickles raise many kinds of errors
        raise FormatError(f"{path} is not a readable FLAME pickle ({type(exc).__name__}: {exc}); "
                          "check that the download finished") from exc
    return _plain(value, path)


def _plain(value, path: str):
    """Replace stand-ins by numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: _plain(v, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, path) for v in value)
    if isinstance(value, ChumpyStub):
        if "x" not in value.state:
            raise FormatError(f"{path}: holds a chumpy expression that is not a plain array; "
                              "convert the file with the FLAME authors' tools to plain numpy")
        return np.asarray(_plain(value.state["x"], path))
    if isinstance(value, SparseStub):
        return _dense(value.state, path)
    return value


def _dense(state: dict, path: str) -> np.ndarray:
    try:
        data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{path}: a sparse matrix in this pickle lacks {exc}") from exc
    compressed_rows = state.get("format", "csc") == "csr"
    major, minor = (shape[0], shape[1]) if compressed_rows else (shape[1], shape[0])
    if len(indptr) != major + 1 or (len(indices) and indices.max() >= minor):
        raise FormatError(f"{path}: a sparse matrix in this pickle is inconsistent")
    dense = np.zeros((major, minor), dtype=np.float64)
    rows = np.repeat(np.arange(major), np.diff(indptr))
    np.add.at(dense, (rows, indices), data)
    return dense if compressed_rows else dense.T


def _read_bytes(path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise InputError(f"{what} not found: {path}; check the path (FLAME files are not "
                         "downloaded automatically, see docs/HEAD_MODEL.md)")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; expected a {what} file")
    with open(path, "rb") as handle:
        return handle.read()


def flame_kind(path: str) -> str:
    """Guess the FLAME release from the file name: flame2023-open, flame2023 or flame2020."""
    name = os.path.basename(path).lower()
    if "2023" in name:
        return "flame2023-open" if "open" in name else "flame2023"
    return "flame2020"


def read_flame_dict(path: str) -> tuple[dict, str]:
    """The raw arrays of a FLAME pickle or npz as a dict of numpy values, and its kind."""
    if path.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = {k: archive[k] for k in archive.files}
        except FileNotFoundError:
            raise InputError(f"FLAME model not found: {path}") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise FormatError(f"{path} is not a readable .npz ({exc})") from exc
        except ValueError as exc:  # object arrays need pickle
            raise FormatError(f"{path} stores pickled objects; convert the original .pkl with "
                              "'python -m backend head-model convert' instead") from exc
        if npzio.META_KEY in raw:
            meta = npzio.read_npz(path, "head-model file")[1]
            raw.pop(npzio.META_KEY)
            return raw, str(meta.get("kind", "flame-npz"))
        return raw, "flame-npz"
    value = restricted_load(_read_bytes(path, "FLAME model"), path)
    if not isinstance(value, dict):
        raise FormatError(f"{path}: a FLAME pickle holds a dict of arrays, found {type(value).__name__}")
    return value, flame_kind(path)


def load_flame(path: str, landmark_embedding: str | None = None) -> HeadAssets:
    """HeadAssets from a FLAME 2020/2023/2023-Open pickle or an .npz conversion (all expressions)."""
    raw, kind = read_flame_dict(path)
    if "exprdirs" in raw:   # our own converted file
        return _from_converted(raw, kind, path, landmark_embedding)
    missing = [k for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights")
               if k not in raw]
    if missing:
        raise FormatError(f"{path} is not a FLAME model: it lacks {', '.join(missing)}")
    v_template = np.asarray(raw["v_template"], dtype=np.float64)
    n_vertices = len(v_template)
    shapedirs = np.asarray(raw["shapedirs"], dtype=np.float64)
    total = shapedirs.shape[-1]
    n_shape = int(raw["n_shape"]) if "n_shape" in raw else (300 if total == 400 else total // 2)
    posedirs = np.asarray(raw["posedirs"], dtype=np.float64)
    if posedirs.shape != (n_vertices, 3, 36):
        raise FormatError(f"{path}: posedirs has shape {posedirs.shape}, expected ({n_vertices}, 3, 36)")
    regressor = raw["J_regressor"]
    regressor = np.asarray(regressor.toarray() if hasattr(regressor, "toarray") else regressor)
    lmk = read_landmark_embedding(landmark_embedding) if landmark_embedding else _no_landmarks()
    return HeadAssets(
        kind=kind, v_template=v_template, faces=np.asarray(raw["f"], dtype=np.int64),
        shapedirs=shapedirs[..., :n_shape], exprdirs=shapedirs[..., n_shape:],
        posedirs=posedirs.reshape(n_vertices * 3, 36).T, J_regressor=regressor,
        lbs_weights=np.asarray(raw["weights"], dtype=np.float64),
        expression_names=[f"expr{i:02d}" for i in range(total - n_shape)],
        landmark_faces=lmk[0], landmark_bary=lmk[1], landmark_ids=lmk[2], source=path).validate()


def _from_converted(raw: dict, kind: str, path: str, landmark_embedding: str | None) -> HeadAssets:
    names = [f"expr{i:02d}" for i in range(raw["exprdirs"].shape[-1])]
    lmk = (raw["landmark_faces"], raw["landmark_bary"], raw["landmark_ids"])
    if landmark_embedding:
        lmk = read_landmark_embedding(landmark_embedding)
    return HeadAssets(
        kind=kind if kind != "builtin" else "flame-npz", v_template=raw["v_template"],
        faces=raw["faces"].astype(np.int64), shapedirs=raw["shapedirs"], exprdirs=raw["exprdirs"],
        posedirs=raw["posedirs"], J_regressor=raw["J_regressor"], lbs_weights=raw["lbs_weights"],
        expression_names=names, landmark_faces=np.asarray(lmk[0], dtype=np.int64),
        landmark_bary=np.asarray(lmk[1]), landmark_ids=np.asarray(lmk[2], dtype=np.int64),
        source=path).validate()


def _no_landmarks():
    return np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0, dtype=np.int64)


IBUG68_ID_OFFSET = 1000   # landmark_ids of the 68-point embedding: 1000 + iBUG index (not MediaPipe)


def read_landmark_embedding(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmark faces (L,), barycentrics (L, 3) and ids (L,) from a FLAME landmark embedding.

    ``mediapipe_landmark_embedding.npz`` gives MediaPipe ids; the 68-point ``landmark_embedding.npy``
    (a pickled dict) gives ids ``1000 + i`` for iBUG point i.
    """
    if path.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                faces, bary, ids = (archive[k] for k in ("lmk_face_idx", "lmk_b_coords", "landmark_indices"))
        except FileNotFoundError:
            raise InputError(f"landmark embedding not found: {path}") from None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise FormatError(f"{path} is not a MediaPipe landmark embedding (needs lmk_face_idx, "
                              f"lmk_b_coords, landmark_indices): {exc}") from exc
        return faces.astype(np.int64).ravel(), bary.reshape(-1, 3).astype(np.float64), \
            ids.astype(np.int64).ravel()
    value = _read_pickled_npy(path)
    try:
        faces = np.asarray(value["full_lmk_faces_idx"]).reshape(-1).astype(np.int64)
        bary = np.asarray(value["full_lmk_bary_coords"], dtype=np.float64).reshape(-1, 3)
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{path}: a 68-point embedding needs full_lmk_faces_idx and "
                          f"full_lmk_bary_coords ({exc})") from exc
    return faces, bary, IBUG68_ID_OFFSET + np.arange(len(faces), dtype=np.int64)


def _read_pickled_npy(path: str):
    """The object inside a pickled (object-dtype) ``.npy``, through the restricted unpickler."""
    handle = io.BytesIO(_read_bytes(path, "landmark embedding"))
    try:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = np.lib.format._read_array_header(handle, version)
    except ValueError as exc:
        raise FormatError(f"{path} is not a .npy file ({exc})") from exc
    if not dtype.hasobject:
        raise FormatError(f"{path}: expected a pickled dict in this .npy, found a {dtype} array")
    value = restricted_load(handle.read(), path)
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(()).item()
    return value


def write_converted(path: str, assets: HeadAssets) -> None:
    """Write assets as a clean, pickle-free ``.npz`` that ``load_flame`` reads back."""
    meta = {"format": CONVERTED_FORMAT, "version": CONVERTED_VERSION, "kind": assets.kind,
            "source": os.path.basename(assets.source)}
    npzio.atomic_write_npz(path, assets.arrays(), meta)
