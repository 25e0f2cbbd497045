"""User-supplied image-to-image models: TorchScript (``.pt``/``.ts``) and ONNX (``.onnx``).

A model takes one image tensor and returns one image tensor. How it wants its input is declared,
not guessed: by command-line flags or by a sidecar JSON file next to the model (``model.json``
or ``model.pt.json``); flags win over the sidecar, the sidecar over the defaults::

    {"layout": "NCHW", "value_range": "-1,1", "channels": "RGB", "size_multiple": 32,
     "input_size": 512, "output_range": "-1,1"}

* ``layout``: ``NCHW`` (PyTorch) or ``NHWC`` (TensorFlow exports).
* ``value_range``: ``0,1``, ``-1,1`` or ``0,255`` for the input; ``output_range`` defaults to it.
* ``channels``: ``RGB`` or ``BGR``.
* ``size_multiple``: height and width are padded (reflected) up to a multiple, then cropped back.
* ``input_size``: the image is resized to this square size first (fixed-size models; most
  useful with the face-region mode) and the output resized back. ``null``: native size.

TorchScript files are loaded with ``torch.jit.load`` (no pickled Python objects are run).
ONNX needs the optional ``onnxruntime`` package.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import InputError, NotAvailableError
from .base import Stylizer

RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0), "0,255": (0.0, 255.0)}
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")
RANGE_TOLERANCE = 0.1   # output values may overshoot the declared range by this fraction of it
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


@dataclass
class ModelConventions:
    """How a model wants its images. See the module docstring for each field."""

    layout: str = "NCHW"
    value_range: str = "0,1"
    channels: str = "RGB"
    size_multiple: int = 1
    input_size: int | None = None
    output_range: str | None = None

    def validated(self, source: str) -> ModelConventions:
        """Check every field; InputError naming ``source`` (a file or "flags") if one is wrong."""
        self.layout = str(self.layout).upper()
        self.channels = str(self.channels).upper()
        self.value_range = _range_key(self.value_range, source, "value_range")
        self.output_range = _range_key(self.output_range or self.value_range, source, "output_range")
        if self.layout not in LAYOUTS:
            raise InputError(f"{source}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.channels not in CHANNEL_ORDERS:
            raise InputError(f"{source}: channels must be one of {CHANNEL_ORDERS}, got {self.channels!r}")
        if int(self.size_multiple) < 1:
            raise InputError(f"{source}: size_multiple must be >= 1, got {self.size_multiple}")
        self.size_multiple = int(self.size_multiple)
        if self.input_size is not None and int(self.input_size) < 8:
            raise InputError(f"{source}: input_size must be >= 8 pixels or null, got {self.input_size}")
        self.input_size = None if self.input_size is None else int(self.input_size)
        return self


def _range_key(value: Any, source: str, name: str) -> str:
    key = str(value).replace(" ", "").replace("[", "").replace("]", "")
    if key not in RANGES:
        raise InputError(f"{source}: {name} must be one of {', '.join(RANGES)}, got {value!r}")
    return key


def sidecar_path(model_path: str) -> str | None:
    """The sidecar JSON of ``model_path`` if there is one (``model.json`` or ``model.pt.json``)."""
    for candidate in (os.path.splitext(model_path)[0] + ".json", model_path + ".json"):
        if os.path.isfile(candidate):
            return candidate
    return None


def load_conventions(model_path: str, overrides: dict[str, Any] | None = None) -> ModelConventions:
    """Defaults, then the sidecar JSON (if any), then ``overrides`` (flags; None values ignored)."""
    values: dict[str, Any] = {}
    known = {f.name for f in fields(ModelConventions)}
    sidecar = sidecar_path(model_path)
    if sidecar is not None:
        try:
            with open(sidecar, encoding="utf-8") as handle:
                loaded = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"the model sidecar {sidecar} is not valid JSON ({exc}); "
                             "fix or delete it") from exc
        if not isinstance(loaded, dict):
            raise InputError(f"the model sidecar {sidecar} must hold a JSON object")
        unknown = sorted(set(loaded) - known - {"comment", "name", "license"})
        if unknown:
            raise InputError(f"the model sidecar {sidecar} has unknown keys {unknown}; "
                             f"known keys: {sorted(known)}")
        values.update({k: v for k, v in loaded.items() if k in known})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    source = "the model flags" if overrides and any(v is not None for v in overrides.values()) else \
        (sidecar or "the model conventions")
    return ModelConventions(**values).validated(source)


class TorchScriptRunner:
    """Runs a TorchScript module on a float32 numpy batch."""

    def __init__(self, path: str, device: str = "cpu"):
        import torch

        self.path, self.device = path, device
        try:
            self.module = torch.jit.load(path, map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"cannot load {path} as a TorchScript model ({str(exc).splitlines()[0]}); "
                             "export it with torch.jit.script or torch.jit.trace and torch.jit.save") from exc

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            try:
                output = self.module(torch.from_numpy(batch).to(self.device))
            except Exception as exc:   # RuntimeError, torch.jit.Error (raised inside the script), ...
                raise InputError(_failed(self.path, batch, exc)) from exc
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise InputError(f"the model {self.path} returned {type(output).__name__}, not an image tensor")
        return output.detach().float().cpu().numpy()


class OnnxRunner:
    """Runs an ONNX model with onnxruntime on a float32 numpy batch."""

    def __init__(self, path: str, device: str = "cpu"):
        try:
            import onnxruntime
        except ImportError:
            raise NotAvailableError(f"running the ONNX model {path} needs onnxruntime: "
                                    "pip install onnxruntime (or use a TorchScript export)") from None
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.path = path
        try:
            self.session = onnxruntime.InferenceSession(path, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise InputError(f"cannot load {path} as an ONNX model ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            output = self.session.run(None, {self.input_name: batch})[0]
        except Exception as exc:  # onnxruntime's own exception types (shape, type errors)
            raise InputError(_failed(self.path, batch, exc)) from exc
        return np.asarray(output, dtype=np.float32)


def _failed(path: str, batch: np.ndarray, exc: Exception) -> str:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    return (f"the model {path} failed on an input of shape {tuple(batch.shape)} ({first_line}); "
            "check its layout, size_multiple and input_size (sidecar JSON or --model-* flags)")


def load_runner(path: str, device: str = "cpu"):
    """A TorchScript or ONNX runner for ``path`` (chosen by the file extension)."""
    if not os.path.isfile(path):
        raise InputError(f"model file not found: {path}; pass --style model:FILE with a TorchScript "
                         "(.pt) or ONNX (.onnx) image-to-image model")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".onnx":
        return OnnxRunner(path, device)
    if extension in TORCHSCRIPT_SUFFIXES:
        return TorchScriptRunner(path, device)
    raise InputError(f"{path}: unknown model type {extension!r}; use a TorchScript file "
                     f"({', '.join(TORCHSCRIPT_SUFFIXES)}) or an ONNX file (.onnx)")


class ModelStylizer(Stylizer):
    """A user model as a stylizer: conventions in, model, conventions out, checked.

    Args:
        runner: callable float32 batch -> float32 batch (TorchScriptRunner, OnnxRunner, ...).
        conventions: the model's declared conventions.
        path: the model file, for messages and the report.
    """

    name = "model"

    def __init__(self, runner, conventions: ModelConventions, path: str = ""):
        self.runner, self.conventions, self.path = runner, conventions, path

    def parameters(self) -> dict[str, Any]:
        return {"model": self.path, **asdict(self.conventions)}

    def _stylize(self, frame: np.ndarray) -> np.ndarray:
        batch, crop = to_model_input(frame, self.conventions)
        output = self.runner(batch)
        return from_model_output(output, frame.shape[:2], batch, crop, self.conventions, self.path)


def to_model_input(frame: np.ndarray, conventions: ModelConventions) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> the model's (1, 3, H', W') or (1, H', W', 3) float32 batch.

    Returns:
        The batch and the (height, width) of the image inside it (before size-multiple padding).
    """
    import cv2

    image = frame
    if conventions.input_size is not None:
        side = conventions.input_size
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA
                           if side < min(frame.shape[:2]) else cv2.INTER_LINEAR)
    height, width = image.shape[:2]
    multiple = conventions.size_multiple
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
    if conventions.channels == "BGR":
        image = image[..., ::-1]
    low, high = RANGES[conventions.value_range]
    values = image.astype(np.float32) * ((high - low) / 255.0) + low
    if conventions.layout == "NCHW":
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[None]), (height, width)


