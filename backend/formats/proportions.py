"""Toon proportions in 3D: a smooth, injective deformation ``D`` of head space, and an avatar
deformed by it so that every blendshape, the jaw and the eyes keep working (docs/STYLIZE.md,
"Toon proportions in 3D"; the file side in docs/FORMAT.md, "Proportions").

numpy only (Blender's Python can use it). ``D(x) = x + sum_c u_c(x)``: each component ``u_c`` is
a smooth field with compact support (a C2 smootherstep falloff), placed and sized from the subject's
own face: anchors (points on the neutral mesh, from landmarks or vertex ids) and the eye joints.

1. ``parse_spec("toon:0.8")`` -> ``ProportionsSpec`` (preset and strength; errors name the presets).
2. ``anchors_from_landmarks`` / ``anchors_from_vertex_ids`` -> the named anchor points.
3. ``build_deformation(anchors, joints, mesh_vertices, components)`` -> ``Deformation``
   (``D(x)`` and its Jacobian, batched, float64). No joint moves, and only an eye's own field
   moves its eyeball (a uniform scaling about the eye joint): a component whose support would
   reach a joint or an eyeball is shrunk until it does not (``protected_points``).
4. ``deform_avatar`` / ``apply_proportions``: the avatar under ``D`` with its rest arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from .avatar import REST_FIELDS, Avatar, replace

COMPONENTS = ("eyes", "nose", "mouth", "chin", "cheeks", "forehead")
# Component strengths of each preset at strength 1 (the spec's strength multiplies them all).
PRESETS: dict[str, dict[str, float]] = {
    "none": dict.fromkeys(COMPONENTS, 0.0),
    "subtle": {"eyes": 0.35, "nose": 0.35, "mouth": 0.3, "chin": 0.3, "cheeks": 0.3,
               "forehead": 0.3},
    "toon": {"eyes": 0.7, "nose": 0.7, "mouth": 0.6, "chin": 0.6, "cheeks": 0.6, "forehead": 0.6},
    "chibi": dict.fromkeys(COMPONENTS, 1.0),
}
DEFAULT_PRESET = "toon"

# MediaPipe FaceMesh ids of each anchor (the mean of those the head model has); +X is the
# subject's left, so ``_L`` anchors have x > 0.
ANCHOR_LANDMARKS: dict[str, tuple[int, ...]] = {
    "brow_L": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "brow_R": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107),
    "nose_bridge": (168,),
    "nose_tip": (4,),
    "nose_base": (2,),
    "nose_wing_L": (327,),
    "nose_wing_R": (98,),
    "mouth_L": (291,),
    "mouth_R": (61,),
    "lip_upper": (0,),
    "lip_lower": (17,),
}
# Anchors that can also be given (vertex ids) but are otherwise found on the mesh: the chin's
# foremost point (pogonion), see ``chin_point``.
OPTIONAL_ANCHORS = ("chin",)
JOINT_TOLERANCE_M = 1e-4


# -- the spec ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProportionsSpec:
    """A preset and a strength 0..1 (``PRESET[:STRENGTH]``)."""

    preset: str = DEFAULT_PRESET
    strength: float = 1.0

    def components(self) -> dict[str, float]:
        """Each component's effective strength (preset's x strength)."""
        return {name: round(PRESETS[self.preset][name] * self.strength, 6) for name in COMPONENTS}

    @property
    def is_identity(self) -> bool:
        return not any(self.components().values())

    def __str__(self) -> str:
        return f"{self.preset}:{self.strength:g}"


def parse_spec(text: str | ProportionsSpec | None) -> ProportionsSpec:
    """``PRESET[:STRENGTH]`` (e.g. ``toon``, ``chibi:0.5``, ``none``) -> ``ProportionsSpec``.

    Raises:
        InputError: unknown preset (the message lists the known ones), or a strength that is not
            a number in 0..1.
    """
    if isinstance(text, ProportionsSpec):
        return text
    text = (text or "none").strip()
    preset, _, strength_text = text.partition(":")
    preset = preset.strip().lower()
    if preset not in PRESETS:
        raise InputError(f"unknown proportions preset {preset!r} in {text!r}; the presets are "
                         f"{', '.join(PRESETS)} (write PRESET or PRESET:STRENGTH, e.g. toon:0.8)")
    try:
        strength = float(strength_text) if strength_text.strip() else 1.0
    except ValueError:
        raise InputError(f"the proportions strength in {text!r} is not a number; write "
                         f"PRESET:STRENGTH with a strength from 0 to 1, e.g. {preset}:0.8") from None
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"the proportions strength in {text!r} is outside 0..1; write e.g. "
                         f"{preset}:0.8")
    return ProportionsSpec(preset, strength)


# -- anchors -----------------------------------------------------------------------------------
def anchors_from_landmarks(points: np.ndarray, ids: np.ndarray, source: str) -> dict[str, np.ndarray]:
    """Anchor points from landmarks with MediaPipe ids.

    Args:
        points: (L, 3) landmark positions on the neutral mesh.
        ids: (L,) their MediaPipe FaceMesh ids.
        source: the head model, for the message.

    Raises:
        InputError: naming the anchors none of whose landmarks the model has.
    """
    where = {int(i): k for k, i in enumerate(np.asarray(ids).tolist())}
    anchors, missing = {}, []
    for name, wanted in ANCHOR_LANDMARKS.items():
        found = [where[i] for i in wanted if i in where]
        if found:
            anchors[name] = np.asarray(points, np.float64)[found].mean(axis=0)
        else:
            missing.append(f"{name} (FaceMesh {', '.join(map(str, wanted))})")
    if missing:
        raise InputError(f"the head model {source} has no landmarks for the proportions' anchors "
                         f"{'; '.join(missing)}. Give its MediaPipe landmark embedding "
                         "(--landmark-embedding), or the anchors as vertex ids "
                         "(--proportions-anchors FILE, docs/STYLIZE.md)")
    return anchors


def read_anchor_file(path: str) -> dict[str, list[int]]:
    """A JSON object ``{anchor name: [vertex id, ...]}`` (the ``--proportions-anchors`` file)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"proportions anchors file not found: {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not a readable JSON anchors file ({exc})") from exc
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and v and all(isinstance(i, int) for i in v) for v in data.values()):
        raise FormatError(f"{path}: the anchors file must be a JSON object of anchor name -> list "
                          f"of vertex ids, e.g. {{\"nose_tip\": [3564]}}; anchors: "
                          f"{', '.join(ANCHOR_LANDMARKS)} (and optionally chin)")
    return data


