"""User models for Stage 1: TorchScript and ONNX files built here, their conventions (sidecar JSON,
flags), clear errors for bad outputs, and the seamless face-region mode."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from backend.cli.main import main
from backend.errors import InputError, NotAvailableError
from backend.formats import examples, tracking
from backend.stylize import model_stylizer
from backend.stylize.base import Stylizer
from backend.stylize.region import RegionStylizer, centre_box, feather_mask, tracking_boxes
from backend.stylize.synthetic import draw_face

# torch 2.13 marks TorchScript deprecated (still supported); the product loads users' files with it.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# Fixed weights: a colour mix with a bias, squashed into [0, 1] by a sigmoid.
MIX = np.array([[0.6, 0.3, 0.1], [-0.2, 1.1, 0.1], [0.3, -0.4, 0.9]], np.float32)
BIAS = np.array([0.05, -0.1, 0.2], np.float32)


class ColourMix(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(MIX)[:, :, None, None])
            self.conv.bias.copy_(torch.from_numpy(BIAS))

    def forward(self, x):
        return torch.sigmoid(2.0 * self.conv(x))


class BlueEverywhere(torch.nn.Module):
    """NHWC, BGR, [-1, 1], sizes a multiple of 8: copies channel 0 (blue) into all three."""

    def forward(self, x):
        if x.shape[3] != 3 or x.shape[1] % 8 != 0 or x.shape[2] % 8 != 0:
            raise RuntimeError("expected (1, H, W, 3) with H and W multiples of 8")
        return x[..., :1].expand(-1, -1, -1, 3) * 1.0


class Scaled(torch.nn.Module):
    def __init__(self, gain: float, offset: float = 0.0, channels: int = 3):
        super().__init__()
        self.gain, self.offset, self.channels = gain, offset, channels

    def forward(self, x):
        return x[:, : self.channels] * self.gain + self.offset


def save_script(module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def save_onnx_colour_mix(path):
    """The ColourMix model written with the onnx helpers (no exporter involved)."""
    from onnx import TensorProto, helper, numpy_helper, save

    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["mixed"]),
             helper.make_node("Mul", ["mixed", "two"], ["scaled"]),
             helper.make_node("Sigmoid", ["scaled"], ["styled"])]
    inits = [numpy_helper.from_array(MIX[:, :, None, None], "w"), numpy_helper.from_array(BIAS, "b"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    graph = helper.make_graph(
        nodes, "colour_mix",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, [1, 3, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return str(path)


def direct_colour_mix(frame):
    """Call the torch model directly, with the [0, 1] NCHW conventions done by hand."""
    x = torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = ColourMix()(x)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)


@pytest.fixture
def frame():
    return np.ascontiguousarray(draw_face(96)[:, 8:80])   # 96 x 72, not square


def test_torchscript_and_onnx_match_the_model_called_directly(tmp_path, frame):
    expected = direct_colour_mix(frame)
    scripted = model_stylizer(save_script(ColourMix(), tmp_path / "mix.pt"))
    onnx_model = model_stylizer(save_onnx_colour_mix(tmp_path / "mix.onnx"))
    for stylizer in (scripted, onnx_model):
        out = stylizer.stylize(frame)
        assert out.shape == frame.shape
        assert np.abs(out.astype(int) - expected).max() <= 1
    # The raw ONNX runtime output equals torch's to float precision.
    batch = (frame.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    with torch.no_grad():
        reference = ColourMix()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(onnx_model.runner(batch), reference, atol=1e-5)
    np.testing.assert_allclose(scripted.runner(batch), reference, atol=1e-6)


def test_sidecar_conventions_nhwc_bgr_signed_range_and_size_multiple(tmp_path):
    path = save_script(BlueEverywhere(), tmp_path / "blue.pt")
    (tmp_path / "blue.json").write_text(json.dumps(
        {"layout": "NHWC", "channels": "BGR", "value_range": "-1,1", "size_multiple": 8}))
    frame = np.ascontiguousarray(draw_face(70)[:50])                      # 50 x 70
    out = model_stylizer(path).stylize(frame)
    assert out.shape == frame.shape
    assert np.abs(out.astype(int) - frame[..., 2:3]).max() <= 1            # every channel = blue
    # A flag overrides the sidecar: as NCHW the model refuses its input, and the error says so.
    with pytest.raises(InputError, match="failed on an input of shape .1, 3, 56, 72"):
        model_stylizer(path, {"layout": "NCHW"}).stylize(frame)


def test_bad_model_outputs_are_clear_errors(tmp_path, frame):
    cases = [(Scaled(1.0, channels=1), "returned shape"),
             (Scaled(255.0), "it looks like 0,255"),
             (Scaled(float("nan")), "NaN")]
    for index, (module, message) in enumerate(cases):
        stylizer = model_stylizer(save_script(module, tmp_path / f"bad{index}.pt"))
        with pytest.raises(InputError, match=message):
            stylizer.stylize(frame)
    # The same model with the right declared output range works.
    ok = model_stylizer(str(tmp_path / "bad1.pt"), {"output_range": "0,255"}).stylize(frame)
    assert np.abs(ok.astype(int) - frame).max() <= 1


def test_model_file_and_sidecar_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="not found"):
        model_stylizer(str(tmp_path / "missing.pt"))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="unknown model type"):
        model_stylizer(str(tmp_path / "weights.bin"))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="TorchScript"):
        model_stylizer(str(tmp_path / "junk.pt"))
    path = save_script(ColourMix(), tmp_path / "mix.pt")
    (tmp_path / "mix.json").write_text(json.dumps({"layuot": "NHWC"}))
    with pytest.raises(InputError, match="unknown keys"):
        model_stylizer(path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # as if it were not installed
    with pytest.raises(NotAvailableError, match="pip install onnxruntime"):
        model_stylizer(save_onnx_colour_mix(tmp_path / "other.onnx"))


# -- face-region mode -------------------------------------------------------------------------


def test_face_region_identity_model_changes_nothing(tmp_path, frame):
    identity = model_stylizer(save_script(Scaled(1.0), tmp_path / "identity.pt"))
    region = RegionStylizer(identity, lambda i, f: (10.0, 20.0, 60.0, 80.0))
    for _ in range(3):
        np.testing.assert_array_equal(region.stylize(frame), frame)


def test_face_region_blends_back_without_seams(tmp_path):
    brighten = model_stylizer(save_script(Scaled(1.0, 0.2), tmp_path / "brighten.pt"))
    flat = np.full((120, 160, 3), 100, np.uint8)
    box = (60.0, 30.0, 100.0, 90.0)                   # 40 x 60; the square side is 1.25 * 60 = 75
    out = RegionStylizer(brighten, lambda i, f: box).stylize(flat).astype(int)
    assert out[60, 80, 0] == 151                      # the centre got the model's +0.2 (51 levels)
    assert (out[:, :40] == 100).all() and (out[:, 121:] == 100).all() and (out[:, :, 0] >= 100).all()
    ramp_px = 0.12 * 75
    steepest = max(np.abs(np.diff(out[..., 0], axis=0)).max(), np.abs(np.diff(out[..., 0], axis=1)).max())
    assert steepest <= int(np.ceil(1.5 * 51 / ramp_px)) + 1     # smoothstep slope, no seam


def test_face_region_square_may_leave_the_frame(frame):
    class Invert(Stylizer):
        name = "invert"

        def _stylize(self, crop):
            return 255 - crop

    out = RegionStylizer(Invert(), lambda i, f: (-20.0, -20.0, 30.0, 30.0)).stylize(frame)
    assert out.shape == frame.shape
    assert abs(int(out[5, 5, 0]) - (255 - int(frame[5, 5, 0]))) <= 1   # inside: inverted
    np.testing.assert_array_equal(out[60:, 40:], frame[60:, 40:])      # far away: untouched


def test_feather_mask_is_zero_on_the_border_and_one_inside():
    mask = feather_mask(50, 0.12)
    assert mask[0].max() < 0.02 and mask[:, -1].max() < 0.02 and mask[25, 25] == 1.0
    assert centre_box(100, 160) == (30.0, 0.0, 130.0, 100.0)


def test_tracking_boxes_project_the_head_centre():
    track = examples.random_tracking(n_frames=4, size=512)
    boxes = tracking_boxes(track.joint_rotations[:, 0] * 0, track.translation, track.intrinsics,
                           track.extrinsics)
    focal = float(track.intrinsics[0, 0, 0])
    # camera 1 m in front, y down: the head centre 2 cm above the root is 0.02 * focal px above
    np.testing.assert_allclose((boxes[:, 0] + boxes[:, 2]) / 2, 256.0, atol=1e-3)
    np.testing.assert_allclose((boxes[:, 1] + boxes[:, 3]) / 2, 256.0 - 0.02 * focal, atol=1e-3)
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], 0.30 * focal, atol=1e-3)


def test_model_in_face_region_via_the_command(tmp_path):
    data = tmp_path / "data"
    (data / "frames").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(draw_face(64)).save(data / "frames" / f"{i:06d}.png")
    small = examples.random_tracking(n_frames=3, size=64)
    small.intrinsics[:, 0, 0] = small.intrinsics[:, 1, 1] = 100.0   # a 30 px head box
    tracking.write(data / "tracking.npz", small)
    model = save_script(Scaled(-1.0, 1.0), tmp_path / "negative.pt")   # 1 - x
    assert main(["stylize", "--data", str(data), "--style", f"model:{model}", "--region", "face",
                 "--face-box", "tracking", "--progress", "quiet"]) == 0
    out = np.asarray(Image.open(data / "stylized" / "000000.png"))
    frame = draw_face(64)
    assert abs(int(out[30, 32, 1]) - (255 - int(frame[30, 32, 1]))) <= 1   # head centre: negated
    np.testing.assert_array_equal(out[:, :6], frame[:, :6])                # outside: untouched
    report = json.loads((data / "stylize.json").read_text())
    assert report["parameters"]["model"] == model and report["parameters"]["region"] == "face"
