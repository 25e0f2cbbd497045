"""Frame sources: a video file, a folder of images, or one portrait, read one frame at a time.

A source is iterated twice by ``prepare`` (a light detection pass, then the crop pass), so it
re-opens the file on every iteration and never holds more than one decoded frame: a 10-minute
1080p video streams through in constant memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Frame:
    """One decoded frame, already rotated for display."""

    index: int          # index of the frame in the source (decode order; image order for folders)
    timestamp: float    # seconds from the start of the source (from pts for videos)
    image: np.ndarray   # (H, W, 3) uint8 RGB
    name: str = ""      # file stem for image folders, empty for videos


@dataclass
class SourceInfo:
    """What a source is, for prepare.json and the tracking file."""

    kind: str                       # "video", "images" or "image"
    path: str
    fps: float
    width: int                      # display width (after rotation)
    height: int
    rotation: int = 0               # counter-clockwise degrees applied to decoded frames
    n_frames: int | None = None     # as reported by the container (may be missing or wrong)
    extra: dict = field(default_factory=dict)


class Selection:
    """Which frames to keep: ``start``/``end`` (seconds for videos, indices for images), ``stride``."""

    def __init__(self, start: float = 0.0, end: float | None = None, stride: int = 1):
        if stride < 1:
            raise InputError(f"--stride must be at least 1, got {stride}")
        if end is not None and end <= start:
            raise InputError(f"--end ({end}) must be after --start ({start})")
        self.start, self.end, self.stride = float(start), end, int(stride)
        self._kept = 0

    def reset(self) -> None:
        self._kept = 0

    def wants(self, position: float) -> bool | None:
        """True to keep, False to skip, None when past the end (stop reading)."""
        if self.end is not None and position >= self.end:
            return None
        if position < self.start:
            return False
        keep = self._kept % self.stride == 0
        self._kept += 1
        return keep


class VideoSource:
    """A video file decoded with PyAV; frames come rotated upright and timed from their pts."""

    def __init__(self, path: str, selection: Selection | None = None):
        self.path = os.fspath(path)
        self.selection = selection or Selection()
        self.info = self._probe()

    def _open(self):
        import av

        if not os.path.isfile(self.path):
            raise InputError(f"video not found: {self.path}; check the --video path")
        if os.path.getsize(self.path) == 0:
            raise InputError(f"the video {self.path} is an empty file (0 bytes); export it again")
        try:
            container = av.open(self.path)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise InputError(f"cannot read the video {self.path}: {exc}; make sure it is an "
                             "mp4/mov/webm/mkv video that a media player can play") from exc
        if not container.streams.video:
            container.close()
            raise InputError(f"{self.path} has no video stream; pass a video file")
        return container

    def _probe(self) -> SourceInfo:
        container = self._open()
        try:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 30.0
            rotation = _stream_rotation(stream)
            first = next(self._decode(container, rotation_hint=rotation), None)
            if first is None:
                raise InputError(f"the video {self.path} holds no decodable frame; it may be "
                                 "truncated or empty: export or copy it again")
            rotation = first[1]
            height, width = first[0].image.shape[:2]
            return SourceInfo("video", self.path, fps, width, height, rotation,
                              n_frames=int(stream.frames) or None,
                              extra={"codec": stream.codec_context.name})
        finally:
            container.close()

    def _decode(self, container, rotation_hint: int = 0, size=None):
        """Yield (Frame, rotation) for every decoded frame; ``size`` scales to a long side."""
        import av

        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for packet in container.demux(stream):
                for raw in packet.decode():
                    rotation = _frame_rotation(raw, rotation_hint)
                    yield Frame(index, _timestamp(raw, index, self.info_fps(stream)),
                                _to_rgb(raw, rotation, size)), rotation
                    index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise InputError(f"cannot decode the video {self.path}: {exc}; re-encode it "
                                 "(e.g. to H.264 mp4)") from exc
            import logging
            logging.getLogger("toonsplat").warning(
                "%s: decoding stopped after %d frames (%s); using the frames read so far",
                self.path, index, exc)

    @staticmethod
    def info_fps(stream) -> float:
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else 30.0

    def frames(self, long_side: int | None = None) -> Iterator[Frame]:
        """Yield the selected frames, optionally scaled so the long side is ``long_side``."""
        container = self._open()
        self.selection.reset()
        try:
            for frame, _ in self._decode(container, self.info.rotation, long_side):
                keep = self.selection.wants(frame.timestamp)
                if keep is None:
                    break
                if keep:
                    yield frame
        finally:
            container.close()


def _stream_rotation(stream) -> int:
    """Counter-clockwise rotation from the legacy ``rotate`` tag (which is clockwise)."""
    tag = (stream.metadata or {}).get("rotate")
    try:
        return int(-round(float(tag))) % 360 if tag is not None else 0
    except ValueError:
        return 0


def _frame_rotation(raw, fallback: int) -> int:
    """Counter-clockwise display rotation from the frame's display matrix, else ``fallback``."""
    try:
        rotation = raw.rotation
    except (AttributeError, ValueError):
        rotation = None
    if rotation is None or (rotation == 0 and fallback):
        return fallback
    return int(round(rotation / 90.0)) * 90 % 360


