"""Identity and expression directions of the built-in head, as smooth, localized displacement fields.

Every field is written in centimetres from anchors at MediaPipe landmarks (mouth corners, eyelids,
brows, nose wings, cheeks), a compact bump ``(1 - (d / r)^2)^2`` and, for one-sided shapes, a soft
left/right mask. Eyeballs never deform: identity fields move them rigidly with their centre,
expression fields leave them alone (gaze is the eye joints).
"""

from __future__ import annotations

import numpy as np

from . import mesh

# FaceMesh ids. Index 0 of each pair is the subject's left side (+X), index 1 the right side.
MOUTH_CORNER = (291, 61)
EYE_UPPER, EYE_LOWER = (386, 159), (374, 145)
BROW_MIDDLE, BROW_INNER = (334, 105), (336, 107)
NOSE_WING = (294, 64)
CHEEK = (280, 50)
UPPER_LIP, LOWER_LIP, CHIN, NOSE_TIP, FOREHEAD = 0, 17, 152, 1, 151


def bump(points: np.ndarray, centre: np.ndarray, radius, power: float = 2.0) -> np.ndarray:
    """Compact smooth bump, 1 at ``centre``, 0 beyond ``radius`` (scalar or per-axis). (N, 3) -> (N,)."""
    d2 = (((points - centre) / np.asarray(radius, dtype=float)) ** 2).sum(axis=1)
    return np.clip(1.0 - d2, 0.0, 1.0) ** power


