"""QA pictures: a PNG grid of frames with detected landmarks, fitted landmarks and the mesh.

Green dots: mediapipe detections; red dots: the fitted model's landmarks; thin blue lines: the
fitted mesh's edges; a yellow line: the edge of the foreground mask (the photometric refinement
keeps the head inside it, so a mask that cuts into the head shows here). Frames without a
detection get a red border.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..fileio import ensure_writable_folder, write_png
from ..formats.prepared import PreparedData
from .fit import FitResult, project


def pick_frames(n_frames: int, count: int = 8) -> np.ndarray:
    """``count`` evenly spaced frame indices (all of them if fewer)."""
    return np.unique(np.linspace(0, n_frames - 1, min(count, n_frames)).round().astype(int))


@torch.no_grad()
def mesh_projection(model, result: FitResult, frames: np.ndarray) -> np.ndarray:
    """Project the fitted mesh of ``frames``. Returns (N, V, 2) pixels of the crop."""
    index = torch.as_tensor(frames)
    output = model(shape=torch.as_tensor(result.shape)[None].expand(len(frames), -1),
                   expression=torch.as_tensor(result.expressions)[index],
                   joint_rotations=torch.as_tensor(result.joint_rotations)[index],
                   translation=torch.as_tensor(result.translation)[index])
    depth = float(result.extrinsics[0, 2, 3])
    return project(output.vertices, torch.as_tensor(result.intrinsics)[index], depth).numpy()


def draw_frame(image: np.ndarray, detected: np.ndarray | None, fitted: np.ndarray,
               mesh: np.ndarray | None, faces: np.ndarray | None, found: bool = True,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Draw landmarks, the mesh wireframe and the mask's edge (``mask`` (H, W) uint8, foreground
    above 127) on a copy of ``image`` (H, W, 3) uint8."""
    import cv2

    canvas = image.copy()
    if mask is not None:
        contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, (255, 220, 0), max(1, image.shape[0] // 256))
    if mesh is not None and faces is not None:
        overlay = canvas.copy()
        polygons = np.round(mesh[faces] * 4).astype(np.int32)   # (F, 3, 2), 2 bits subpixel
        cv2.polylines(overlay, list(polygons), True, (60, 120, 255), 1, cv2.LINE_AA, shift=2)
        canvas = cv2.addWeighted(overlay, 0.5, canvas, 0.5, 0)
    radius = max(1, image.shape[0] // 256)
    if detected is not None:
        for x, y in detected:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (0, 220, 0), -1)
    for x, y in fitted:
        cv2.circle(canvas, (int(round(x)), int(round(y))), radius, (255, 40, 40), -1)
    if not found:
        cv2.rectangle(canvas, (0, 0), (canvas.shape[1] - 1, canvas.shape[0] - 1), (255, 0, 0), 6)
    return canvas


def write_strips(data: PreparedData, model, result: FitResult, detected: np.ndarray,
                 found: np.ndarray, count: int = 8, tile: int = 256) -> list[str]:
    """Write ``qa/landmarks.png``: ``count`` frames in a grid of ``tile``-pixel tiles.

    Args:
        data: the prepared-data folder (its frames and masks are drawn on).
        model: the ``HeadModel`` that was fitted.
        result: the fit.
        detected: (T, 478, 2) landmarks in crop pixels.
        found: (T,) bool.

    Returns:
        the written paths.
    """
    import cv2

    frames = pick_frames(len(result.expressions), count)
    mesh = mesh_projection(model, result, frames)
    faces = model.faces.numpy()
    tiles = []
    for n, t in enumerate(frames):
        image, mask = data.read_frame(t), data.read_mask(t)
        picture = draw_frame(image, detected[t, result.landmark_ids] if found[t] else None,
                             result.projected[t], mesh[n], faces, bool(found[t]), mask)
        picture = cv2.resize(picture, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(picture, f"{t}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
        tiles.append(picture)
    columns = min(4, len(tiles))
    rows = -(-len(tiles) // columns)
    grid = np.zeros((rows * tile, columns * tile, 3), np.uint8)
    for n, picture in enumerate(tiles):
        r, c = divmod(n, columns)
        grid[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = picture
    folder = ensure_writable_folder(data.qa)
    path = os.path.join(folder, "landmarks.png")
    write_png(path, grid)
    return [path]
