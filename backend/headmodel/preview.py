"""A numpy-only preview renderer: shaded meshes as PNG tiles (no torch, no GPU)."""

from __future__ import annotations

import numpy as np

from ..fileio import write_image


def render_mesh(vertices: np.ndarray, faces: np.ndarray, size: int, half_extent: float,
                centre: np.ndarray, samples: int = 10) -> np.ndarray:
    """Orthographic front view, Lambert-shaded, by splatting points sampled on every triangle.

    Args:
        vertices: (V, 3) in metres; faces (F, 3).
        size: output is (size, size) grey uint8.
        half_extent: half the visible width in metres; centre: (3,) the view centre.
        samples: barycentric samples per triangle edge.

    Returns:
        (size, size) uint8 image.
    """
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = np.clip(normals @ light, 0.0, 1.0) * 0.8 + 0.2
    i, j = np.meshgrid(np.arange(samples + 1), np.arange(samples + 1), indexing="ij")
    keep = i + j <= samples
    bary = np.stack([i[keep], j[keep], samples - i[keep] - j[keep]], axis=1) / samples
    points = np.einsum("sk,fkc->fsc", bary, corners).reshape(-1, 3)
    values = np.repeat(shade, len(bary))
    px = ((points[:, 0] - centre[0]) / half_extent * 0.5 + 0.5) * (size - 1)
    py = ((centre[1] - points[:, 1]) / half_extent * 0.5 + 0.5) * (size - 1)
    ix, iy = np.round(px).astype(int), np.round(py).astype(int)
    inside = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
    order = np.argsort(points[inside, 2])          # far to near: the nearest write wins
    flat = (iy[inside] * size + ix[inside])[order]
    image = np.zeros(size * size)
    image[flat] = values[inside][order]
    return (image.reshape(size, size) * 255).astype(np.uint8)


def expression_grid(assets, path: str, tile: int = 192, weight: float = 1.0, columns: int = 6) -> None:
    """Write a PNG grid: the neutral template, then every expression at ``weight``."""
    from PIL import Image, ImageDraw

    v = np.asarray(assets.v_template, dtype=np.float64)
    faces = np.asarray(assets.faces)
    landmarks = len(assets.landmark_ids) >= 468
    centre = v[:468].mean(axis=0) if landmarks else v.mean(axis=0)
    half = 0.6 * (v[:468, 0].max() - v[:468, 0].min()) if landmarks else 0.6 * np.ptp(v[:, 0])
    names = ["neutral"] + list(assets.expression_names)
    rows = (len(names) + columns - 1) // columns
    grid = Image.new("L", (columns * tile, rows * tile))
    draw = ImageDraw.Draw(grid)
    for k, name in enumerate(names):
        shaped = v if k == 0 else v + weight * np.asarray(assets.exprdirs[:, :, k - 1], dtype=np.float64)
        image = render_mesh(shaped, faces, tile, half, centre)
        x, y = (k % columns) * tile, (k // columns) * tile
        grid.paste(Image.fromarray(image), (x, y))
        draw.text((x + 4, y + 4), name, fill=255)
    write_image(path, grid)
