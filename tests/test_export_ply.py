"""3DGS PLY layout and the avatar file's size at product scale."""

from __future__ import annotations

import numpy as np

from backend.errors import FormatError
from backend.export.ply import ply_fields, write_ply
from backend.formats import avatar as avatar_format
from backend.formats import examples


def test_ply_has_the_standard_fields_channel_major(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    sh = rng.normal(size=(n, 16, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    path = tmp_path / "g.ply"
    write_ply(str(path), rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), quats,
              rng.normal(size=n), sh)
    header = path.read_bytes().split(b"end_header")[0].decode()
    assert "element vertex 50" in header and "property float f_rest_44" in header
    table = read_ply(str(path))
    assert list(table) == ply_fields(16)
    assert np.allclose(table["f_dc_1"], sh[:, 0, 1])
    assert np.allclose(table["f_rest_0"], sh[:, 1, 0]) and np.allclose(table["f_rest_15"], sh[:, 1, 1])
    assert np.allclose(table["rot_0"], quats[:, 0])
    assert np.all(table["nx"] == 0)


def test_avatar_file_for_70k_by_50_stays_under_150_mb():
    avatar = examples.random_avatar(n_gaussians=70_000, n_expressions=50, sh_degree=3, delta_sh_degree=0,
                                    seed=0)
    total = 0
    for name in avatar_format.SPECS:
        array = np.asarray(getattr(avatar, name))
        itemsize = 2 if name in avatar_format.DELTA_FIELDS else max(array.dtype.itemsize, 4)
        total += array.size * min(itemsize, 4)
    # A FLAME-sized reference mesh with 50 expression directions adds ~3 MB.
    total += 50 * 5023 * 3 * 4
    assert total < 150e6, total / 1e6

def read_ply(path: str) -> dict[str, np.ndarray]:
    """A float-only binary little-endian vertex PLY, as the 3DGS viewers read it."""
    with open(path, "rb") as handle:
        raw = handle.read()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise FormatError(f"{path} is not a PLY file (no 'ply' magic or header end)")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise FormatError(f"{path}: only binary little-endian PLY is supported")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    names = [line.split()[2] for line in lines if line.startswith("property float")]
    body = np.frombuffer(raw[end + len(b"end_header\n"):], dtype="<f4")
    if body.size != count * len(names):
        raise FormatError(f"{path}: expected {count} x {len(names)} floats, found {body.size}")
    table = body.reshape(count, len(names))
    return {name: table[:, i] for i, name in enumerate(names)}
