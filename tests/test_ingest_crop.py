"""Crops, crop intrinsics, box smoothing, landmark smoothing and gap filling."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InputError
from backend.formats.prepared import inside_source
from backend.ingest import crop
from backend.ingest import landmarks as marks


def test_crop_maps_points_like_its_matrix_and_leaves_outside_black():
    image = np.zeros((100, 160, 3), np.uint8)
    image[40:44, 120:124] = 255            # a 4x4 dot centred at continuous (122, 42)
    image[:, -1] = (0, 0, 200)              # right edge colour, never smeared past the edge
    box = np.array([130.0, 50.0, 80.0])      # leaves the frame on the right
    out = crop.crop_image(image, box, 160)
    matrix = crop.crop_matrix(box, 160)
    expected = matrix @ np.array([122.0, 42.0, 1.0])
    ys, xs = np.nonzero(out[..., 0] > 128)
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    np.testing.assert_allclose(centre, expected, atol=0.6)
    inside = inside_source(box, 160, 160, 100)
    # Crop columns 140.. map to source x > 160, past the right edge.
    assert inside[:, :140].all() and not inside[:, 140:].any()
    assert (out[:, 141:] == 0).all()          # no replicated-edge stripes (bilinear: 1 px blend)
    assert (out[10:150, 138:140, 2] > 100).all()  # the edge column itself is kept


def test_large_downscale_keeps_point_positions():
    image = np.zeros((2000, 2000), np.uint8)
    image[1000:1016, 600:616] = 255          # centred at continuous (608, 1008)
    box = np.array([700.0, 900.0, 1600.0])
    out = crop.crop_image(image, box, 200)   # 8x shrink, area pre-filter
    expected = crop.crop_matrix(box, 200) @ np.array([608.0, 1008.0, 1.0])
    ys, xs = np.nonzero(out > 60)
    weights = out[ys, xs].astype(float)
    centre = np.array([(xs + 0.5) @ weights, (ys + 0.5) @ weights]) / weights.sum()
    np.testing.assert_allclose(centre, expected, atol=0.3)


def test_crop_intrinsics_project_like_the_crop():
    focal, principal = 900.0, np.array([640.0, 360.0])
    point = np.array([0.05, -0.03, 0.6])
    source_px = focal * point[:2] / point[2] + principal
    boxes = np.array([[700.0, 300.0, 400.0], [500.0, 420.0, 300.0]])
    intrinsics = crop.crop_intrinsics(focal, principal, boxes, 512)
    for box, k in zip(boxes, intrinsics):
        crop_px = (k @ point)[:2] / point[2]
        np.testing.assert_allclose(crop_px, crop.crop_matrix(box, 512) @ np.append(source_px, 1),
                                   atol=1e-9)


def test_stable_boxes_fill_gaps_fixed_side_no_lag():
    times = np.arange(40) / 20.0
    boxes = np.stack([100 + 50 * times, np.full(40, 80.0), 60 + np.sin(times * 9)], axis=1)
    boxes[10:14] = np.nan
    stable = crop.stable_crop_boxes(boxes, times, scale=2.0, shift_up=0.0, sigma_s=0.2)
    assert np.ptp(stable[:, 2]) == 0 and abs(stable[0, 2] - 120) < 3
    # A linear motion passes a symmetric filter unchanged away from the ends: no lag.
    np.testing.assert_allclose(stable[12:28, 0], 100 + 50 * times[12:28], atol=1e-6)
    with pytest.raises(InputError, match="no face"):
        crop.fill_gaps(np.full((5, 3), np.nan), np.arange(5.0))


def test_zero_phase_one_euro_follows_fast_motion_and_removes_jitter():
    rng = np.random.default_rng(0)
    times = np.arange(120) / 30.0
    truth = np.where(times < 2, 100.0, 100.0 + 600 * (times - 2))[:, None, None]  # still, then fast
    noisy = truth + rng.normal(0, 1.0, (120, 1, 1))
    smooth = marks.smooth_landmarks(noisy, times)
    still, moving = slice(10, 50), slice(75, 110)
    assert np.std(smooth[still] - truth[still]) < 0.5 * np.std(noisy[still] - truth[still])
    assert np.abs(np.mean(smooth[moving] - truth[moving])) < 1.0        # no lag on the ramp
    causal = marks.one_euro(noisy, times, 1.0, 0.02)
    assert np.mean(truth[moving] - causal[moving]) > np.abs(np.mean(smooth[moving] - truth[moving]))


def test_landmark_gaps_and_outliers():
    times = np.arange(10) / 10.0
    points = np.zeros((10, 478, 2))
    points[..., 0] = np.arange(10)[:, None] * 10.0
    points[..., 1] = np.linspace(0, 50, 478)[None]   # a face 50 px tall
    found = np.ones(10, bool)
    found[[0, 4, 5]] = False
    filled = marks.fill_landmark_gaps(points, found, times)
    np.testing.assert_allclose(filled[4:6, 0, 0], [40, 50])
    np.testing.assert_allclose(filled[0, 0, 0], 10)        # holds the nearest at the ends
    spiky = points.copy()
    spiky[7, :, 0] += 300
    flagged = marks.flag_outliers(spiky, np.ones(10, bool))
    assert not flagged[7] and flagged.sum() == 9
    with pytest.raises(InputError, match="found in only 1 of 10"):
        marks.check_enough_faces(np.eye(10, dtype=bool)[0], "clip.mp4")


def test_automatic_size_follows_the_source_crop():
    from backend.ingest.frames import auto_size

    webcam = np.array([[200.0, 150.0, 252.0]] * 3)       # a 400 x 300 webcam: 252-px crops
    phone = np.array([[540.0, 900.0, 900.0]] * 3)        # a 1080p phone video
    assert auto_size(webcam) == 256 and auto_size(phone) == 512
    assert auto_size(np.array([[0.0, 0.0, 330.0]])) == 384
    assert auto_size(np.array([[0.0, 0.0, 90.0]])) == 256
