"""Triangle-mesh helpers for the built-in head generator (numpy/scipy only)."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg)

CANONICAL_FACE = os.path.join(os.path.dirname(__file__), "mediapipe_canonical_face.obj")


def read_canonical_face() -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's canonical face: (468, 3) vertices in cm and (F, 3) triangles (0-based)."""
    vertices, faces = [], []
    with open(CANONICAL_FACE, encoding="ascii") as handle:
        for line in handle:
            parts = line.split()
            if parts and parts[0] == "v":
                vertices.append([float(x) for x in parts[1:4]])
            elif parts and parts[0] == "f":
                faces.append([int(x) - 1 for x in parts[1:4]])
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)


def unique_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of a mesh. Returns (E, 2) sorted vertex pairs and, per face corner edge, its index (F, 3).

    Edge k of face f joins corners k and (k + 1) % 3.
    """
    corner_edges = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    edges, inverse = np.unique(np.sort(corner_edges, axis=1), axis=0, return_inverse=True)
    return edges, inverse.reshape(-1, 3)


def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) edges and how many faces use each."""
    edges, face_edges = unique_edges(faces)
    return edges, np.bincount(face_edges.ravel(), minlength=len(edges))


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Closed loops of boundary edges (edges used by one face), each as ordered vertex ids."""
    corner_edges = np.stack([faces, np.roll(faces, -1, axis=1)], axis=2).reshape(-1, 2)
    _, counts = edge_face_counts(faces)
    edges, face_edges = unique_edges(faces)
    is_boundary = counts[face_edges.ravel()] == 1
    following = {int(a): int(b) for a, b in corner_edges[is_boundary]}
    loops = []
    while following:
        start = next(iter(following))
        loop = [start]
        while following[loop[-1]] != start:
            loop.append(following.pop(loop[-1]))
        following.pop(loop[-1])
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops


def subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split every triangle into four at its edge midpoints; original vertices keep their ids.

    Returns:
        (V + E, 3) vertices and (4F, 3) faces with the same orientation.
    """
    edges, face_edges = unique_edges(faces)
    midpoints = 0.5 * (vertices[edges[:, 0]] + vertices[edges[:, 1]])
    m = face_edges + len(vertices)  # (F, 3): midpoint of edge (c0,c1), (c1,c2), (c2,c0)
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    new_faces = np.concatenate([
        np.stack([a, m[:, 0], m[:, 2]], 1), np.stack([m[:, 0], b, m[:, 1]], 1),
        np.stack([m[:, 2], m[:, 1], c], 1), np.stack([m[:, 0], m[:, 1], m[:, 2]], 1)])
    return np.concatenate([vertices, midpoints]), new_faces


def adjacency(n_vertices: int, faces: np.ndarray, boundary_only: bool = False) -> sp.csr_matrix:
    """Symmetric 0/1 vertex adjacency; with ``boundary_only`` only boundary edges are kept."""
    edges, counts = edge_face_counts(faces)
    if boundary_only:
        edges = edges[counts == 1]
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))


def smooth(vertices: np.ndarray, faces: np.ndarray, fixed: np.ndarray, iterations: int,
           step: float = 0.5) -> np.ndarray:
    """Umbrella (Laplacian) smoothing of the vertices that are not ``fixed``.

    Boundary vertices are smoothed along their boundary only, so hole contours stay in place
    as curves. ``fixed`` is a (V,) bool mask.
    """
    n = len(vertices)
    inner = adjacency(n, faces)
    border = adjacency(n, faces, boundary_only=True)
    on_border = np.asarray(border.sum(axis=1)).ravel() > 0
    rows_inner = sp.diags((~on_border).astype(float)) @ inner
    rows_border = sp.diags(on_border.astype(float)) @ border
    neighbours = (rows_inner + rows_border).tocsr()
    degree = np.maximum(np.asarray(neighbours.sum(axis=1)).ravel(), 1.0)
    out = vertices.copy()
    move = (~fixed)[:, None]
    for _ in range(iterations):
        average = (neighbours @ out) / degree[:, None]
        out = np.where(move, out + step * (average - out), out)
    return out


def harmonic_fill(n_vertices: int, faces: np.ndarray, known: np.ndarray,
                  values: np.ndarray) -> np.ndarray:
    """Solve the graph Laplace equation for the unknown vertices.

    Args:
        n_vertices: V.
        faces: (F, 3).
        known: (V,) bool, the constrained vertices.
        values: (V,) values at the constrained vertices (others ignored).

    Returns:
        (V,) smooth interpolation, equal to ``values`` where ``known``.
    """
    graph = adjacency(n_vertices, faces)
    laplacian = (sp.diags(np.asarray(graph.sum(axis=1)).ravel()) - graph).tocsr()
    unknown = ~known
    out = np.where(known, values, 0.0).astype(np.float64)
    a = laplacian[unknown][:, unknown].tocsc()
    b = -laplacian[unknown][:, known] @ out[known]
    out[unknown] = sp.linalg.spsolve(a, b)
    return out


def uv_sphere(centre: np.ndarray, radius: float, rings: int, segments: int,
              axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere with its poles on ``axis``. Returns (V, 3) vertices, (F, 3) faces (outward)."""
    axis = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, axis)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    theta = np.linspace(0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    directions = (np.cos(t)[..., None] * axis + np.sin(t)[..., None]
                  * (np.cos(p)[..., None] * u + np.sin(p)[..., None] * v)).reshape(-1, 3)
    points = np.concatenate([axis[None], directions, -axis[None]])
    faces = []
    ring = lambda i, j: 1 + i * segments + j % segments
    for j in range(segments):
        faces.append([0, ring(0, j), ring(0, j + 1)])
        faces.append([len(points) - 1, ring(rings - 2, j + 1), ring(rings - 2, j)])
        for i in range(rings - 2):
            faces.append([ring(i, j), ring(i + 1, j), ring(i + 1, j + 1)])
            faces.append([ring(i, j), ring(i + 1, j + 1), ring(i, j + 1)])
    faces = np.asarray(faces, dtype=np.int64)
    if np.dot(np.cross(points[faces[0, 1]] - points[0], points[faces[0, 2]] - points[0]), axis) < 0:
        faces = faces[:, ::-1]
    return centre + radius * points, np.ascontiguousarray(faces)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals."""
    corners = vertices[faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
