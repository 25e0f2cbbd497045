"""The synthetic subject: deterministic, exact tracking, masks, held-out combinations."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from backend.formats import tracking as tracking_format
from backend.synth.performance import make_performance
from tests.conftest import run_backend


def test_synth_command_is_deterministic_and_complete(tmp_path):
    for name in ("a", "b"):
        result = run_backend("synth", "--out", str(tmp_path / name), "--frames", "6", "--size", "32",
                             "--seed", "4")
        assert result.returncode == 0, result.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(6):
        frame_a = np.asarray(Image.open(a / "frames" / f"{i:06d}.png"))
        assert np.array_equal(frame_a, np.asarray(Image.open(b / "frames" / f"{i:06d}.png")))
        mask = np.asarray(Image.open(a / "masks" / f"{i:06d}.png"))
        assert frame_a.shape == (32, 32, 3) and mask.shape == (32, 32)
        assert 0.1 < (mask > 127).mean() < 0.9  # a head, not an empty or full frame
    tracking = tracking_format.read(a / "tracking.npz")
    assert tracking.n_frames == 6 and tuple(tracking.image_size) == (32, 32)
    assert (a / "video.mp4").stat().st_size > 0
    assert np.array_equal(tracking.expressions, tracking_format.read(b / "tracking.npz").expressions)


def test_held_out_part_has_unseen_expression_combinations():
    performance = make_performance(200, 27, seed=1)
    train = performance.expressions[:-performance.n_test]
    test = performance.expressions[-performance.n_test:]
    seen = {tuple(np.flatnonzero(row > 1e-4)) for row in train}
    held_out = {tuple(np.flatnonzero(row > 1e-4)) for row in test} - {()}
    assert held_out and not held_out & seen
    assert max(len(c) for c in held_out) >= 3 and max(len(c) for c in seen) <= 2
    assert np.ptp(performance.joint_rotations[:, 0, 1]) > 0.2  # the head turns
    assert performance.joint_rotations[:, 2, 0].max() > 0.1     # the jaw opens


def test_features_are_drawn_on_their_landmark_contours():
    """Lips, brows and the face outline sit where the model's landmarks say (what a detector sees)."""
    from backend.headmodel import load_head_model
    from backend.synth.subject import HEAD, albedo, build_subject, inside

    head = load_head_model("builtin")
    with torch.no_grad():
        neutral = head(shape=torch.zeros(1, head.n_shape))
    subject = build_subject(head, neutral.vertices[0], neutral.rest_joints[0])
    outlines = subject.outlines

    def colour_at(points):
        return albedo(points, torch.full((len(points),), HEAD), subject)

    def ring_centre(name):
        return outlines[name].mean(dim=0, keepdim=True)

    lips_mid = outlines["lips"][[3, 13]].mean(dim=0, keepdim=True)     # halfway between two lip points
    skin = colour_at(ring_centre("face") + torch.tensor([[0.0, 0.0, 0.03]]))
    assert colour_at(lips_mid)[0, 0] - colour_at(lips_mid)[0, 1] > 0.3    # red lips
    for name in ("brow_right", "brow_left"):
        assert colour_at(ring_centre(name)).sum() < 0.7 * skin.sum()       # dark brow
    # Just outside the oval at forehead height: hair; just inside: skin.
    top = outlines["face"][0:1]
    above, below = top + torch.tensor([[0.0, 0.006, -0.004]]), top - torch.tensor([[0.0, 0.006, 0.0]])
    assert bool(inside(below, outlines["face"])) and not bool(inside(above, outlines["face"]))
    assert colour_at(above).sum() < 0.6 * colour_at(below).sum()
    # The polygon test itself, on a unit square.
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    points = torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.5, -0.1], [0.99, 0.99]])
    assert inside(points, square).tolist() == [True, False, False, True]
