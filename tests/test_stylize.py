"""Stage 1 stylization: metrics against scikit-image, the built-in styles, their temporal
stability, the prepared-data pipeline and command, external frames, and the frontal-frame helper."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from backend.cli.main import main
from backend.errors import InputError
from backend.formats import examples, tracking
from backend.stylize import builtin_stylizer, frontal_frame_indices, head_yaw, jitter, psnr, ssim
from backend.stylize.exemplar import ExemplarParams, ExemplarStylizer
from backend.stylize.metrics import MAX_PSNR_DB
from backend.stylize.synthetic import draw_face, exemplar_image, face_clip
from backend.stylize.toon import ToonParams, ToonStylizer, quantization_table

# -- metrics ----------------------------------------------------------------------------------


def _skimage_ssim(a, b):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, channel_axis=-1 if a.ndim == 3 else None)


@pytest.mark.parametrize("shape", [(40, 57, 3), (64, 64), (23, 31, 3)])
def test_ssim_and_psnr_match_skimage(shape):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=1e-5)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)


def test_ssim_matches_skimage_on_a_picture_and_its_shift():
    face = draw_face(96)
    shifted = np.roll(face, 2, axis=1)
    assert ssim(face, shifted) == pytest.approx(_skimage_ssim(face, shifted), abs=1e-5)
    assert ssim(face, face) == pytest.approx(1.0, abs=1e-6)
    assert psnr(face, face) == MAX_PSNR_DB


def test_jitter_of_a_still_and_a_noisy_clip():
    still = jitter([draw_face(48)] * 4)
    assert still == {"itf_db": MAX_PSNR_DB, "isi": pytest.approx(1.0, abs=1e-6), "pairs": 3}
    noisy = jitter(face_clip(5, size=48, noise=8.0))
    assert noisy["pairs"] == 4 and noisy["isi"] < 0.9
    # PSNR of two frames with independent noise of std 8: 10 log10(255^2 / (2 * 64)) ~ 27 dB.
    assert noisy["itf_db"] == pytest.approx(27.1, abs=1.0)
    assert jitter([draw_face(48)])["isi"] is None


# -- built-in styles --------------------------------------------------------------------------

STYLES = [("toon", lambda **kw: ToonStylizer(ToonParams(**kw))),
          ("exemplar", lambda **kw: ExemplarStylizer(exemplar_image(64), ExemplarParams(**kw)))]


@pytest.mark.parametrize("name, make", STYLES)
@pytest.mark.parametrize("height, width", [(72, 130), (400, 300)])
def test_builtin_styles_keep_any_frame_size(name, make, height, width):
    import cv2

    frame = cv2.resize(draw_face(256), (width, height))
    stylizer = make()
    out = stylizer.stylize(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frame).mean() > 3, "the style changed nothing"


@pytest.mark.parametrize("name, make", STYLES)
def test_tiny_and_thin_frames_do_not_crash(name, make):
    """OpenCV's DIS flow crashes the process on thin images; the stabilizer must avoid it."""
    stylizer = make()
    for shape in [(9, 9, 3), (12, 40, 3), (20, 200, 3), (40, 2000, 3)]:
        frame = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        for _ in range(2):
            assert stylizer.stylize(frame).shape == shape


@pytest.mark.parametrize("name, make", STYLES)
def test_strength_zero_returns_the_input(name, make):
    frame = next(face_clip(1, size=64, noise=3.0))
    out = make(strength=0.0, temporal=0.0).stylize(frame)
    np.testing.assert_array_equal(out, frame)


def test_quantization_table_is_a_continuous_monotonic_staircase():
    for levels in (2, 5, 9):
        table = quantization_table(levels, sharpness=8.0).astype(int)
        assert np.all(np.diff(table) >= 0)
        step = 255 / (levels - 1)
        plateaus = np.round(np.arange(levels) * step).astype(int)
        assert set(table[plateaus].tolist()) == set(plateaus.tolist())
        assert np.diff(table).max() <= 0.25 * step + 2    # soft steps, no jump
        # most inputs land near a plateau: the image is posterized
        near = np.abs(table[:, None] - plateaus[None]).min(axis=1) <= 0.1 * step
        assert near.mean() > 0.5