def anchors_from_vertex_ids(mesh_vertices: np.ndarray, mapping: dict[str, list[int]],
                            source: str) -> dict[str, np.ndarray]:
    """Anchor points as the mean of given vertices of the neutral mesh (V, 3).

    Raises:
        InputError: an anchor is missing (all are named), unknown or names a vertex out of range.
    """
    known = set(ANCHOR_LANDMARKS) | set(OPTIONAL_ANCHORS)
    unknown = sorted(set(mapping) - known)
    missing = [name for name in ANCHOR_LANDMARKS if name not in mapping]
    if unknown or missing:
        raise InputError(f"{source}: the proportions anchors file "
                         + (f"misses {', '.join(missing)}" if missing else "")
                         + ("; " if missing and unknown else "")
                         + (f"has unknown anchors {', '.join(unknown)}" if unknown else "")
                         + f". It needs {', '.join(ANCHOR_LANDMARKS)} (vertex ids), and may give chin")
    vertices = np.asarray(mesh_vertices, np.float64)
    anchors = {}
    for name, ids in mapping.items():
        ids = np.asarray(ids)
        if ids.min() < 0 or ids.max() >= len(vertices):
            raise InputError(f"{source}: anchor {name!r} names vertex {int(ids.max())}, but the "
                             f"avatar's mesh has {len(vertices)} vertices (0..{len(vertices) - 1})")
        anchors[name] = vertices[ids].mean(axis=0)
    return anchors


def chin_point(anchors: dict[str, np.ndarray], mesh_vertices: np.ndarray, size: float) -> np.ndarray:
    """The chin's foremost point (pogonion): the mesh vertex of largest z near the midline, 0.15
    to 0.9 eye distances (``size``) below the lower lip, unless the anchors give ``chin``."""
    if "chin" in anchors:
        return anchors["chin"]
    lip = anchors["lip_lower"]
    mid_x = 0.5 * (anchors["mouth_L"][0] + anchors["mouth_R"][0])
    v = np.asarray(mesh_vertices, np.float64)
    band = ((np.abs(v[:, 0] - mid_x) < 0.12 * size) & (v[:, 1] < lip[1] - 0.15 * size)
            & (v[:, 1] > lip[1] - 0.9 * size) & (v[:, 2] > lip[2] - 0.6 * size))
    if not band.any():
        return lip + np.array([0.0, -0.45 * size, -0.05 * size])
    return v[band][np.argmax(v[band, 2])]


