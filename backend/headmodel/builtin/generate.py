"""Build the built-in head model from code: surface, eyeballs, rig and landmarks.

Steps (all in centimetres in MediaPipe's canonical axes, converted to metres at the end):
1. the face: MediaPipe's canonical face (468 landmarks), subdivided twice; the landmarks keep
   their positions and ids, the new vertices are smoothed; eyes and mouth stay open;
2. the skull and neck (``shape.py``) fill the rest, sharing the face oval as seam;
3. two UV-sphere eyeballs behind the eye openings;
4. joints regressed from vertices, harmonic jaw weights, neck/root weights along the neck;
5. landmarks: FaceMesh ids 0..467 are vertices, 468..477 (irises) lie on the eyeballs;
6. identity and expression directions (``expressions.py``).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from . import expressions, mesh, shape

EYE_RADIUS = 1.2        # cm, a human eyeball is about 24 mm across
IRIS_RADIUS = 0.58      # cm
EYE_SETBACK = 0.95      # cm from the eye opening's centroid to the eyeball centre
JOINT_TARGETS = {       # rest joint positions (cm); each is reproduced by a vertex combination
    "root": np.array([0.0, -14.5, -3.6]),
    "neck": np.array([0.0, -6.0, -4.2]),
    "jaw": np.array([0.0, -1.0, -3.2]),
}


def build_surface() -> dict:
    """Face + skull + neck as one mesh. Returns vertices, faces and the hole loops."""
    face_vertices, face_faces = mesh.read_canonical_face()
    for _ in range(2):
        face_vertices, face_faces = mesh.subdivide(face_vertices, face_faces)
    fixed = np.zeros(len(face_vertices), dtype=bool)
    fixed[:468] = True
    face_vertices = mesh.smooth(face_vertices, face_faces, fixed, iterations=10)
    loops = mesh.boundary_loops(face_faces)
    oval = max(loops, key=len)
    seam = np.linalg.norm(face_vertices[oval] - np.roll(face_vertices[oval], -1, axis=0), axis=1)
    back = shape.sample_back(face_vertices[oval], seam.mean(), far_spacing=1.3)
    back, back_faces = shape.triangulate_back(face_vertices[oval], back)
    back = shape.seam_correction(back, face_vertices[oval])
    lookup = np.concatenate([oval, len(face_vertices) + np.arange(len(back))])
    vertices = np.concatenate([face_vertices, back])
    faces = np.concatenate([face_faces, lookup[back_faces]])
    # A light smoothing of the seam band (never the landmarks) removes the crease at the oval.
    band = np.zeros(len(vertices), dtype=bool)
    band[lookup] = True
    keep = ~band
    keep[:468] = True
    vertices = mesh.smooth(vertices, faces, keep, iterations=6)
    holes = [loop for loop in loops if len(loop) != len(oval)]
    holes.sort(key=lambda loop: face_vertices[loop, 0].mean())   # right eye, mouth, left eye
    eyes, mouth = (holes[0], holes[2]), holes[1]
    return {"vertices": vertices, "faces": faces, "n_face": len(face_vertices),
            "eye_R_loop": eyes[0], "eye_L_loop": eyes[1], "mouth_loop": mouth}


def add_eyeballs(surface: dict) -> dict:
    """Append one closed eyeball per eye opening; returns the updated surface dict."""
    vertices, faces = surface["vertices"], surface["faces"]
    for side in ("R", "L"):
        opening = vertices[surface[f"eye_{side}_loop"]].mean(axis=0)
        centre = opening - np.array([0.0, 0.0, EYE_SETBACK])
        ball, ball_faces = mesh.uv_sphere(centre, EYE_RADIUS, rings=16, segments=24,
                                          axis=np.array([0.0, 0.0, 1.0]))
        surface[f"eye_{side}_vertices"] = len(vertices) + np.arange(len(ball))
        surface[f"eye_{side}_centre"] = centre
        faces = np.concatenate([faces, ball_faces + len(vertices)])
        vertices = np.concatenate([vertices, ball])
    surface["vertices"], surface["faces"] = vertices, faces
    return surface


def joint_regressor(surface: dict) -> np.ndarray:
    """(5, V) regressor; each row is a convex vertex combination that hits the joint's target."""
    vertices = surface["vertices"]
    n_head = surface["eye_R_vertices"][0]
    head = vertices[:n_head]
    regressor = np.zeros((5, len(vertices)))
    bands = {"root": (-17.5, -12.0, -99.0), "neck": (-10.0, -2.0, -99.0), "jaw": (-4.0, 2.0, -99.0)}
    for row, name in enumerate(("root", "neck", "jaw")):
        low, high, _ = bands[name]
        candidates = np.flatnonzero((head[:, 1] > low) & (head[:, 1] < high)
                                    & (np.abs(head[:, 0]) > 3.0) & (head[:, 2] < 0.5))
        regressor[row, candidates] = _convex_weights(head[candidates], JOINT_TARGETS[name])
    for row, side in ((3, "L"), (4, "R")):
        ids = surface[f"eye_{side}_vertices"]
        regressor[row, ids] = 1.0 / len(ids)
    return regressor