def test_toon_flattens_noise_and_draws_lines():
    noisy = next(face_clip(1, size=128, noise=6.0))
    out = ToonStylizer(ToonParams(temporal=0.0)).stylize(noisy).astype(float)
    corner = (slice(2, 18), slice(2, 18))    # background: a smooth gradient plus noise
    assert out[corner].std(axis=(0, 1)).max() < 0.5 * noisy[corner].astype(float).std(axis=(0, 1)).max()
    no_lines = ToonStylizer(ToonParams(temporal=0.0, line_weight=0.0)).stylize(noisy).astype(float)
    darker = (no_lines - out).sum(-1)
    assert darker.min() > -3, "lines only darken"
    assert (darker > 150).sum() > 100, "no ink lines"
    assert (darker > 150).mean() < 0.25, "ink everywhere"


def test_exemplar_moves_colours_toward_the_exemplar():
    import cv2

    exemplar = exemplar_image(64)
    frame = draw_face(96)
    out = ExemplarStylizer(exemplar, ExemplarParams(temporal=0.0)).stylize(frame)
    mean = lambda img: cv2.cvtColor(img, cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(float).mean(0)
    assert np.linalg.norm(mean(out) - mean(exemplar)) < 0.6 * np.linalg.norm(mean(frame) - mean(exemplar))


def test_exemplar_statistics_are_locked_to_a_slow_average():
    import cv2

    stylizer = ExemplarStylizer(exemplar_image(64), ExemplarParams(statistics_momentum=0.05))
    dark, bright = np.full((48, 48, 3), 30, np.uint8), np.full((48, 48, 3), 220, np.uint8)
    lightness = lambda img: float(cv2.cvtColor(img[:1, :1], cv2.COLOR_RGB2Lab)[0, 0, 0])
    stylizer.stylize(dark)
    assert stylizer.video_mean[0] == pytest.approx(lightness(dark))
    stylizer.stylize(bright)
    assert stylizer.video_mean[0] == pytest.approx(0.95 * lightness(dark) + 0.05 * lightness(bright))
    stylizer.reset()
    assert stylizer.video_mean is None


@pytest.mark.parametrize("name, make", STYLES)
@pytest.mark.parametrize("size", [128, 384])
def test_static_head_gets_no_added_jitter(name, make, size):
    frames = list(face_clip(8, size=size, noise=3.0))
    before = jitter(frames)
    after = jitter(make().stream(frames))
    assert after["isi"] >= before["isi"] - 0.01, (before, after)


def test_temporal_blend_removes_flicker_without_ghosts():
    frames = list(face_clip(8, size=128, noise=4.0))
    steady = jitter(ToonStylizer().stream(frames))["isi"]
    raw = jitter(ToonStylizer(ToonParams(temporal=0.0)).stream(frames))["isi"]
    assert steady > raw + 0.005
    # A cut to another picture: nothing of the old face may survive in the next output.
    cut = exemplar_image(128)
    stylizer = ToonStylizer()
    for _ in stylizer.stream(frames):
        pass
    after_cut = stylizer.stylize(cut).astype(int)
    fresh = ToonStylizer().stylize(cut).astype(int)
    assert np.abs(after_cut - fresh).mean() < 0.5
    # A moving head: the stabilized output follows it (no lag behind the per-frame style).
    moving = list(face_clip(8, size=128, noise=2.0, motion_px=20.0))
    per_frame = ToonStylizer(ToonParams(temporal=0.0))
    lag = [np.abs(out.astype(int) - per_frame.stylize(frame)).mean()
           for out, frame in zip(ToonStylizer().stream(moving), moving)]
    assert max(lag) < 3.0, lag


def test_flow_stabilizer_follows_a_moving_texture():
    """The previous output is warped along the input's motion before blending: with the view
    moving 4 px, the +20 carried by the previous output lands on the right pixels (0.6 x 20)."""
    import cv2

    from backend.stylize.temporal import FlowStabilizer

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (160, 160, 3)).astype(np.float32), (0, 0), 3)
    texture = cv2.normalize(texture, None, 20, 230, cv2.NORM_MINMAX).astype(np.uint8)
    first, second = texture[10:138, 10:138].copy(), texture[10:138, 14:142].copy()
    stabilizer = FlowStabilizer(weight=0.6)
    stabilizer(first, first + 20)
    carried = stabilizer(second, second).astype(int) - second
    assert carried[16:-16, 16:-16].mean() == pytest.approx(12.0, abs=1.0)
    assert carried[16:-16, 16:-16].std() < 1.0