def _timestamp(raw, index: int, fps: float) -> float:
    if raw.pts is not None and raw.time_base is not None:
        return float(raw.pts * raw.time_base)
    return index / fps


def _to_rgb(raw, rotation: int, long_side: int | None) -> np.ndarray:
    width, height = raw.width, raw.height
    if long_side and max(width, height) > long_side:
        factor = long_side / max(width, height)
        width, height = max(2, round(width * factor)), max(2, round(height * factor))
        image = raw.reformat(width=width, height=height, format="rgb24").to_ndarray()
    else:
        image = raw.to_ndarray(format="rgb24")
    if rotation % 360:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


class ImageSource:
    """A folder of images (sorted by name) or one image file, read one at a time."""

    def __init__(self, path: str, selection: Selection | None = None, fps: float = 25.0,
                 single: bool = False):
        self.path = os.fspath(path)
        self.selection = selection or Selection()
        self.files = self._list(single)
        first = self._read(self.files[0])
        kind = "image" if single else "images"
        self.info = SourceInfo(kind, self.path, float(fps), first.shape[1], first.shape[0],
                               n_frames=len(self.files))

    def _list(self, single: bool) -> list[str]:
        if single:
            if not os.path.isfile(self.path):
                raise InputError(f"image not found: {self.path}; check the --image path")
            return [self.path]
        if not os.path.isdir(self.path):
            raise InputError(f"image folder not found: {self.path}; check the --images path")
        files = sorted(os.path.join(self.path, name) for name in os.listdir(self.path)
                       if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."))
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {self.path}; "
                             "point --images at a folder of frames")
        return files

    def _read(self, path: str, long_side: int | None = None) -> np.ndarray:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as handle:
                image = ImageOps.exif_transpose(handle).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise InputError(f"cannot read the image {path}: {exc}; re-save it as PNG or JPEG") from exc
        if long_side and max(image.size) > long_side:
            factor = long_side / max(image.size)
            image = image.resize((max(2, round(image.width * factor)),
                                  max(2, round(image.height * factor))), Image.BILINEAR)
        return np.asarray(image)

    def frames(self, long_side: int | None = None) -> Iterator[Frame]:
        self.selection.reset()
        for index, path in enumerate(self.files):
            keep = self.selection.wants(index)
            if keep is None:
                break
            if keep:
                stem = os.path.splitext(os.path.basename(path))[0]
                yield Frame(index, index / self.info.fps, self._read(path, long_side), stem)


def open_source(video: str | None = None, images: str | None = None, image: str | None = None,
                selection: Selection | None = None, fps: float = 25.0):
    """The source named by exactly one of ``video``, ``images``, ``image``."""
    given = [name for name, value in (("--video", video), ("--images", images), ("--image", image))
             if value]
    if len(given) != 1:
        raise InputError("give exactly one of --video FILE, --images DIR or --image FILE"
                         + (f" (got {', '.join(given)})" if given else ""))
    if video:
        return VideoSource(video, selection)
    if images:
        return ImageSource(images, selection, fps)
    return ImageSource(image, Selection(), fps, single=True)