# -- the fields --------------------------------------------------------------------------------
def falloff(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``1 - smootherstep(t)`` on t in 0..1 (1 before, 0 after) and its derivative: C2 at both
    ends, so a field's core and border leave no crease in a shaded surface."""
    t = np.clip(t, 0.0, 1.0)
    return 1.0 - t ** 3 * (10 - 15 * t + 6 * t * t), -30.0 * t * t * (1 - t) ** 2


@dataclass
class Bump:
    """``u(x) = w(rho(x)) (A (x - c) + b)``: a local linear change ``A`` about ``c`` and a move
    ``b``, full inside the core (``rho <= core``) and fading to 0 at ``rho = 1``.

    ``rho`` is the ellipsoidal distance from ``c`` with semi-axes ``radii_pos`` on the + side of
    each axis and ``radii_neg`` on the - side (C1 across the axes' planes).
    """

    centre: np.ndarray             # (3,)
    radii_pos: np.ndarray          # (3,) metres
    radii_neg: np.ndarray          # (3,) metres
    linear: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))   # A (3, 3)
    shift: np.ndarray = field(default_factory=lambda: np.zeros(3))         # b (3,) metres
    core: float = 0.0

    def _falloff(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(d = x - c (n, 3), w (n,), grad w (n, 3))."""
        d = x - self.centre
        radii = np.where(d >= 0, self.radii_pos, self.radii_neg)
        q = d / radii
        rho = np.linalg.norm(q, axis=-1)
        w, dw = falloff((rho - self.core) / (1.0 - self.core))
        grad_rho = q / radii / np.maximum(rho, 1e-12)[:, None]
        return d, w, (dw / (1.0 - self.core))[:, None] * grad_rho

    def rho(self, x: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(x) - self.centre
        return np.linalg.norm(d / np.where(d >= 0, self.radii_pos, self.radii_neg), axis=-1)

    def displacement(self, x: np.ndarray) -> np.ndarray:
        d, w, _ = self._falloff(x)
        return w[:, None] * (d @ self.linear.T + self.shift)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        d, w, grad = self._falloff(x)
        value = d @ self.linear.T + self.shift
        return w[:, None, None] * self.linear + value[:, :, None] * grad[:, None, :]

    def keep_off(self, points: np.ndarray) -> None:
        """Shrink the support so that no point this field would move lies inside it."""
        away = np.linalg.norm((points - self.centre) @ self.linear.T + self.shift, axis=-1) > 1e-12
        if away.any():
            nearest = float(self.rho(points[away]).min())
            if nearest < 1.0:
                self.radii_pos = self.radii_pos * nearest
                self.radii_neg = self.radii_neg * nearest


@dataclass
class RadialScale:
    """A scaling by ``1 + a`` about ``c`` that is uniform inside the ball of radius ``core`` and
    fades out by ``radius``: ``u(x) = delta(r) (x - c) / r``, ``r = |x - c|``, with
    ``delta(r) = a sat(r) W(r)``: ``sat`` is ``r`` up to ``core``, then bends (over ``2 knee``)
    to the constant ``core + knee``; ``W`` falls from 1 at ``fade`` to 0 at ``radius``.

    A radial map: it commutes with every rotation about ``c`` (an eye turning about its joint).
    Its Jacobian has eigenvalues ``1 + delta / r`` (twice) and ``1 + delta'`` (along x - c), so
    it is injective while ``a (core + knee) max|W'| < 1``, i.e. about
    ``1.875 a (core + knee) / (radius - fade) < 1``.
    """

    centre: np.ndarray
    amount: float
    core: float
    knee: float
    fade: float
    radius: float

    def _profile(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(delta / r, delta') for distances r (n,)."""
        t = (r - self.core) / (2 * self.knee)
        bent, slope = _ramp_integral(t)
        sat = np.where(t <= 0, r, self.core + 2 * self.knee * (np.maximum(t, 0) - bent))
        sat_slope = 1.0 - slope
        w, dw = falloff((r - self.fade) / (self.radius - self.fade))
        dw = dw / (self.radius - self.fade)
        ratio = np.where(t <= 0, 1.0, sat / np.maximum(r, 1e-12))
        return self.amount * ratio * w, self.amount * (sat_slope * w + sat * dw)

    def displacement(self, x: np.ndarray) -> np.ndarray:
        d = x - self.centre
        ratio, _ = self._profile(np.linalg.norm(d, axis=-1))
        return ratio[:, None] * d

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        d = x - self.centre
        r = np.linalg.norm(d, axis=-1)
        ratio, slope = self._profile(r)
        n = d / np.maximum(r, 1e-12)[:, None]
        return ratio[:, None, None] * np.eye(3) + (slope - ratio)[:, None, None] * (
            n[:, :, None] * n[:, None, :])

    def keep_off(self, points: np.ndarray) -> None:
        """Shrink the fade so that no point outside the core lies inside it (points in the core
        are scaled uniformly about the centre: the eye's own eyeball)."""
        r = np.linalg.norm(points - self.centre, axis=-1)
        away = r[r > self.core + 1e-9]
        if len(away) and away.min() < self.radius:
            factor = float(away.min()) / self.radius
            self.fade, self.radius = self.fade * factor, float(away.min())


def _ramp_integral(t: np.ndarray) -> np.ndarray:
    """The integral from 0 to t of smoothstep (0 before 0, t - 1/2 after 1), and smoothstep."""
    inside = np.clip(t, 0.0, 1.0)
    integral = np.where(t <= 1.0, inside ** 3 - inside ** 4 / 2, t - 0.5)
    return np.where(t <= 0.0, 0.0, integral), inside * inside * (3 - 2 * inside)


@dataclass
class Lift:
    """``u(x) = (0, a S(y), 0) G(x)``: a vertical stretch by ``a`` between ``y0`` and ``y1``
    (``S' = 1`` there, easing in and out over ``ramp``, 0 below ``y0``, constant above
    ``y1 + ramp``), inside the ball of radius ``inner`` about ``centre``, fading out by ``outer``."""

    amount: float
    y0: float
    y1: float
    ramp: float
    centre: np.ndarray
    inner: float
    outer: float

    def _parts(self, x):
        lo, slope_lo = _ramp_integral((x[:, 1] - self.y0) / self.ramp)
        hi, slope_hi = _ramp_integral((x[:, 1] - self.y1) / self.ramp)
        s, ds = self.ramp * (lo - hi), slope_lo - slope_hi
        d = x - self.centre
        r = np.linalg.norm(d, axis=-1)
        g, dg = falloff((r - self.inner) / (self.outer - self.inner))
        grad_g = (dg / (self.outer - self.inner) / np.maximum(r, 1e-12))[:, None] * d
        return s, ds, g, grad_g

    def displacement(self, x: np.ndarray) -> np.ndarray:
        s, _, g, _ = self._parts(x)
        out = np.zeros_like(x)
        out[:, 1] = self.amount * s * g
        return out

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        s, ds, g, grad_g = self._parts(x)
        out = np.zeros((len(x), 3, 3))
        out[:, 1, :] = self.amount * s[:, None] * grad_g
        out[:, 1, 1] += self.amount * ds * g
        return out


@dataclass
class Deformation:
    """``D(x) = x + sum of the fields' displacements``; ``jacobian`` is ``dD/dx``."""

    fields: dict[str, list[Any]]   # component name -> its fields

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        flat = x.reshape(-1, 3)
        out = flat.copy()
        for parts in self.fields.values():
            for part in parts:
                out += part.displacement(flat)
        return out.reshape(x.shape)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """(..., 3) -> (..., 3, 3)."""
        x = np.asarray(x, np.float64)
        flat = x.reshape(-1, 3)
        out = np.broadcast_to(np.eye(3), (len(flat), 3, 3)).copy()
        for parts in self.fields.values():
            for part in parts:
                out += part.jacobian(flat)
        return out.reshape(x.shape + (3,))


# -- the components, placed on the face --------------------------------------------------------
def build_deformation(anchors: dict[str, np.ndarray], joints: np.ndarray, mesh_vertices: np.ndarray,
                      components: dict[str, float]) -> Deformation:
    """The deformation for ``components`` (name -> strength 0..1) on one face.

    Sizes are in eye distances ``E = |eye_L - eye_R|`` (the eye joints), so the fields scale with
    the head. Every component leaves the five ``joints`` (5, 3) where they are. A component's
    builder takes the anchors, the protected points (the joints first), E, its strength and the
    neutral mesh, and returns its fields.
    """
    joints = np.asarray(joints, np.float64)
    size = float(np.linalg.norm(joints[3] - joints[4]))
    if not size > 1e-3:
        raise InputError(f"the eye joints are {size * 1000:.2f} mm apart; proportions need the "
                         "avatar's eye_L and eye_R joints at the eyeball centres")
    a = {**anchors, "chin": chin_point(anchors, mesh_vertices, size)}
    protected = protected_points(joints, size)
    builders = {"eyes": _eyes, "nose": _nose, "mouth": _mouth, "chin": _chin, "cheeks": _cheeks,
                "forehead": _forehead}
    fields_: dict[str, list[Any]] = {}
    for name, strength in components.items():
        if strength:
            parts = builders[name](a, protected, size, float(strength), np.asarray(mesh_vertices))
            for part in parts:
                if hasattr(part, "keep_off"):
                    part.keep_off(protected)
            fields_[name] = parts
    deformation = Deformation(fields_)
    moved = float(np.abs(deformation(joints) - joints).max()) if fields_ else 0.0
    if moved > JOINT_TOLERANCE_M:  # Lift keeps y0 above the joints, Bumps shrink: never happens
        raise InputError(f"proportions would move a joint by {moved * 1000:.2f} mm")
    return deformation


EYEBALL_RADIUS_E = 0.2   # the ball around each eye joint that only the eye component moves


def protected_points(joints: np.ndarray, size: float, n: int = 96) -> np.ndarray:
    """The five joints, then points filling the eyeball balls (radius 0.2 E about each eye
    joint: n on the sphere, n at half the radius): no component but the eye's own may move them,
    so joints stay fixed and an eye's rotation about its joint commutes with ``D``."""
    k = np.arange(n) + 0.5
    polar, azimuth = np.arccos(1 - 2 * k / n), np.pi * (1 + 5 ** 0.5) * k
    sphere = np.stack([np.sin(polar) * np.cos(azimuth), np.cos(polar),
                       np.sin(polar) * np.sin(azimuth)], axis=1)
    balls = [joints[j] + radius * EYEBALL_RADIUS_E * size * sphere
             for j in (3, 4) for radius in (1.0, 0.5)]
    return np.concatenate([joints, *balls])


def _eyes(a, protected, size, s, mesh):
    """Each eye and its lids scaled by up to 1.45 about the eye joint (the eyeball's centre):
    uniform inside 0.2 E (eyeball and lids), so the eye still turns about its joint; the
    skin around takes up the difference out to 0.78 E (short of the other eyeball)."""
    return [RadialScale(protected[j].copy(), 0.45 * s, core=0.2 * size, knee=0.05 * size,
                        fade=0.22 * size, radius=0.78 * size) for j in (3, 4)]


def _nose(a, protected, size, s, mesh):
    """A smaller nose: its tip, wings and base scaled toward a point just above the tip (so it
    gets shorter from below, narrower and less protruding: by up to 0.28 across, 0.35 along y,
    0.3 along z), and its ridge flattened (z, up to 0.18); the bridge between the eyes stays."""
    base, bridge, tip = a["nose_base"], a["nose_bridge"], a["nose_tip"]
    wings = 0.5 * (a["nose_wing_L"] + a["nose_wing_R"])
    half_width = max(0.5 * abs(a["nose_wing_L"][0] - a["nose_wing_R"][0]), 0.1 * size)
    length = max(bridge[1] - base[1], 0.2 * size)
    back = wings[2] - 0.1 * size
    core = 0.55
    centre = np.array([base[0], tip[1] + 0.1 * length, back])
    radii_pos = np.array([half_width / core + 0.15 * size,
                          max(0.6 * (bridge[1] - centre[1]), 0.1 * size),
                          max(tip[2] - back, 0.1 * size) / core])
    radii_neg = np.array([radii_pos[0], 1.05 * max(centre[1] - base[1], 0.05 * size) / core,
                          0.25 * size])
    shrink = Bump(centre, radii_pos, radii_neg, linear=-s * np.diag([0.28, 0.35, 0.3]), core=core)
    ridge_centre = np.array([base[0], 0.5 * (base[1] + bridge[1]), back])
    half_length = 0.5 * length + 0.15 * size
    ridge = Bump(ridge_centre, np.array([0.35 * size, half_length, radii_pos[2]]),
                 np.array([0.35 * size, half_length, 0.4 * size]),
                 linear=-s * np.diag([0.0, 0.0, 0.18]), core=0.6)
    return [shrink, ridge]


def _mouth(a, protected, size, s, mesh):
    """The mouth narrower (and a little shorter) about its centre."""
    corners = 0.5 * (a["mouth_L"] + a["mouth_R"])
    lips = 0.5 * (a["lip_upper"] + a["lip_lower"])
    centre = np.array([corners[0], lips[1], 0.5 * (corners[2] + lips[2])])
    half_width = 0.5 * abs(a["mouth_L"][0] - a["mouth_R"][0])
    radii = np.array([1.9 * half_width, 0.5 * size, 0.5 * size])
    return [Bump(centre, radii, radii.copy(), linear=-s * np.diag([0.4, 0.12, 0.1]), core=0.5)]


def _chin(a, protected, size, s, mesh):
    """The chin shorter (pulled up toward the lower lip), blunter and a little wider."""
    lip, chin = a["lip_lower"], a["chin"]
    drop = max(lip[1] - chin[1], 0.2 * size)
    centre = np.array([chin[0], lip[1], chin[2] - 0.2 * size])
    radii_pos = np.array([0.8 * size, 0.3 * size, 0.7 * size])
    radii_neg = np.array([0.8 * size, 2.6 * drop, 0.7 * size])
    return [Bump(centre, radii_pos, radii_neg, linear=s * np.diag([0.12, -0.3, -0.12]), core=0.3)]


def _cheeks(a, protected, size, s, mesh):
    """The lower face widened about the midline (cheeks and jaw line out): rounder, less V."""
    corners = 0.5 * (a["mouth_L"] + a["mouth_R"])
    centre = corners + np.array([0.0, -0.1 * size, -0.6 * size])
    radii_pos = np.array([1.3 * size, 0.75 * size, 0.9 * size])
    radii_neg = np.array([1.3 * size, 0.7 * size, 0.9 * size])
    return [Bump(centre, radii_pos, radii_neg, linear=s * np.diag([0.12, -0.02, 0.0]), core=0.4)]


def _forehead(a, protected, size, s, mesh):
    """A vertical stretch of the head above the brows (a higher forehead and crown)."""
    brows = 0.5 * (a["brow_L"] + a["brow_R"])
    ramp = 0.35 * size
    y0 = max(brows[1] + 0.05 * size, float(protected[:, 1].max()))
    mesh = np.asarray(mesh, np.float64)
    top = float(mesh[:, 1].max())
    y1 = max(top - ramp, y0 + ramp)
    above = mesh[mesh[:, 1] > y0]
    centre = np.array([brows[0], y0, 0.5 * (above[:, 2].min() + above[:, 2].max())]) \
        if len(above) else np.array([brows[0], y0, brows[2]])
    inner = 1.05 * float(np.linalg.norm(above - centre, axis=-1).max()) if len(above) else size
    return [Lift(0.25 * s, y0, y1, ramp, centre, inner, 2.0 * inner)]


# -- Gaussians under D ---------------------------------------------------------------------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``w, x, y, z`` (n, 4) -> rotation matrices (n, 3, 3)."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
                    axis=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) -> unit quaternions ``w, x, y, z`` (n, 4), w >= 0."""
    trace = np.trace(m, axis1=-2, axis2=-1)
    candidates = np.stack([  # 4q_i * q_j rows for i = w, x, y, z; take the best-conditioned
        np.stack([1 + trace, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        np.stack([m[:, 2, 1] - m[:, 1, 2], 1 + 2 * m[:, 0, 0] - trace, m[:, 0, 1] + m[:, 1, 0],
                  m[:, 0, 2] + m[:, 2, 0]], -1),
        np.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 + 2 * m[:, 1, 1] - trace,
                  m[:, 1, 2] + m[:, 2, 1]], -1),
        np.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1],
                  1 + 2 * m[:, 2, 2] - trace], -1)], axis=1)
    diagonal = np.stack([1 + trace, 1 + 2 * m[:, 0, 0] - trace, 1 + 2 * m[:, 1, 1] - trace,
                         1 + 2 * m[:, 2, 2] - trace], -1)
    q = candidates[np.arange(len(m)), np.argmax(diagonal, axis=-1)]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products ``a b`` of quaternions ``w, x, y, z`` (broadcasting (..., 4))."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


_PERMUTATIONS = np.array([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def transform_covariances(log_scales: np.ndarray, quats: np.ndarray,
                          jacobians: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussians under a local linear map: ``Sigma' = J Sigma J^T``.

    Each Gaussian keeps its axes in their order: new axis ``a`` is the image of old axis ``a``
    (the singular vectors of ``J R S`` are matched to the old axes), so blendshape offsets of
    the log-scales still mean what they meant.

    Args:
        log_scales: (n, 3) natural log of the standard deviations.
        quats: (n, 4) rotations ``w, x, y, z`` (any norm).
        jacobians: (n, 3, 3) ``J`` at each Gaussian.

    Returns:
        ``log_scales'`` (n, 3) and ``r`` (n, 4): the unit quaternion that turns the old frame
        into the new one (new quaternion ``= r q``, which keeps the norm of ``q``).
    """
    unit = quats / np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    rotation = quat_to_matrix(unit)
    columns = jacobians @ rotation * np.exp(log_scales)[:, None, :]      # J R S
    u, sigma, vt = np.linalg.svd(columns)
    v = np.swapaxes(vt, -1, -2)                                           # v[n, a, i]
    scores = np.abs(v[:, np.arange(3)[None, :], _PERMUTATIONS]).sum(axis=-1)   # (n, 6)
    chosen = _PERMUTATIONS[np.argmax(scores, axis=-1)]                    # (n, 3): axis a <- i
    rows = np.arange(len(v))[:, None]
    signs = np.sign(v[rows, np.arange(3)[None, :], chosen])
    signs[signs == 0] = 1.0
    new_rotation = np.take_along_axis(u, chosen[:, None, :], axis=2) * signs[:, None, :]
    flip = np.linalg.det(new_rotation) < 0
    new_rotation[flip, :, 2] *= -1.0
    new_log_scales = np.log(np.take_along_axis(sigma, chosen, axis=1))
    relative = quat_multiply(matrix_to_quat(new_rotation), unit * np.array([1.0, -1, -1, -1]))
    relative *= np.where(relative[:, :1] < 0, -1.0, 1.0)   # the short way round: undone exactly
    return new_log_scales, relative


