"""What the avatar learns: the head region (above the neck cut, inside the source frame), soft
edges without the backdrop's colour, and Gaussians no view shows filled from their neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.formats import tracking as tracking_format
from backend.train.data import FrameData, clothing_mask, foreground_colours


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from backend.synth.render import synthesize

    folder = tmp_path_factory.mktemp("head-region") / "data"
    synthesize(str(folder), n_frames=6, size=64, seed=1, video=False)
    return folder


def test_soft_edges_take_the_persons_colour():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15], mask[4, 5:15], mask[5:15, 15] = 255, 100, 100
    out = foreground_colours(rgb, mask)
    np.testing.assert_array_equal(out[4, 5:15], rgb[5, 5:15])     # nearest solid pixel above
    np.testing.assert_array_equal(out[5:15, 15], rgb[5:15, 14])
    np.testing.assert_array_equal(out[mask == 255], rgb[mask == 255])
    np.testing.assert_array_equal(out[mask == 0], rgb[mask == 0])


def test_the_neck_cut_passes_below_the_chin_and_above_the_mesh_bottom(subject):
    from backend.headmodel import load_head_model
    from backend.train.config import make_config
    from backend.train.trainer import Trainer

    data = FrameData(str(subject))
    head = load_head_model("builtin")
    Trainer(data, str(subject.parent / "run"), make_config("tiny"), head)
    assert data.cut_lines is not None and data.cut_lines.shape == (6, 3)
    track = tracking_format.read(str(subject / "tracking.npz"))
    posed = head(shape=torch.as_tensor(track.shape).float()[None].expand(6, -1),
                 expression=torch.as_tensor(track.expressions).float(),
                 joint_rotations=torch.as_tensor(track.joint_rotations).float(),
                 translation=torch.as_tensor(track.translation).float())
    chin = int((head.landmark_ids == 152).nonzero()[0, 0])
    lowest = posed.vertices[:, :, 1].argmin(dim=1)

    def side(t, point):
        """> 0: below frame t's cut line."""
        viewmat, k = (torch.as_tensor(a[t]).float() for a in (track.extrinsics, track.intrinsics))
        camera = viewmat[:3, :3] @ point + viewmat[:3, 3]
        pixel = (k @ camera)[:2] / camera[2]
        n = data.cut_lines[t]
        return float(n[0] * pixel[0] + n[1] * pixel[1] - n[2])

    for t in range(6):
        assert side(t, posed.landmarks[t, chin]) < 0           # the chin is head
        assert side(t, posed.vertices[t, lowest[t]]) > 0        # the mesh's lowest point is not
        below = data.below_cut(t)[..., 0]
        weight, (_, mask) = data.weight(t)[..., 0], data.target(t, torch.ones(3))
        person = data.photo(t)[1][..., 0]
        # Torso pixels (person, below the cut) are no target; the head is, opaque.
        torso, head_region = (person > 0.9) & (below > 0.9), (person > 0.9) & (below < 0.1)
        assert bool(torso.any()) and bool(head_region.any())
        assert float(weight[torso].max()) < 0.1
        assert float(mask[head_region].min()) > 0.8


def test_shoulders_beside_the_neck_are_torso_above_the_cut_line(subject):
    from backend.headmodel.regions import SHOULDER_CLEARANCE, image_shoulder_zones

    # An upright head: the cut at y = 50, the neck ring 25..39 px wide, the chin at y = 35.
    ring = torch.stack([torch.linspace(25, 39, 8), torch.full((8,), 50.0)], dim=-1)[None]
    lines = torch.tensor([[0.0, 1.0, 50.0]])
    zones = image_shoulder_zones(ring, torch.tensor([[32.0, 35.0]]), lines)
    assert torch.allclose(zones[0], torch.tensor([-32.0, SHOULDER_CLEARANCE * 7, 40.0]))  # side = -x
    data = FrameData(str(subject))
    data.set_cut_lines(lines.expand(data.n_frames, 3), zones.expand(data.n_frames, 3))
    torso = data.below_cut(0)[..., 0]  # (y, x)
    assert float(torso[45, 5]) == 1 and float(torso[45, 60]) == 1   # shoulders beside the neck
    assert float(torso[45, 32]) == 0 and float(torso[45, 40]) == 0  # the neck itself
    assert float(torso[30, 5]) == 0                                # beside the face: head (hair)
    assert float(torso[55, 32]) == 1                               # below the cut
    data.set_cut_lines(lines.expand(data.n_frames, 3))
    assert float(data.below_cut(0)[45, 5, 0]) == 0                   # the line alone keeps them


