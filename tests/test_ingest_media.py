"""Real media files for the ingest and tracking tests, written with PyAV, plus tests of reading them.

Helpers here (``write_video``, ``face_frames``) are imported by the other ingest/tracking tests.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from backend.errors import InputError
from backend.ingest.sources import ImageSource, Selection, VideoSource, open_source


def write_video(path, frames, fps=10, codec="libx264", rotation=0, times=None):
    """Write RGB frames (list of (H, W, 3) uint8) as a real video file.

    Args:
        rotation: counter-clockwise display rotation stored in the display matrix.
        times: optional per-frame timestamps in seconds (variable frame rate).
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast"}
        if times is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
                frame.time_base = fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def astronaut():
    from skimage import data

    return data.astronaut()


def face_frames(n=12, size=256, shift_px=3, face=True):
    """Crops of the astronaut photo around her face, sliding ``shift_px`` per frame.

    With ``face=False`` the crops come from the lower half of the photo (no face).
    """
    image = astronaut()
    frames = []
    for i in range(n):
        x0 = 100 + i * shift_px
        y0 = 10 if face else 256
        frames.append(np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size]))
    return frames


def test_video_frames_times_and_selection(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    path = write_video(tmp_path / "grey.mp4", frames, fps=10)
    source = VideoSource(str(path))
    assert (source.info.width, source.info.height, source.info.rotation) == (64, 48, 0)
    got = list(source.frames())
    assert [f.index for f in got] == list(range(10))
    np.testing.assert_allclose([f.timestamp for f in got], np.arange(10) / 10, atol=1e-6)
    assert abs(float(got[5].image.mean()) - 100) < 4
    chosen = VideoSource(str(path), Selection(start=0.2, end=0.75, stride=2))
    assert [f.index for f in chosen.frames()] == [2, 4, 6]
    small = next(source.frames(long_side=32))
    assert small.image.shape == (24, 32, 3)


def test_rotation_from_display_matrix(tmp_path):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :16] = 255          # white stripe on the left of the stored frame
    path = write_video(tmp_path / "rotated.mov", [image] * 3, rotation=90)
    source = VideoSource(str(path))
    assert source.info.rotation == 90
    frame = next(source.frames())
    # Counter-clockwise by 90 degrees: the left stripe ends up at the bottom, frame is portrait.
    assert frame.image.shape[:2] == (64, 32)
    assert frame.image[-8:].mean() > 200 and frame.image[:40].mean() < 30


def test_variable_frame_rate_timestamps(tmp_path):
    times = [0.0, 0.04, 0.2, 0.25, 0.6, 0.61]
    frames = [np.full((32, 32, 3), 30 * i, np.uint8) for i in range(len(times))]
    path = write_video(tmp_path / "vfr.mkv", frames, fps=25, times=times)
    got = [f.timestamp for f in VideoSource(str(path)).frames()]
    np.testing.assert_allclose(got, times, atol=2e-3)


@pytest.mark.parametrize("suffix,codec", [(".webm", "libvpx-vp9"), (".mkv", "ffv1")])
def test_other_containers(tmp_path, suffix, codec):
    frames = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(4)]
    path = write_video(tmp_path / f"clip{suffix}", frames, codec=codec)
    assert len(list(VideoSource(str(path)).frames())) == 4


def test_bad_videos_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        VideoSource(str(empty))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(InputError, match="cannot read the video"):
        VideoSource(str(garbage))
    with pytest.raises(InputError, match="not found"):
        VideoSource(str(tmp_path / "missing.mp4"))
    with pytest.raises(InputError, match="exactly one"):
        open_source(video=str(empty), image=str(empty))


def test_image_folder_and_single_image(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 50 * i, np.uint8)).save(folder / f"f{i:03d}.png")
    (folder / "notes.txt").write_text("ignored")
    source = ImageSource(str(folder), Selection(start=1))
    got = list(source.frames())
    assert [f.name for f in got] == ["f001", "f002"] and got[1].image.mean() == 100
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="cannot read the image"):
        ImageSource(str(tmp_path / "broken.png"), single=True)