# -- the avatar under D --------------------------------------------------------------------------
def rest_avatar(avatar: Avatar, anchors: dict[str, np.ndarray]) -> Avatar:
    """The avatar before its proportions (itself when it has none).

    Positions come back from the rest arrays; the Gaussians' covariances and rotations (not
    stored twice) are mapped back with the inverse Jacobian of the recorded deformation, rebuilt
    from ``anchors`` and the meta's component strengths (exact up to float32 rounding).
    """
    if not avatar.has_proportions:
        return avatar
    rest = replace(avatar, means=avatar.rest_means, delta_means=avatar.rest_delta_means,
                   mesh_vertices=avatar.rest_mesh_vertices,
                   mesh_expression_dirs=avatar.rest_mesh_expression_dirs,
                   **dict.fromkeys(REST_FIELDS), proportions=None)
    previous = build_deformation(anchors, rest.joint_positions, rest.mesh_vertices,
                                 {k: float(v) for k, v in avatar.proportions["components"].items()
                                  if k in COMPONENTS})
    log_scales, quats, delta_quats = _turn_gaussians(
        rest.means.astype(np.float64), avatar.log_scales, avatar.quats, avatar.delta_quats,
        previous, inverse=True)
    return replace(rest, log_scales=log_scales, quats=quats, delta_quats=delta_quats)


