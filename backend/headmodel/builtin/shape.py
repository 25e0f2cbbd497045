"""The cranium, neck and the seam to the face: the part of the built-in head outside the face oval.

The skull and neck are a smooth union of an ellipsoid and a rounded vertical cylinder (an implicit
surface, in centimetres, in the axes of MediaPipe's canonical face). It is star-shaped about
``CENTRE``, so the surface is sampled along rays and triangulated as the convex hull of the ray
directions (a Delaunay triangulation of the sphere); the triangles that fall inside the face
oval are dropped and the face mesh fills the hole, sharing the oval's vertices.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

CENTRE = np.array([0.0, 1.5, -4.0])             # ray origin, inside the skull
SKULL_CENTRE = np.array([0.0, 2.0, -4.4])
SKULL_RADII = np.array([7.7, 11.0, 9.8])        # half breadth, half height, half length (cm)
NECK_AXIS = np.array([0.0, -3.6])               # (x, z) of the neck's vertical axis
NECK_RADII = np.array([4.6, 4.9])               # half width, half depth
NECK_BOTTOM = -18.0                             # y of the neck's closed bottom
NECK_TOP = 0.0                                  # y where the neck cylinder ends inside the skull
NECK_ROUNDING = 1.0                             # rounds the bottom edge (cm)
BLEND = 2.5                                     # smooth-union radius (cm)


def implicit(points: np.ndarray) -> np.ndarray:
    """Approximate signed distance of the skull-and-neck surface (negative inside). (N, 3) -> (N,)."""
    q = (points - SKULL_CENTRE) / SKULL_RADII
    skull = (np.linalg.norm(q, axis=1) - 1.0) * SKULL_RADII.min()
    flat = (points[:, [0, 2]] - NECK_AXIS) / NECK_RADII
    side = (np.linalg.norm(flat, axis=1) - 1.0) * NECK_RADII.min()
    ends = np.maximum(NECK_BOTTOM - points[:, 1], points[:, 1] - NECK_TOP)
    outside = np.sqrt(np.maximum(side, 0) ** 2 + np.maximum(ends, 0) ** 2)
    neck = outside + np.minimum(np.maximum(side, ends), 0.0) - NECK_ROUNDING
    h = np.clip(0.5 + 0.5 * (neck - skull) / BLEND, 0.0, 1.0)
    return neck * (1 - h) + skull * h - BLEND * h * (1 - h)


def ray_radius(directions: np.ndarray, iterations: int = 40) -> np.ndarray:
    """Distance from ``CENTRE`` to the implicit surface along unit directions. (N, 3) -> (N,)."""
    low = np.zeros(len(directions))
    high = np.full(len(directions), 40.0)
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        inside = implicit(CENTRE + directions * mid[:, None]) < 0
        low = np.where(inside, mid, low)
        high = np.where(inside, high, mid)
    return 0.5 * (low + high)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fibonacci_directions(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors."""
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    phi = i * np.pi * (3 - np.sqrt(5))
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)


def inside_oval(directions: np.ndarray, oval_directions: np.ndarray) -> np.ndarray:
    """Whether unit directions fall inside the oval (a spherical polygon around +Z). (N,) bool.

    Both are projected onto the plane tangent to the oval's mean direction (gnomonic projection),
    where the usual even-odd rule applies.
    """
    pole = _unit(oval_directions.mean(axis=0))
    u = _unit(np.cross([0.0, 1.0, 0.0], pole))
    v = np.cross(pole, u)

    def project(d):
        depth = np.maximum(d @ pole, 1e-6)
        return np.stack([(d @ u) / depth, (d @ v) / depth], axis=1), d @ pole > 0

    points, front = project(directions)
    polygon, _ = project(oval_directions)
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    crosses = ((y0 > y) != (y1 > y)) & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0 + 1e-12))
    return front & (crosses.sum(axis=1) % 2 == 1)


