"""Shared geometry (backend/geometry): rotations, triangles and the mesh z-buffer, against
independent references."""

from __future__ import annotations

import torch

from backend.geometry import rotations, triangles
from backend.geometry.raster import project, rasterize


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).float()


def test_closest_point_matches_dense_sampling():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(300, 3, generator=generator, dtype=torch.float64)
    a, b, c = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    bary, dist = triangles.closest_point_on_triangles(points, a, b, c)
    u = torch.rand(100_000, 2, generator=generator, dtype=torch.float64)
    flip = u.sum(1) > 1
    u[flip] = 1 - u[flip]
    samples = a + u[:, :1] * (b - a) + u[:, 1:] * (c - a)
    brute = torch.cdist(points, samples).min(dim=1).values ** 2
    assert (dist <= brute + 1e-9).all()  # never farther than any sampled point
    assert (brute - dist).max() < 0.05 * brute.max()
    assert torch.allclose(bary.sum(1), torch.ones(300, dtype=torch.float64)) and bary.min() >= 0


def test_quaternion_and_polar_roundtrips():
    matrices = _random_rotations(200)
    quats = rotations.matrix_to_quat(matrices)
    assert torch.allclose(rotations.quat_to_matrix(quats), matrices, atol=1e-5)
    stretch = torch.diag_embed(torch.rand(200, 3) + 0.5)
    assert torch.allclose(rotations.polar_rotation(matrices @ stretch), matrices, atol=1e-4)
    q1, q2 = rotations.matrix_to_quat(matrices[:100]), rotations.matrix_to_quat(matrices[100:])
    product = rotations.quat_to_matrix(rotations.quat_multiply(q1, q2))
    assert torch.allclose(product, matrices[:100] @ matrices[100:], atol=1e-5)


def test_quat_multiply_along_channels_equals_along_the_last_dim():
    q1 = rotations.matrix_to_quat(_random_rotations(50, seed=1))
    q2 = rotations.matrix_to_quat(_random_rotations(50, seed=2))
    rows = rotations.quat_multiply(q1.t(), q2.t(), dim=0)
    assert rows.shape == (4, 50)
    assert torch.allclose(rows.t(), rotations.quat_multiply(q1, q2), atol=1e-7)


def test_vertex_normals_of_a_sphere_point_outwards():
    from backend.formats import examples

    vertices, faces = examples.uv_sphere(16, 24, radii=(1.0, 1.0, 1.0))
    vertices, faces = torch.from_numpy(vertices).float(), torch.from_numpy(faces).long()
    normals = triangles.vertex_normals(vertices, faces)
    radial = vertices / vertices.norm(dim=1, keepdim=True)
    assert torch.allclose(normals.norm(dim=1), torch.ones(len(vertices)), atol=1e-5)
    assert (normals * radial).sum(dim=1).min() > 0.95


def test_rasterizer_depth_order_and_coverage():
    # Two overlapping squares at different depths: the nearer one wins where they overlap.
    square = torch.tensor([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    near = square * 0.5 + torch.tensor([0.3, 0.0, 0.0])
    vertices = torch.cat([square, near])
    vertices[:4, 2] = 5.0
    vertices[4:, 2] = 4.0
    viewmat = torch.eye(4)
    intrinsics = torch.tensor([[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]])
    face, bary = rasterize(project(vertices, viewmat, intrinsics), faces, 32, 32)
    assert face[16, 20] in (2, 3) and face[16, 10] in (0, 1) and face[0, 0] == -1
    assert torch.allclose(bary[face >= 0].sum(-1), torch.ones(int((face >= 0).sum())), atol=1e-5)