def _turn_gaussians(means: np.ndarray, log_scales: np.ndarray, quats: np.ndarray,
                    delta_quats: np.ndarray, deformation: Deformation, inverse: bool = False):
    """Log-scales, quaternions and quaternion deltas of Gaussians at ``means`` after ``D``
    (``Sigma' = J Sigma J^T``), or before it (``inverse``: ``J^-1``); ``q' = r q``,
    ``dq' = r dq``. Gaussians outside every field (``J = I``) are left as they are."""
    jacobians = deformation.jacobian(means)
    moved = np.any(jacobians != np.eye(3), axis=(1, 2))
    log_scales, quats, delta_quats = log_scales.copy(), quats.copy(), delta_quats.copy()
    if moved.any():
        linear = np.linalg.inv(jacobians[moved]) if inverse else jacobians[moved]
        new_log, relative = transform_covariances(log_scales[moved].astype(np.float64),
                                                  quats[moved].astype(np.float64), linear)
        log_scales[moved] = new_log
        quats[moved] = quat_multiply(relative, quats[moved].astype(np.float64))
        delta_quats[:, moved] = quat_multiply(relative[None], delta_quats[:, moved].astype(np.float64))
    return log_scales, quats, delta_quats


def _deform_offsets(deformation: Deformation, points: np.ndarray, offsets: np.ndarray,
                    moved: np.ndarray, chunk: int = 4) -> np.ndarray:
    """``D(points + offsets[k]) - D(points)`` for every k, float64 (K, n, 3); rows of points
    outside every field (``moved`` false) keep their offsets."""
    out = offsets.astype(np.float64)
    if not moved.any():
        return out
    base = deformation(points[moved])
    for start in range(0, len(offsets), chunk):
        block = points[moved][None] + out[start:start + chunk][:, moved]
        out[start:start + chunk, moved] = deformation(block) - base[None]
    return out