def test_bad_style_parameters_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="levels"):
        builtin_stylizer("toon", {"levels": 1})
    with pytest.raises(InputError, match="unknown parameter"):
        builtin_stylizer("toon", {"colour": 3})
    with pytest.raises(InputError, match="not found"):
        builtin_stylizer(f"exemplar:{tmp_path / 'missing.png'}")
    with pytest.raises(InputError, match="unknown style"):
        builtin_stylizer("sketch")


# -- the pipeline and the command -------------------------------------------------------------


def make_data(folder, n=6, size=64, motion=4.0, masks=True):
    """A small prepared-data folder: a drawn face moving slowly, with masks."""
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True)
    if masks:
        (folder / "masks").mkdir()
    for i, frame in enumerate(face_clip(n, size=size, noise=2.0, motion_px=motion)):
        Image.fromarray(frame).save(frames_dir / f"{i:06d}.png")
        if masks:
            mask = np.zeros((size, size), np.uint8)
            mask[size // 8: size - size // 8, size // 5: size - size // 5] = 255
            Image.fromarray(mask).save(folder / "masks" / f"{i:06d}.png")
    return folder


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def _events(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_stylize_command_writes_frames_report_and_side_by_side(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    (data / "stylized").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "stylized" / "000099.png")   # stale
    code = main(["stylize", "--data", str(data), "--style", "toon", "--levels", "4",
                 "--param", "saturation=1.3", "--progress", "jsonl"])
    events = _events(capsys)
    assert code == 0, events
    names = sorted(os.listdir(data / "frames"))
    assert sorted(os.listdir(data / "stylized")) == names
    for name in names:
        assert _read(data / "stylized" / name).shape == _read(data / "frames" / name).shape
    report = json.loads((data / "stylize.json").read_text())
    assert report["style"] == "toon" and report["n_frames"] == 6
    assert report["parameters"]["levels"] == 4 and report["parameters"]["saturation"] == 1.3
    inputs = [_read(data / "frames" / n) for n in names]
    outputs = [_read(data / "stylized" / n) for n in names]
    expected_in = np.mean([_skimage_ssim(a, b) for a, b in zip(inputs, inputs[1:])])
    expected_out = np.mean([_skimage_ssim(a, b) for a, b in zip(outputs, outputs[1:])])
    assert report["metrics"]["input"]["isi"] == pytest.approx(expected_in, abs=1e-4)
    assert report["metrics"]["stylized"]["isi"] == pytest.approx(expected_out, abs=1e-4)
    assert report["timing"]["stylize_fps"] > 0
    side = _read(data / "qa" / "stylize_side_by_side.png")
    assert side.shape == (3 * 64, 128, 3)
    kinds = [e["event"] for e in events]
    assert "preview" in kinds and kinds[-1] == "result"


def test_stylize_exemplar_and_face_region_via_the_command(tmp_path, capsys):
    data = make_data(tmp_path / "data", n=3)
    style = tmp_path / "style.png"
    Image.fromarray(exemplar_image(48)).save(style)
    assert main(["stylize", "--data", str(data), "--style", f"exemplar:{style}", "--region", "face",
                 "--progress", "quiet"]) == 0
    report = json.loads((data / "stylize.json").read_text())
    assert report["stylizer"] == "exemplar (face region)" and report["parameters"]["region"] == "face"
    frame, out = _read(data / "frames" / "000000.png"), _read(data / "stylized" / "000000.png")
    # the mask box spans rows 8..56: outside the enlarged square the frame is untouched
    assert np.array_equal(out[:, :2], frame[:, :2])


def test_stylize_errors_name_the_folder(tmp_path, capsys):
    assert main(["stylize", "--data", str(tmp_path), "--progress", "jsonl"]) == 2
    error = _events(capsys)[-1]
    assert error["event"] == "error" and "frames" in error["message"] and "prepare" in error["message"]


def test_external_frames_are_validated_and_copied(tmp_path, capsys):
    data = make_data(tmp_path / "data", n=4, masks=False)
    external = tmp_path / "ext"
    external.mkdir()
    rng = np.random.default_rng(0)
    made = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    for i, image in enumerate(made):
        Image.fromarray(image).save(external / f"out_{i + 1}.png")   # other names: sorted order
    assert main(["stylize", "--data", str(data), "--style", f"frames:{external}",
                 "--progress", "quiet"]) == 0
    for i, image in enumerate(made):
        np.testing.assert_array_equal(_read(data / "stylized" / f"{i:06d}.png"), image)
    assert json.loads((data / "stylize.json").read_text())["stylizer"] == "frames"

    Image.fromarray(made[0][:32]).save(external / "out_3.png")         # wrong size
    assert main(["stylize", "--data", str(data), "--style", f"frames:{external}",
                 "--progress", "jsonl"]) == 2
    message = _events(capsys)[-1]["message"]
    assert "out_3.png" in message and "64 x 32" in message and "000002.png" in message

    os.unlink(external / "out_4.png")                                  # one missing
    assert main(["stylize", "--data", str(data), "--style", f"frames:{external}",
                 "--progress", "jsonl"]) == 2
    message = _events(capsys)[-1]["message"]
    assert "3 images" in message and "4 frames" in message and "000003.png" in message


# -- frontal frames for the progressive schedule ---------------------------------------------


def test_head_yaw_ignores_pitch_and_roll():
    yaw = np.array([-0.5, -0.1, 0.0, 0.15, 0.4])
    pitch = np.array([0.3, -0.2, 0.1, 0.25, -0.3])
    rotvec = Rotation.from_euler("YX", np.stack([yaw, pitch], 1)).as_rotvec()
    np.testing.assert_allclose(head_yaw(rotvec), yaw, atol=1e-9)
    joints = np.zeros((5, 5, 3))
    joints[:, 0] = rotvec
    np.testing.assert_allclose(head_yaw(joints), yaw, atol=1e-9)


def test_frontal_frame_indices_from_a_tracking_file(tmp_path):
    track = examples.random_tracking(n_frames=40)
    track.valid[3] = False
    path = tmp_path / "tracking.npz"
    tracking.write(path, track)
    yaw = Rotation.from_rotvec(track.joint_rotations[:, 0].astype(float)).as_euler("YXZ")[:, 0]
    expected = np.flatnonzero((np.abs(yaw) < 0.2) & track.valid)
    got = frontal_frame_indices(str(path))
    np.testing.assert_array_equal(got, expected)
    assert 0 < len(got) < 40
    assert 3 in frontal_frame_indices(track, valid_only=False)


def test_bench_reports_every_case_in_fps():
    from argparse import Namespace

    from backend.stylize import bench

    records = list(bench.run(Namespace(quick=True, device="cpu")))
    cases, metrics = ("toon@512", "exemplar@512", "cel@512"), ("throughput", "throughput_cpu")
    assert {(r.case, r.metric) for r in records} == {(c, m) for c in cases for m in metrics}
    assert all(r.unit == "fps" and r.value > 0 for r in records)