def from_model_output(output: np.ndarray, frame_size: tuple[int, int], batch: np.ndarray,
                      crop: tuple[int, int], conventions: ModelConventions, path: str) -> np.ndarray:
    """Check a model's output and turn it back into an (H, W, 3) uint8 RGB frame of ``frame_size``.

    The output must have the input's layout, batch 1, 3 channels, and a spatial size that is the
    input's times one common factor (1 for most models; 2 or 4 for upscalers).
    """
    import cv2

    expected = "(1, 3, H, W)" if conventions.layout == "NCHW" else "(1, H, W, 3)"
    shape = tuple(output.shape)
    if output.ndim == 3:
        output = output[None]
    channel_axis = 1 if conventions.layout == "NCHW" else 3
    if output.ndim != 4 or output.shape[0] != 1 or output.shape[channel_axis] != 3:
        raise InputError(f"the model {path} returned shape {shape}; expected {expected} for layout "
                         f"{conventions.layout} (set \"layout\" in its sidecar JSON or --model-layout)")
    image = output[0].transpose(1, 2, 0) if conventions.layout == "NCHW" else output[0]
    in_h, in_w = batch.shape[2:4] if conventions.layout == "NCHW" else batch.shape[1:3]
    factor = image.shape[0] / in_h
    if factor <= 0 or abs(image.shape[1] / in_w - factor) > 1e-6:
        raise InputError(f"the model {path} returned an image of {image.shape[1]} x {image.shape[0]} "
                         f"for an input of {in_w} x {in_h}; an image-to-image model must keep the "
                         "aspect ratio (set input_size or size_multiple in its sidecar JSON)")
    image = _to_uint8(image, conventions, path)
    image = image[:int(round(crop[0] * factor)), :int(round(crop[1] * factor))]
    if conventions.channels == "BGR":
        image = image[..., ::-1]
    if image.shape[:2] != tuple(frame_size):
        shrink = image.shape[0] > frame_size[0]
        image = cv2.resize(np.ascontiguousarray(image), (frame_size[1], frame_size[0]),
                           interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, conventions: ModelConventions, path: str) -> np.ndarray:
    """Map model values in the declared output range to uint8; error on NaN or far-off values."""
    if not np.isfinite(image).all():
        raise InputError(f"the model {path} returned NaN or infinite values")
    low, high = RANGES[conventions.output_range]
    span = high - low
    found_low, found_high = float(image.min()), float(image.max())
    if found_low < low - RANGE_TOLERANCE * span or found_high > high + RANGE_TOLERANCE * span:
        guess = next((k for k, (lo, hi) in RANGES.items()
                      if found_low >= lo - RANGE_TOLERANCE * (hi - lo)
                      and found_high <= hi + RANGE_TOLERANCE * (hi - lo)), None)
        hint = f" (it looks like {guess})" if guess else ""
        raise InputError(f"the model {path} returned values in [{found_low:.3g}, {found_high:.3g}], "
                         f"outside its declared output range {conventions.output_range}{hint}; "
                         "set \"output_range\" in its sidecar JSON or --model-output-range")
    scaled = (image - low) * (255.0 / span)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