def deform_avatar(avatar: Avatar, deformation: Deformation, info: dict[str, Any]) -> Avatar:
    """The avatar (without proportions) under ``D`` (docs/FORMAT.md, "Proportions"), with its
    rest arrays and the meta ``info``."""
    if avatar.has_proportions:
        raise ValueError("deform_avatar takes an avatar without proportions (rest_avatar)")
    means = avatar.means.astype(np.float64)
    moved = np.any(deformation(means) != means, axis=1) | np.any(
        deformation.jacobian(means) != np.eye(3), axis=(1, 2))
    new_means = means.copy()
    new_means[moved] = deformation(means[moved])
    log_scales, quats, delta_quats = _turn_gaussians(means, avatar.log_scales, avatar.quats,
                                                     avatar.delta_quats, deformation)
    vertices = avatar.mesh_vertices.astype(np.float64)
    return replace(
        avatar, means=new_means.astype(np.float32), log_scales=log_scales, quats=quats,
        delta_quats=delta_quats,
        delta_means=_deform_offsets(deformation, means, avatar.delta_means, moved).astype(
            avatar.delta_means.dtype),
        mesh_vertices=deformation(vertices).astype(np.float32),
        mesh_expression_dirs=_deform_offsets(deformation, vertices, avatar.mesh_expression_dirs,
                                             np.ones(len(vertices), bool)).astype(np.float32),
        rest_means=avatar.means, rest_delta_means=avatar.delta_means,
        rest_mesh_vertices=avatar.mesh_vertices,
        rest_mesh_expression_dirs=avatar.mesh_expression_dirs, proportions=dict(info))


def apply_proportions(avatar: Avatar, spec: str | ProportionsSpec,
                      anchors: dict[str, np.ndarray]) -> Avatar:
    """The avatar with the proportions ``spec`` (``PRESET[:STRENGTH]``), from its rest arrays.

    ``anchors``: the named points of ``ANCHOR_LANDMARKS`` on the avatar's rest (neutral) mesh.
    Strength 0 or preset ``none`` gives the avatar without proportions (no rest arrays).
    ``backend.headmodel.proportions.apply_proportions`` finds the anchors itself.
    """
    spec = parse_spec(spec)
    rest = rest_avatar(avatar, anchors)
    if spec.is_identity:
        return rest
    components = spec.components()
    deformation = build_deformation(anchors, rest.joint_positions, rest.mesh_vertices, components)
    info = {"preset": spec.preset, "strength": float(spec.strength), "components": components}
    return deform_avatar(rest, deformation, info)