def _convex_weights(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one with weights @ points == target (least squares)."""
    a = np.concatenate([points.T, 100.0 * np.ones((1, len(points)))])
    b = np.concatenate([target, [100.0]])
    weights, _ = nnls(a, b, maxiter=20 * len(points))
    return weights / weights.sum()


def skinning_weights(surface: dict) -> np.ndarray:
    """(V, 5) weights: eyeballs to the eyes, a harmonic jaw field, the neck blending to the root."""
    vertices, faces = surface["vertices"], surface["faces"]
    n_head = surface["eye_R_vertices"][0]
    head, head_faces = vertices[:n_head], faces[np.all(faces < n_head, axis=1)]
    mouth = surface["mouth_loop"]
    lower_lip = mouth[head[mouth, 1] < _lip_split(head[mouth])]
    upper_lip = np.setdiff1d(mouth, lower_lip)
    known = np.zeros(n_head, dtype=bool)
    value = np.zeros(n_head)
    chin = (head[:, 1] < -6.0) & (head[:, 2] > -1.0) & (np.arange(n_head) < surface["n_face"])
    for ids, val in ((lower_lip, 1.0), (np.flatnonzero(chin), 1.0), (upper_lip, 0.0)):
        known[ids], value[ids] = True, val
    nose = (np.abs(head[:, 0]) < 3.0) & (head[:, 1] > -2.6)
    above = (head[:, 1] > -0.5) | nose | (head[:, 2] < -3.5) | (head[:, 1] < -12.5)
    known[above], value[above] = True, 0.0
    jaw = np.clip(mesh.harmonic_fill(n_head, head_faces, known, value), 0.0, 1.0)
    jaw = jaw * jaw * (3 - 2 * jaw)  # smoothstep: a firmer jaw, a soft cheek
    carried = np.clip((head[:, 1] + 15.0) / 5.0, 0.0, 1.0)
    carried = carried * carried * (3 - 2 * carried)  # 1: moves with the head (neck joint)
    weights = np.zeros((len(vertices), 5))
    weights[:n_head, 2] = jaw
    weights[:n_head, 1] = (1 - jaw) * carried
    weights[:n_head, 0] = (1 - jaw) * (1 - carried)
    weights[surface["eye_L_vertices"], 3] = 1.0
    weights[surface["eye_R_vertices"], 4] = 1.0
    return weights


def _lip_split(loop_points: np.ndarray) -> float:
    """The y between the upper and lower inner lip: the mouth corners' height."""
    corners = loop_points[np.argsort(loop_points[:, 0])[[0, -1]]]
    return float(corners[:, 1].mean()) + 1e-3


def landmarks(surface: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FaceMesh ids 0..477 embedded on the mesh. Returns faces (L,), barycentrics (L, 3), ids (L,)."""
    vertices, faces = surface["vertices"], surface["faces"]
    first_face = np.full(len(vertices), -1)
    corner = np.full(len(vertices), -1)
    for k in range(3):
        unset = first_face[faces[:, k]] < 0
        first_face[faces[unset, k]] = np.flatnonzero(unset)
        corner[faces[unset, k]] = k
    vertex_ids = list(range(468))
    for side in ("R", "L"):   # FaceMesh 468..472: the subject's right iris, 473..477: left
        ball = surface[f"eye_{side}_vertices"]
        centre = surface[f"eye_{side}_centre"]
        angle = np.arcsin(IRIS_RADIUS / EYE_RADIUS)
        front = np.array([0.0, 0.0, 1.0])
        points = [front] + [np.array([np.sin(angle) * dx, np.sin(angle) * dy, np.cos(angle)])
                            for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1))]
        for direction in points:
            target = centre + EYE_RADIUS * direction
            nearest = ball[np.argmin(np.linalg.norm(vertices[ball] - target, axis=1))]
            vertex_ids.append(int(nearest))
    vertex_ids = np.asarray(vertex_ids)
    bary = np.zeros((len(vertex_ids), 3))
    bary[np.arange(len(vertex_ids)), corner[vertex_ids]] = 1.0
    return first_face[vertex_ids].astype(np.int64), bary, np.arange(478, dtype=np.int64)


def generate() -> dict:
    """All arrays of the built-in model (metres) plus metadata, as a flat dict."""
    surface = add_eyeballs(build_surface())
    vertices = surface["vertices"]
    weights = skinning_weights(surface)
    regressor = joint_regressor(surface)
    landmark_faces, landmark_bary, landmark_ids = landmarks(surface)
    regions = expressions.regions(surface, weights)
    exprdirs, names = expressions.expression_basis(surface, regions)
    shapedirs, shape_names = expressions.identity_basis(surface, regions)
    scale = 0.01
    return {
        "v_template": vertices * scale, "faces": surface["faces"],
        "shapedirs": shapedirs * scale, "exprdirs": exprdirs * scale,
        "posedirs": np.zeros((36, vertices.size)), "J_regressor": regressor, "lbs_weights": weights,
        "landmark_faces": landmark_faces, "landmark_bary": landmark_bary, "landmark_ids": landmark_ids,
        "expression_names": names, "shape_names": shape_names,
        "region_eye_L": surface["eye_L_vertices"], "region_eye_R": surface["eye_R_vertices"],
        "region_mouth_loop": surface["mouth_loop"], "n_face_vertices": surface["n_face"],
    }
