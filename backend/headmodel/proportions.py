"""Where an avatar's toon proportions are anchored: landmarks of its head model on its neutral
mesh (the built-in model, or a FLAME file with its MediaPipe landmark embedding), or vertex ids
the user gives (``--proportions-anchors FILE``). The deformation itself is numpy-only, in
``backend/formats/proportions.py``.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..formats import proportions as numpy_proportions
from ..formats.avatar import Avatar, replace


def landmark_points(assets, vertices: np.ndarray) -> np.ndarray:
    """The head model's landmarks on ``vertices`` (V, 3) of its topology -> (L, 3)."""
    corners = np.asarray(vertices, np.float64)[np.asarray(assets.faces)[assets.landmark_faces]]
    return (corners * np.asarray(assets.landmark_bary, np.float64)[:, :, None]).sum(axis=1)


def proportion_anchors(avatar: Avatar, head_model: str | None = None,
                       landmark_embedding: str | None = None,
                       anchors_file: str | None = None) -> dict[str, np.ndarray]:
    """The anchor points of the proportions on the avatar's neutral mesh (before proportions).

    Args:
        avatar: the avatar (its rest arrays when it already has proportions).
        head_model: ``builtin`` or the FLAME file it was trained with (default: builtin when the
            avatar says so).
        landmark_embedding: for a FLAME file, its ``mediapipe_landmark_embedding.npz``.
        anchors_file: a JSON ``{anchor: [vertex ids]}``; replaces the landmarks.

    Raises:
        InputError: the head model is unknown or does not fit the avatar, or anchors are missing
            (the message names them and what to pass).
    """
    rest = avatar
    if avatar.has_proportions:  # the anchors of the mesh before proportions
        rest = replace(avatar, mesh_vertices=avatar.rest_mesh_vertices)
    if anchors_file:
        return numpy_proportions.anchors_from_vertex_ids(
            rest.mesh_vertices, numpy_proportions.read_anchor_file(anchors_file), anchors_file)
    from . import load_assets

    kind = avatar.head_model.get("kind", "builtin")
    spec = head_model or ("builtin" if kind == "builtin" else None)
    if spec is None:
        raise InputError(f"the avatar was trained with head model {kind!r}: pass its FLAME file "
                         "(--flame FILE, with --landmark-embedding for its MediaPipe landmark "
                         "embedding), or the anchors as vertex ids (--proportions-anchors FILE)")
    if spec != "builtin" and not os.path.exists(os.path.expanduser(spec)):
        raise InputError(f"the head model {spec!r} is not on this machine; pass --flame with the "
                         "file's path")
    assets = load_assets(spec, n_expressions=0, landmark_embedding=landmark_embedding)
    if len(assets.v_template) != len(rest.mesh_vertices):
        raise InputError(f"the head model {spec!r} has {len(assets.v_template)} vertices but the "
                         f"avatar's mesh has {len(rest.mesh_vertices)}; pass the head model the "
                         "avatar was trained with")
    if len(assets.landmark_ids) == 0:
        raise InputError(f"the head model {spec!r} has no landmark embedding: pass its "
                         "mediapipe_landmark_embedding.npz (--landmark-embedding FILE) or the "
                         "anchors as vertex ids (--proportions-anchors FILE, docs/STYLIZE.md)")
    points = landmark_points(assets, rest.mesh_vertices)
    return numpy_proportions.anchors_from_landmarks(points, assets.landmark_ids, spec)


def apply_proportions(avatar: Avatar, spec, head_model: str | None = None,
                      landmark_embedding: str | None = None,
                      anchors_file: str | None = None) -> Avatar:
    """``avatar`` with the proportions ``spec`` (``PRESET[:STRENGTH]`` or a ProportionsSpec),
    anchored by ``proportion_anchors`` (same arguments). Never compounds: starts from the
    avatar's rest arrays; strength 0 or ``none`` removes the proportions."""
    spec = numpy_proportions.parse_spec(spec)
    if spec.is_identity and not avatar.has_proportions:
        return avatar
    anchors = proportion_anchors(avatar, head_model, landmark_embedding, anchors_file)
    return numpy_proportions.apply_proportions(avatar, spec, anchors)
