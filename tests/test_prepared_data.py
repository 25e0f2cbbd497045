"""The prepared-data folder module: paths, one reader for frames and masks, validation."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import InputError
from backend.fileio import write_png
from backend.formats import tracking as tracking_format
from backend.formats.examples import random_tracking
from backend.formats.prepared import FRAMES, MASKS, OCCLUDERS, STYLIZED, PreparedData


def _folder(tmp_path, n_frames=4, masks=True):
    data = PreparedData(str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    tracking_format.write(data.tracking, random_tracking(n_frames=n_frames))
    rng = np.random.default_rng(0)
    for t in range(n_frames):
        (tmp_path / "data" / FRAMES).mkdir(parents=True, exist_ok=True)
        write_png(data.image_path(FRAMES, t), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
        if masks:
            (tmp_path / "data" / MASKS).mkdir(parents=True, exist_ok=True)
            write_png(data.image_path(MASKS, t), np.full((32, 48), 255 * (t % 2), np.uint8))
    return data


def test_a_complete_folder_validates_and_reads_back(tmp_path):
    data = _folder(tmp_path)
    assert data.validate() == 4
    assert data.names(FRAMES) == [f"{t:06d}.png" for t in range(4)]
    frame = data.read_frame(2)
    assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
    again = np.random.default_rng(0)
    for _ in range(2):
        again.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(frame, again.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    assert data.read_mask(1).max() == 255 and data.read_mask(0).max() == 0


def test_missing_pieces_are_named(tmp_path):
    data = _folder(tmp_path, masks=False)
    assert data.read_mask(0) is None
    with pytest.raises(InputError, match="masks.*0 PNGs.*re-run `python -m backend prepare`"):
        data.validate()
    data.validate(FRAMES)
    with pytest.raises(InputError, match="stylized.*run `python -m backend stylize`"):
        data.validate(STYLIZED)
    (tmp_path / "data" / FRAMES / "000003.png").unlink()
    with pytest.raises(InputError, match="missing: 000003.png"):
        data.validate(FRAMES)
    with pytest.raises(InputError, match="000003.png.*prepared-data folder"):
        data.read_frame(3)


def test_occluders_are_optional_and_cleared_together(tmp_path):
    data = _folder(tmp_path)
    assert data.occluders == str(tmp_path / "data" / OCCLUDERS)
    assert data.read_occluder(1) is None and data.count(OCCLUDERS) == 0
    data.clear_occluders()                                # nothing to clear: no error
    (tmp_path / "data" / OCCLUDERS).mkdir()
    hand = np.zeros((32, 48), np.uint8)
    hand[20:, 10:30] = 255
    write_png(data.image_path(OCCLUDERS, 1), hand)
    np.testing.assert_array_equal(data.read_occluder(1), hand)
    assert data.read_occluder(0) is None
    assert data.validate() == 4                           # sparse: no PNG per frame needed
    data.clear_occluders()
    assert not (tmp_path / "data" / OCCLUDERS).exists()


def test_no_tracking_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match="no tracking.npz; run `python -m backend prepare`"):
        PreparedData(str(tmp_path)).validate()
