"""Standard 3DGS PLY (binary little-endian), as read by SuperSplat, Spark, KIRI and others.

Fields: x y z, nx ny nz (zeros), f_dc_0..2, f_rest_0..(3*(C-1)-1) channel-major (all R
coefficients, then G, then B), opacity (logit), scale_0..2 (log), rot_0..3 (w x y z).
"""

from __future__ import annotations

import numpy as np

from ..fileio import atomic_path


def ply_fields(n_coeffs: int) -> list[str]:
    rest = [f"f_rest_{i}" for i in range(3 * (n_coeffs - 1))]
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str, means: np.ndarray, log_scales: np.ndarray, quats: np.ndarray,
              opacity_logits: np.ndarray, sh: np.ndarray) -> None:
    """Write Gaussians (N, 3), (N, 3), (N, 4) wxyz, (N,), (N, C, 3) as a 3DGS PLY, atomically."""
    n, n_coeffs = len(means), sh.shape[1]
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major
    columns = [means, np.zeros((n, 3)), sh[:, 0, :], rest, opacity_logits[:, None], log_scales, quats]
    data = np.concatenate([np.asarray(c, dtype=np.float32).reshape(n, -1) for c in columns], axis=1)
    fields = ply_fields(n_coeffs)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in fields] + ["end_header"]
    with atomic_path(path, suffix=".ply") as tmp, open(tmp, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(data.astype("<f4").tobytes())
