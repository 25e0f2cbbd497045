"""Head models with FLAME's structure: the built-in one, or FLAME files the user owns.

    from backend.headmodel import load_head_model
    model = load_head_model("builtin")            # or a FLAME .pkl / .npz path
    out = model(expression=expr, joint_rotations=rot, translation=t)   # HeadOutput

See docs/HEAD_MODEL.md.
"""

from __future__ import annotations

import os

from ..errors import InputError
from .model import JOINT_NAMES, PARENTS, HeadAssets, HeadModel, HeadOutput

__all__ = ["JOINT_NAMES", "PARENTS", "HeadAssets", "HeadModel", "HeadOutput", "load_assets",
           "load_head_model"]


def load_assets(spec: str = "builtin", n_expressions: int = 50,
                landmark_embedding: str | None = None) -> HeadAssets:
    """Load a head model's numpy assets (see ``load_head_model`` for the arguments)."""
    if n_expressions < 0:
        raise InputError(f"n_expressions must be >= 0, got {n_expressions}")
    if spec == "builtin":
        from .builtin import load_builtin

        assets = load_builtin()
        if landmark_embedding is not None:
            from .flame import read_landmark_embedding

            faces, bary, ids = read_landmark_embedding(os.path.expanduser(os.fspath(landmark_embedding)))
            if len(faces) and faces.max() >= len(assets.faces):
                raise InputError(f"the landmark embedding {landmark_embedding} names triangle "
                                 f"{int(faces.max())}, but the built-in model has {len(assets.faces)}")
            assets.landmark_faces, assets.landmark_bary, assets.landmark_ids = faces, bary, ids
    else:
        from . import flame

        spec = os.path.expanduser(os.fspath(spec))
        assets = flame.load_flame(spec, landmark_embedding=landmark_embedding)
    return truncate_expressions(assets, n_expressions)


def truncate_expressions(assets: HeadAssets, n_expressions: int) -> HeadAssets:
    """Keep the first ``n_expressions`` expression directions (all of them if there are fewer)."""
    k = min(n_expressions, assets.exprdirs.shape[-1])
    assets.exprdirs = assets.exprdirs[..., :k]
    assets.expression_names = list(assets.expression_names[:k])
    return assets


def load_head_model(spec: str = "builtin", n_expressions: int = 50,
                    landmark_embedding: str | None = None, device="cpu") -> HeadModel:
    """Load a head model as a torch layer.

    Args:
        spec: ``"builtin"``, or the path of a FLAME 2020 ``generic_model.pkl``, ``flame2023.pkl``,
            FLAME 2023 Open pickle, or an ``.npz`` conversion of one.
        n_expressions: how many expression directions to keep (FLAME: the first ones; the
            built-in model has 27 named ones, so at most 27).
        landmark_embedding: ``mediapipe_landmark_embedding.npz`` or the 68-point
            ``landmark_embedding.npy``; without it a FLAME model has no landmarks (L = 0) and the
            built-in model keeps its canonical ones (landmark i = canonical face vertex i).
        device: torch device for the buffers.

    Returns:
        HeadModel.
    """
    return HeadModel(load_assets(spec, n_expressions, landmark_embedding), device=device)
