"""Toon proportions as shape keys: which keys an imported avatar gets (numpy only, no bpy).

An avatar file built with ``--proportions`` holds the proportioned avatar in its usual arrays
(``means``, ``delta_means``, ``mesh_vertices``, ``mesh_expression_dirs``) and the avatar before
proportions in optional ``rest_*`` arrays (docs/FORMAT.md). The import makes the proportions a
dial: with p the value of the ``Proportions`` key and e_k the value of expression k,

    x(p, e) = rest + p (proportioned - rest) + sum_k e_k (rest_delta_k + p (delta_k - rest_delta_k))

i.e. a Basis at the rest positions, a ``Proportions`` key at the proportioned positions, one key
per expression holding its rest delta and one corrective key per expression,
``"<expression>.proportions"``, holding the change of that delta, whose value is driven to
e_k * p. At p = 1 the points are exactly the built avatar, at p = 0 exactly the avatar before
proportions, for any expression values. Without ``rest_*`` arrays nothing changes: Basis plus one
key per expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROPORTIONS_KEY = "Proportions"
CORRECTIVE_SUFFIX = ".proportions"
PROPORTIONS_RANGE = (0.0, 1.0)
# The corrective of expression e is driven to e * p: a "simple expression" that Blender evaluates
# without Python, so it works with auto-run of scripts off.
DRIVER_EXPRESSION = "e * p"


@dataclass
class ShapeKeyLayout:
    """Head-space positions and offsets of one object's shape keys. V vertices, K expressions.

    All relative keys are offsets from ``basis``; ``proportions`` and ``correctives`` are None
    when the avatar has no proportions.
    """

    basis: np.ndarray                     # (V, 3) positions of the Basis
    expressions: np.ndarray               # (K, V, 3) offset of each expression key
    names: list[str]                      # (K,) expression names
    proportions: np.ndarray | None = None  # (V, 3) offset of the Proportions key
    correctives: np.ndarray | None = None  # (K, V, 3) offset of each corrective key

    def __post_init__(self) -> None:
        count = self.basis.shape[0]
        if self.basis.shape != (count, 3):
            raise ValueError(f"basis has shape {self.basis.shape}, expected (V, 3)")
        if self.expressions.shape != (len(self.names), count, 3):
            raise ValueError(f"expressions {self.expressions.shape} do not fit "
                             f"{len(self.names)} names and {count} vertices")
        if self.proportions is not None and self.proportions.shape != (count, 3):
            raise ValueError(f"proportions {self.proportions.shape} do not fit {count} vertices")
        if self.correctives is not None and self.correctives.shape != self.expressions.shape:
            raise ValueError(f"correctives {self.correctives.shape} do not match the "
                             f"expressions {self.expressions.shape}")


def corrective_name(expression: str) -> str:
    """The name of the corrective shape key of ``expression``."""
    return expression + CORRECTIVE_SUFFIX


def expression_key_names(key_names: list[str]) -> list[str]:
    """The expression keys among a key list (Basis first): without Basis, the Proportions key
    and the correctives, i.e. the keys that sliders, trackings and resets act on."""
    names = list(key_names[1:])
    if PROPORTIONS_KEY not in names:  # an avatar without proportions: every key is an expression
        return names
    correctives = {corrective_name(n) for n in names}
    return [n for n in names if n != PROPORTIONS_KEY and n not in correctives]


def has_proportions(data) -> bool:
    """True when the avatar carries the avatar before proportions (``rest_means``)."""
    return getattr(data, "rest_means", None) is not None


def points_layout(data) -> ShapeKeyLayout:
    """The shape keys of the Gaussian centres. Mouth-interior Gaussians are never blended
    (3DGB): their expression and corrective offsets are zero; the proportions move them."""
    blended = ~np.asarray(data.mouth, dtype=bool)[None, :, None]
    return _layout(data.means, data.delta_means, getattr(data, "rest_means", None),
                   getattr(data, "rest_delta_means", None), list(data.expression_names), blended)


def mesh_layout(data) -> ShapeKeyLayout:
    """The shape keys of the head mesh: the same scheme on the mesh arrays. An avatar with
    ``rest_means`` but no ``rest_mesh_vertices`` keeps its (proportioned) mesh without keys."""
    rest_vertices = getattr(data, "rest_mesh_vertices", None) if has_proportions(data) else None
    return _layout(data.mesh_vertices, data.mesh_expression_dirs, rest_vertices,
                   getattr(data, "rest_mesh_expression_dirs", None),
                   list(data.expression_names), True)


def _layout(positions, deltas, rest_positions, rest_deltas, names, blended) -> ShapeKeyLayout:
    """Steps: 1. without rest positions, Basis = positions and the deltas as they are; 2. with
    them, Basis = rest, Proportions = positions - rest, expressions = rest deltas (the deltas
    themselves when the file has none), correctives = deltas - rest deltas."""
    positions = np.asarray(positions, dtype=np.float64)
    deltas = np.asarray(deltas, dtype=np.float32) * blended  # float32 as Blender keeps them
    if rest_positions is None:
        return ShapeKeyLayout(positions, deltas, names)
    rest = np.asarray(rest_positions, dtype=np.float64)
    if rest.shape != positions.shape:
        raise ValueError(f"rest positions {rest.shape} do not match {positions.shape}")
    rest_deltas = deltas if rest_deltas is None else np.asarray(rest_deltas, np.float32) * blended
    if rest_deltas.shape != deltas.shape:
        raise ValueError(f"rest deltas {rest_deltas.shape} do not match {deltas.shape}")
    return ShapeKeyLayout(rest, rest_deltas, names, proportions=positions - rest,
                          correctives=deltas - rest_deltas)


def blend(layout: ShapeKeyLayout, expressions: np.ndarray, proportions: float = 1.0) -> np.ndarray:
    """The head-space positions (V, 3) the shape keys give for expression values (K,) and a
    Proportions value: the reference the Blender import is tested against."""
    expressions = np.asarray(expressions, dtype=np.float64)
    out = layout.basis + np.einsum("k,kvc->vc", expressions, layout.expressions)
    if layout.proportions is not None:
        out = out + proportions * layout.proportions
        out = out + proportions * np.einsum("k,kvc->vc", expressions, layout.correctives)
    return out


def label(data) -> str:
    """``PRESET:STRENGTH`` of the file's ``proportions`` record (e.g. ``toon:0.8``), or "" for
    an avatar without proportions."""
    record = getattr(data, "proportions", None)
    if not has_proportions(data) or not isinstance(record, dict):
        return ""
    strength = record.get("strength")
    strength = f"{strength:g}" if isinstance(strength, (int, float)) else "?"
    return f"{record.get('preset', '?')}:{strength}"