def test_a_collar_on_the_lower_neck_is_clothing_not_skin():
    """Skin (a webcam's orange) over the whole person, a light-blue collar and a shadowed, darker
    skin patch in the lower-neck band: only the collar (and its 1-px rim) is clothing."""
    rgb = np.zeros((60, 40, 3), np.uint8)
    rgb[...] = (205, 140, 110)                      # skin
    rgb[5:12] = (70, 45, 30)                        # hair: dark, left out of the skin's median
    rgb[50:55, 8:20] = (150, 175, 200)              # collar, in the band
    rgb[50:55, 24:32] = (140, 92, 72)               # skin in shadow, in the band
    rgb[30:35, 8:20] = (150, 175, 200)              # the same colour above the band: not looked at
    mask = np.full((60, 40), 255, np.uint8)
    mask[:, :4] = 0                                  # backdrop
    down = np.mgrid[0:60, 0:40][0] + 0.5             # an upright head: down = y
    found = clothing_mask(rgb, mask, down, start=45.0, cut=57.0).astype(bool)
    assert found[50:55, 8:20].all()
    assert found[49, 8:20].all() and found[55, 8:20].all()           # the rim
    assert not found[50:55, 24:32].any()                              # shadowed skin
    assert not found[:45].any() and not found[57:].any()              # outside the band
    assert not found[:, :4].any()                                     # not the person
    assert found.sum() == 7 * 14
    plain = rgb.copy()
    plain[50:55, 8:20] = (205, 140, 110)
    assert not clothing_mask(plain, mask, down, 45.0, 57.0).any()


def test_clothing_is_no_target(subject, tmp_path):
    """FrameData leaves clothing out of weight and alpha, and only with the shoulder zones set."""
    import shutil

    from backend.fileio import write_png
    from backend.formats.prepared import FRAMES, PreparedData
    from backend.headmodel.regions import image_shoulder_zones

    folder = tmp_path / "data"
    shutil.copytree(subject, folder)
    collar = np.zeros((64, 64), bool)
    collar[54:58, 28:36] = True                      # on the neck, between start (52) and the cut
    prepared = PreparedData(str(folder))
    frame = prepared.read_image(FRAMES, 0).copy()
    frame[collar] = (150, 175, 200)
    write_png(prepared.image_path(FRAMES, 0), frame)
    data = FrameData(str(folder))
    assert float(data.clothing(0).max()) == 0                          # no cut lines: no rule
    assert float(data._load("masks", 0)[torch.from_numpy(collar)].float().min()) > 128  # the neck
    ring = torch.stack([torch.linspace(25, 39, 8), torch.full((8,), 60.0)], dim=-1)[None]
    lines = torch.tensor([[0.0, 1.0, 60.0]])
    zones = image_shoulder_zones(ring, torch.tensor([[32.0, 48.0]]), lines)
    data.set_cut_lines(lines.expand(data.n_frames, 3), zones.expand(data.n_frames, 3))
    collar = torch.from_numpy(collar)
    clothing = data.clothing(0)[..., 0] > 0.5
    assert clothing[collar].all() and int(clothing.sum()) <= 6 * 10
    assert float(data.weight(0)[collar].max()) == 0
    assert float(data.target(0, torch.ones(3))[1][collar].max()) == 0
    for index in range(1, data.n_frames):                              # unpainted frames
        assert float(data.clothing(index).max()) == 0


