"""The novel-view prior (``backend/train/novel.py``): the swung camera, the head model's
silhouettes, the loss, and a tiny synthetic training whose side views it makes more opaque."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.train.novel import coverage_loss, prior_regions, random_yaw, swung_viewmat


@pytest.fixture(scope="module", autouse=True)
def single_thread(torch_single_thread):
    """Tiny renders and trainings: one torch thread (tests/conftest.py)."""


def _camera(distance: float = 0.6):
    """A camera on +Z looking at the origin (world to camera: flip y and z, OpenCV axes)."""
    viewmat = torch.eye(4)
    viewmat[1, 1] = viewmat[2, 2] = -1
    viewmat[2, 3] = distance
    intrinsics = torch.tensor([[120.0, 0, 64], [0, 120.0, 64], [0, 0, 1]])
    return viewmat, intrinsics


def _centre(viewmat: torch.Tensor) -> torch.Tensor:
    return torch.linalg.inv(viewmat)[:3, 3]


def test_swung_camera_circles_the_pivot():
    viewmat, _ = _camera()
    pivot = torch.tensor([0.01, 0.02, -0.03])
    assert torch.allclose(swung_viewmat(viewmat, pivot, 0.0), viewmat)
    for yaw in (math.radians(45), math.radians(-30)):
        swung = swung_viewmat(viewmat, pivot, yaw)
        # Still a rotation, the pivot stays where the camera sees it, at the same distance.
        assert torch.allclose(swung[:3, :3] @ swung[:3, :3].T, torch.eye(3), atol=1e-6)
        seen = lambda m: m[:3, :3] @ pivot + m[:3, 3]  # noqa: E731
        assert torch.allclose(seen(swung), seen(viewmat), atol=1e-6)
        before, after = _centre(viewmat) - pivot, _centre(swung) - pivot
        assert float(after.norm()) == pytest.approx(float(before.norm()), rel=1e-6)
        # It turned about the vertical axis by |yaw|: the height is kept, the angle is yaw.
        assert float(after[1]) == pytest.approx(float(before[1]), abs=1e-6)
        cos = float(before[[0, 2]] @ after[[0, 2]] / (before[[0, 2]].norm() * after[[0, 2]].norm()))
        assert math.degrees(math.acos(min(cos, 1.0))) == pytest.approx(abs(math.degrees(yaw)), abs=1e-3)


def test_random_yaw_stays_in_range_on_both_sides():
    generator = torch.Generator().manual_seed(0)
    yaws = np.degrees([random_yaw(generator, 15, 60) for _ in range(200)])
    assert np.all((np.abs(yaws) >= 15 - 1e-6) & (np.abs(yaws) <= 60 + 1e-6))
    assert (yaws > 0).sum() > 60 and (yaws < 0).sum() > 60


def test_prior_regions_of_the_head_model():
    from backend.headmodel import load_head_model
    from backend.headmodel.regions import head_faces
    from backend.train.oneshot import depth_buffer

    head = load_head_model("builtin", n_expressions=5)
    vertices, faces = head.v_template.float(), head.faces.long()
    above = head_faces(head, vertices)
    viewmat, intrinsics = _camera()
    seen_head = torch.isfinite(depth_buffer(vertices, faces[above], viewmat, intrinsics, 128, 128))
    seen_all = torch.isfinite(depth_buffer(vertices, faces, viewmat, intrinsics, 128, 128))
    opaque, clear, (x0, y0, x1, y1) = prior_regions(vertices, faces, above, viewmat, intrinsics,
                                                    128, 128, margin_px=4)
    # Opaque: the head above the cut, a pixel in from its edge; clear: 4 px past the whole model.
    assert 500 < int(opaque.sum()) < int(seen_head.sum())
    assert bool((opaque <= seen_head).all())
    assert not bool((clear & seen_all).any())
    assert int((~clear).sum()) > int(seen_all.sum())
    # The box holds everything that is not clear, and is smaller than the image.
    ys, xs = (~clear).nonzero(as_tuple=True)
    assert x0 <= int(xs.min()) and int(xs.max()) < x1 and y0 <= int(ys.min()) and int(ys.max()) < y1
    assert (x1 - x0) * (y1 - y0) < 128 * 128
    # From the side the head is seen in profile: another region.
    side, _, _ = prior_regions(vertices, faces, above, swung_viewmat(viewmat, vertices.mean(dim=0),
                               math.radians(90)), intrinsics, 128, 128, margin_px=4)
    assert int((side ^ opaque).sum()) > 0.1 * int(opaque.sum())


def test_coverage_loss_asks_opaque_inside_and_clear_outside():
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 2:6] = True
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:7, 1:7] = False
    ideal = inside.float()
    assert float(coverage_loss(ideal, inside, outside)) == 0.0
    assert float(coverage_loss(torch.zeros(8, 8), inside, outside)) == pytest.approx(1.0)
    assert float(coverage_loss(torch.ones(8, 8), inside, outside)) == pytest.approx(1.0)
    # A cropped render: the clear pixels outside the crop count with alpha 0.
    n_outside = int(outside.sum())
    assert float(coverage_loss(torch.ones(8, 8), inside, outside, n_clear=2 * n_outside)) == \
        pytest.approx(0.5)
    half = ideal * 0.5
    assert float(coverage_loss(half, inside, outside)) == pytest.approx(0.5)
    nothing = torch.zeros(8, 8, dtype=torch.bool)
    assert float(coverage_loss(torch.rand(8, 8), nothing, nothing)) == 0.0


@pytest.mark.slow
def test_prior_makes_side_views_more_opaque(tmp_path):
    """Two tiny trainings of the synthetic subject, without and with the prior: measured with
    the same swung cameras, the head silhouette is more opaque with it."""
    from backend.synth.render import synthesize
    from backend.train.session import train_and_export

    synthesize(str(tmp_path / "data"), n_frames=16, size=48, seed=3, video=False)
    misses = {}
    for weight in (0.0, 2.0):
        torch.manual_seed(0)
        trainer = train_and_export(str(tmp_path / "data"), str(tmp_path / f"run{weight}"), "tiny",
                                   {"iterations": 60, "novel": {"weight": weight, "every": 1},
                                    "model": {"n_face_gaussians": 600, "n_mouth_gaussians": 40}})["trainer"]
        trainer.generator.manual_seed(7)
        trainer.config.novel.margin = 1.0  # measure the inside only: nothing is outside
        with torch.no_grad():
            misses[weight] = np.mean([float(trainer.novel_view_loss(int(i)))
                                      for i in trainer.data.train[:8]])
    assert misses[2.0] < 0.8 * misses[0.0], misses