def sample_back(oval_points: np.ndarray, seam_spacing: float, far_spacing: float,
                n_candidates: int = 60000) -> np.ndarray:
    """Surface points of skull and neck outside the face oval, spaced finely near the seam.

    A greedy Poisson-disk selection over dense ray samples; the spacing grows from
    ``seam_spacing`` at the oval to ``far_spacing`` 6 cm away. Returns (N, 3) points in cm.
    """
    oval_dirs = _unit(oval_points - CENTRE)
    dirs = fibonacci_directions(n_candidates)
    dirs = dirs[~inside_oval(dirs, oval_dirs)]
    points = CENTRE + dirs * ray_radius(dirs)[:, None]
    seam_distance, _ = cKDTree(oval_points).query(points)
    spacing = seam_spacing + (far_spacing - seam_spacing) * np.clip(seam_distance / 6.0, 0.0, 1.0)
    keep = seam_distance > 0.8 * seam_spacing
    points, spacing, seam_distance = points[keep], spacing[keep], seam_distance[keep]
    order = np.argsort(seam_distance)
    tree = cKDTree(points)
    taken = np.zeros(len(points), dtype=bool)
    blocked = np.zeros(len(points), dtype=bool)
    for i in order:
        if blocked[i]:
            continue
        taken[i] = True
        blocked[tree.query_ball_point(points[i], spacing[i])] = True
    return points[taken]


def triangulate_back(oval_points: np.ndarray, back_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles covering the sphere of directions outside the oval.

    Args:
        oval_points: (M, 3) seam vertices in loop order.
        back_points: (N, 3) skull and neck vertices.

    Returns:
        The back points kept (N', 3) and (F, 3) triangles over the stacked points
        [oval_points; kept back points], oriented outward.
    """
    back_points = _clear_seam_circles(oval_points, back_points)
    points = np.concatenate([oval_points, back_points])
    dirs = _unit(points - CENTRE)
    triangles = ConvexHull(dirs, qhull_options="Qt").simplices.astype(np.int64)
    centroids = _unit(dirs[triangles].mean(axis=1))
    triangles = triangles[~inside_oval(centroids, dirs[: len(oval_points)])]
    corners = dirs[triangles]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    flip = np.einsum("fc,fc->f", normal, corners.mean(axis=1)) < 0
    triangles[flip] = triangles[flip][:, ::-1]
    return back_points, np.ascontiguousarray(triangles)


def _clear_seam_circles(oval_points: np.ndarray, back_points: np.ndarray) -> np.ndarray:
    """Drop back points inside the diametral circle of an oval edge (seen from ``CENTRE``).

    Every oval edge is then a Gabriel edge of the point set, so the Delaunay triangulation
    (the convex hull of the directions) contains it and the seam is watertight.
    """
    oval_dirs = _unit(oval_points - CENTRE)
    middle = 0.5 * (oval_dirs + np.roll(oval_dirs, -1, axis=0))
    half = 0.5 * np.linalg.norm(oval_dirs - np.roll(oval_dirs, -1, axis=0), axis=1)
    dirs = _unit(back_points - CENTRE)
    distance, index = cKDTree(middle).query(dirs, k=4)
    return back_points[(distance > 1.2 * half[index]).all(axis=1)]


def seam_correction(back_points: np.ndarray, oval_points: np.ndarray, reach: float = 3.5) -> np.ndarray:
    """Move back points radially so the skull meets the face oval without a step.

    The radial gap at each oval vertex is spread to the back points by inverse-distance weights,
    fading out over ``reach`` cm. Returns the corrected (N, 3) points.
    """
    oval_dirs = _unit(oval_points - CENTRE)
    gap = np.linalg.norm(oval_points - CENTRE, axis=1) - ray_radius(oval_dirs)
    distance, index = cKDTree(oval_points).query(back_points, k=6)
    weights = 1.0 / np.maximum(distance, 1e-6) ** 2
    spread = (weights * gap[index]).sum(axis=1) / weights.sum(axis=1)
    fade = np.exp(-((distance[:, 0] / reach) ** 2))
    dirs = _unit(back_points - CENTRE)
    radius = np.linalg.norm(back_points - CENTRE, axis=1) + spread * fade
    return CENTRE + dirs * radius[:, None]