def side_mask(points: np.ndarray, sign: float, width: float = 0.6) -> np.ndarray:
    """Soft mask of one side of the face: sign +1 = subject's left (+X)."""
    t = np.clip(0.5 + sign * points[:, 0] / (2 * width), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def regions(surface: dict, weights: np.ndarray) -> dict:
    """What the fields need: head vertex mask, eye contour functions, lip split, normals."""
    vertices, faces = surface["vertices"], surface["faces"]
    n_head = int(surface["eye_R_vertices"][0])
    eyes = {}
    for sign, side in ((1.0, "L"), (-1.0, "R")):
        loop = vertices[surface[f"eye_{side}_loop"]]
        order = np.argsort(loop[:, 0])
        corners = loop[order[[0, -1]]]
        line = np.interp(loop[:, 0], corners[:, 0], corners[:, 1])
        upper, lower = loop[loop[:, 1] >= line], loop[loop[:, 1] < line]
        upper = np.concatenate([upper, corners])
        lower = np.concatenate([lower, corners])
        eyes[side] = {"sign": sign, "x0": corners[0, 0], "x1": corners[1, 0],
                      "upper": upper[np.argsort(upper[:, 0])], "lower": lower[np.argsort(lower[:, 0])],
                      "centre": loop.mean(axis=0)}
    return {"vertices": vertices, "n_head": n_head, "eyes": eyes, "jaw": weights[:, 2],
            "normals": mesh.vertex_normals(vertices, faces), "surface": surface}


def _eyelid(points: np.ndarray, eye: dict, lid: str, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Weight of each point as part of the upper or lower lid, and the opening height at its x."""
    x = points[:, 0]
    up = np.interp(x, eye["upper"][:, 0], eye["upper"][:, 1])
    low = np.interp(x, eye["lower"][:, 0], eye["lower"][:, 1])
    opening = np.maximum(up - low, 0.0)
    half = 0.5 * (eye["x1"] - eye["x0"])
    middle = 0.5 * (eye["x1"] + eye["x0"])
    across = np.clip(1.0 - ((x - middle) / (half + 0.5)) ** 2, 0.0, 1.0)
    if lid == "upper":
        t = np.clip((points[:, 1] - up) / reach, 0.0, None)
        inside = points[:, 1] >= low + 0.5 * opening
    else:
        t = np.clip((low - points[:, 1]) / reach, 0.0, None)
        inside = points[:, 1] <= low + 0.5 * opening
    near = np.linalg.norm(points - eye["centre"], axis=1) < 3.0
    weight = np.clip(1.0 - t, 0.0, 1.0) ** 2 * across * inside * near
    return weight, opening


def _eye_fields(p: np.ndarray, r: dict, side: str) -> dict:
    eye = r["eyes"][side]
    upper, opening = _eyelid(p, eye, "upper", reach=1.0)
    lower, _ = _eyelid(p, eye, "lower", reach=1.2)
    cheek = bump(p, eye["centre"] + np.array([0.0, -1.6, 0.2]), (2.0, 1.2, 2.0))
    blink = np.stack([0 * opening, -opening * upper, 0.25 * opening * upper], axis=1)
    wide = np.stack([0 * opening, 0.3 * upper, 0.05 * upper], axis=1)
    squint = np.stack([0 * opening, 0.35 * opening * lower + 0.2 * cheek * (1 - lower), 0.1 * cheek], 1)
    return {"blink": blink, "eye_wide": wide, "squint": squint}


def _one_sided(p: np.ndarray, r: dict, sign: float, k: int) -> dict:
    """The left (k=0, sign=+1) or right (k=1, sign=-1) one-sided fields."""
    v = r["vertices"]
    corner, brow, wing, cheek = v[MOUTH_CORNER[k]], v[BROW_MIDDLE[k]], v[NOSE_WING[k]], v[CHEEK[k]]
    side = side_mask(p, sign)
    eye = r["eyes"]["L" if k == 0 else "R"]
    above_eye = np.clip((p[:, 1] - np.interp(p[:, 0], eye["upper"][:, 0], eye["upper"][:, 1]) - 0.2)
                        / 0.6, 0.0, 1.0)
    at_corner = bump(p, corner, (2.4, 2.2, 2.4)) * side
    at_brow = bump(p, brow + [0.0, 0.6, 0.0], (3.0, 2.4, 3.0)) * side * above_eye
    at_cheek = bump(p, cheek + [sign * 0.3, -0.8, 0.3], 2.2) * side
    at_wing = bump(p, wing + [0.0, 0.3, 0.0], 1.4) * side
    dirs = lambda dx, dy, dz, w: np.stack([dx * w, dy * w, dz * w], axis=1)
    return {
        "smile": dirs(sign * 0.35, 0.45, -0.2, at_corner) + dirs(0.0, 0.25, 0.1, at_cheek),
        "frown": dirs(sign * 0.05, -0.4, 0.0, at_corner),
        "lip_stretch": dirs(sign * 0.45, -0.1, -0.1, at_corner),
        "brow_raise": dirs(0.0, 0.5, 0.05, at_brow),
        "brow_lower": dirs(-sign * 0.15, -0.35, 0.05, at_brow),
        "nose_sneer": dirs(0.0, 0.3, 0.1, at_wing) + dirs(0.0, 0.15, 0.0,
                                                          bump(p, wing + [0, -0.9, 0], 1.2) * side),
    }


def _central(p: np.ndarray, r: dict) -> dict:
    """Fields centred on the midline: lips, inner brows, cheeks together."""
    v, jaw = r["vertices"], r["jaw"][: len(p)]
    mouth = 0.5 * (v[MOUTH_CORNER[0]] + v[MOUTH_CORNER[1]])
    half_width = 0.5 * abs(v[MOUTH_CORNER[0], 0] - v[MOUTH_CORNER[1], 0])
    lips = bump(p, mouth, (half_width + 1.0, 1.8, 2.5))
    tight = bump(p, mouth, (half_width + 0.4, 1.1, 2.0))
    lower = np.clip(jaw * 2.0 - 0.5, 0.0, 1.0)
    upper = 1.0 - lower
    toward_middle = -np.clip(p[:, 0] / (half_width + 1.0), -1.0, 1.0)
    inner_brow = bump(p, 0.5 * (v[BROW_INNER[0]] + v[BROW_INNER[1]]) + [0, 0.4, 0], (2.6, 2.0, 3.0))
    puff = sum(bump(p, v[CHEEK[k]] + [s * 0.2, -2.6, -0.4], 2.4) for k, s in ((0, 1), (1, -1)))
    n = r["normals"][: len(p)]
    stack = lambda *c: np.stack(c, axis=1)
    zero = np.zeros(len(p))
    return {
        "lip_pucker": stack(0.35 * toward_middle * lips, zero, 0.5 * lips),
        "lip_funnel": stack(zero, 0.2 * tight * (upper - lower), 0.35 * tight),
        "lip_press": stack(zero, 0.2 * tight * (lower - upper), -0.25 * tight),
        "mouth_left": stack(0.5 * lips, zero, zero),
        "mouth_right": stack(-0.5 * lips, zero, zero),
        "upper_lip_raise": stack(zero, 0.3 * bump(p, v[UPPER_LIP], (2.0, 1.0, 2.0)) * upper, zero),
        "lower_lip_depress": stack(zero, -0.35 * bump(p, v[LOWER_LIP], (2.0, 1.2, 2.0)) * lower, zero),
        "brow_inner_up": stack(zero, 0.45 * inner_brow, zero),
        "cheek_puff": 0.6 * puff[:, None] * n,
    }


EXPRESSION_ORDER = (
    "blink_L", "blink_R", "eye_wide_L", "eye_wide_R", "squint_L", "squint_R",
    "brow_raise_L", "brow_raise_R", "brow_lower_L", "brow_lower_R", "brow_inner_up",
    "smile_L", "smile_R", "frown_L", "frown_R", "lip_stretch_L", "lip_stretch_R",
    "lip_pucker", "lip_funnel", "lip_press", "mouth_left", "mouth_right",
    "upper_lip_raise", "lower_lip_depress", "cheek_puff", "nose_sneer_L", "nose_sneer_R",
)


def expression_basis(surface: dict, r: dict) -> tuple[np.ndarray, list[str]]:
    """(V, 3, K) expression directions in cm and their K names (``EXPRESSION_ORDER``)."""
    n_head = r["n_head"]
    p = r["vertices"][:n_head]
    fields = {}
    for side, sign, k in (("L", 1.0, 0), ("R", -1.0, 1)):
        for name, field in {**_eye_fields(p, r, side), **_one_sided(p, r, sign, k)}.items():
            fields[f"{name}_{side}"] = field
    fields.update(_central(p, r))
    directions = np.zeros((len(r["vertices"]), 3, len(EXPRESSION_ORDER)))
    for i, name in enumerate(EXPRESSION_ORDER):
        directions[:n_head, :, i] = fields[name]
    return directions, list(EXPRESSION_ORDER)


SHAPE_ORDER = ("head_width", "head_height", "head_depth", "face_length", "jaw_width", "chin_forward",
               "nose_prominence", "nose_width", "eye_spacing", "brow_ridge", "cheek_fullness",
               "lip_thickness", "forehead_slope")


def identity_basis(surface: dict, r: dict) -> tuple[np.ndarray, list[str]]:
    """(V, 3, S) identity directions in cm (about one standard deviation each) and their names."""
    v = r["vertices"]
    n_head = r["n_head"]
    points = np.concatenate([v[:n_head], surface["eye_L_centre"][None], surface["eye_R_centre"][None]])
    fields = _identity_fields(points, r)
    directions = np.zeros((len(v), 3, len(SHAPE_ORDER)))
    for i, name in enumerate(SHAPE_ORDER):
        field = fields[name]
        directions[:n_head, :, i] = field[:n_head]
        directions[surface["eye_L_vertices"], :, i] = field[n_head]
        directions[surface["eye_R_vertices"], :, i] = field[n_head + 1]
    return directions, list(SHAPE_ORDER)


def _identity_fields(p: np.ndarray, r: dict) -> dict:
    v, n = r["vertices"], len(p)
    zero = np.zeros(n)
    stack = lambda *c: np.stack(c, axis=1)
    centre = np.array([0.0, 1.5, -4.0])
    nose, chin = v[NOSE_TIP], v[CHIN]
    lower_face = np.clip((nose[1] - p[:, 1]) / 8.0, 0.0, 1.0) * (p[:, 1] > -13)
    front = np.clip((p[:, 2] + 2.0) / 4.0, 0.0, 1.0)
    nose_region = bump(p, nose + [0, 1.0, -1.0], (1.8, 3.0, 3.0))
    eyes = sum(s * bump(p, r["eyes"][side]["centre"], 2.2) for side, s in (("L", 1), ("R", -1)))
    brows = bump(p, 0.5 * (v[BROW_MIDDLE[0]] + v[BROW_MIDDLE[1]]), (6.0, 1.4, 3.0))
    cheeks = sum(bump(p, v[CHEEK[k]] + [0, -1.0, 0], 2.6) for k in (0, 1))
    mouth = 0.5 * (v[MOUTH_CORNER[0]] + v[MOUTH_CORNER[1]])
    lips = bump(p, mouth, (3.2, 1.6, 2.0))
    forehead = np.clip((p[:, 1] - 4.0) / 6.0, 0.0, 1.0) * front
    normals = np.concatenate([r["normals"][: r["n_head"]], np.zeros((2, 3))])[:n]
    return {
        "head_width": stack(0.05 * p[:, 0], zero, zero),
        "head_height": stack(zero, 0.05 * (p[:, 1] - centre[1]), zero),
        "head_depth": stack(zero, zero, 0.05 * (p[:, 2] - centre[2])),
        "face_length": stack(zero, -0.6 * lower_face, zero),
        "jaw_width": stack(0.08 * p[:, 0] * lower_face * (p[:, 1] < chin[1] + 6), zero, zero),
        "chin_forward": stack(zero, zero, 0.4 * bump(p, chin, 2.5)),
        "nose_prominence": stack(zero, zero, 0.35 * nose_region),
        "nose_width": stack(0.15 * p[:, 0] * nose_region, zero, zero),
        "eye_spacing": stack(0.2 * eyes, zero, zero),
        "brow_ridge": stack(zero, zero, 0.3 * brows),
        "cheek_fullness": 0.35 * cheeks[:, None] * normals,
        "lip_thickness": stack(zero, 0.1 * np.sign(p[:, 1] - mouth[1]) * lips, 0.15 * lips),
        "forehead_slope": stack(zero, zero, -0.4 * forehead),
    }