def test_pixels_past_the_source_frame_are_never_targets(subject, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(subject, folder)
    track = tracking_format.read(str(folder / "tracking.npz"))
    # A crop of side 100 source pixels centred at x = 90 in a 120-wide source: crop columns
    # whose centres fall past x = 120 (the last 13 of 64 at this scale) show no picture.
    boxes = [[90.0, 60.0, 100.0]] * track.n_frames
    (folder / "prepare.json").write_text(json.dumps(
        {"crop_boxes": boxes, "source": {"width": 120, "height": 200}}))
    data = FrameData(str(folder))
    inside = data.inside(0)[..., 0]
    assert inside[:, :51].min() == 1 and inside[:, 52:].max() == 0
    assert float(data.weight(0)[:, 52:].max()) == 0
    assert float(data.target(0, torch.ones(3))[1][:, 52:].max()) == 0


def test_pixels_under_a_hand_are_never_targets(subject, tmp_path):
    """An occluder PNG (a hand, docs/TRAINING.md) zeroes the weight and the head region's alpha
    where it is 255 and changes nothing elsewhere, nor on frames without one."""
    import shutil

    from backend.fileio import write_png
    from backend.formats.prepared import OCCLUDERS, PreparedData

    folder = tmp_path / "data"
    shutil.copytree(subject, folder)
    before = FrameData(str(folder))
    occluder = np.zeros((before.height, before.width), np.uint8)
    occluder[30:50, 20:44] = 255                     # over the lower face
    (folder / OCCLUDERS).mkdir()
    write_png(PreparedData(str(folder)).image_path(OCCLUDERS, 2), occluder)
    after = FrameData(str(folder))
    hand = torch.from_numpy(occluder > 0)
    background = torch.ones(3)
    head = (before.target(2, background)[1][..., 0] > 0.5) & (before.weight(2)[..., 0] > 0.5)
    assert float(head[hand].float().mean()) > 0.5      # mostly head region: it was a target
    assert float(after.weight(2)[hand].max()) == 0
    assert float(after.target(2, background)[1][hand].max()) == 0
    assert torch.equal(after.weight(2)[~hand], before.weight(2)[~hand])
    assert torch.equal(after.target(2, background)[1][~hand], before.target(2, background)[1][~hand])
    for t in (0, 1, 3):
        assert torch.equal(after.weight(t), before.weight(t))
        assert float(after.occluder(t).max()) == 0


def test_unseen_gaussians_are_filled_from_seen_neighbours(tmp_path):
    """Behind an opaque face the Gaussians no training view shows get opaque and take their seen
    neighbours' colour; what the views show stays as it was. A short run's semi-transparent
    avatar has nothing unseen (nothing is filled)."""
    from backend.synth.render import synthesize
    from backend.train.fill import fill_unseen, visibility
    from backend.train.session import train_and_export

    torch.manual_seed(0)
    synthesize(str(tmp_path / "data"), n_frames=8, size=48, seed=2, video=False)
    outputs = train_and_export(str(tmp_path / "data"), str(tmp_path / "run"), "tiny",
                               {"iterations": 30, "fill_unseen": False}, device="cpu")
    trainer = outputs["trainer"]
    model = trainer.model
    assert fill_unseen(model, visibility(trainer, n_frames=4, scale=1.0)) == 0
    params = model.params
    rest_z = params["means"].detach()[:, 2]
    face = ~model.mouth
    front = face & (rest_z > rest_z[face].median())
    with torch.no_grad():   # an opaque shell over the front half
        params["opacity_logits"][front] = 8.0
        params["log_scales"][front] += 1.0
        params["opacity_logits"][face & ~front] = -4.0
    score = visibility(trainer, n_frames=4, scale=1.0)
    back = face & (rest_z < rest_z[face].quantile(0.2))
    assert float(score[back].median()) < 1e-3 * float(score[front].median())
    before = trainer.render_frame(0)[0].rgb.detach().clone()
    filled = fill_unseen(model, score)
    unseen = face & (score < 1e-3 * float(score[face].quantile(0.9)))
    assert filled == int(unseen.sum()) and filled >= int(back.sum()) // 2
    assert float(torch.sigmoid(params["opacity_logits"].detach()[unseen]).min()) >= 0.89
    after = trainer.render_frame(0)[0].rgb.detach()
    assert float((after - before).abs().max()) < 0.02
