"""The add-on builds argument lists for backend commands; they must parse with the backend's own
parsers, so a renamed flag fails here and not in a user's Blender."""

from __future__ import annotations

import os
import sys

import pytest

from backend.cli.main import build_parser

from .conftest import REPO


@pytest.fixture(scope="module")
def addon_pipeline():
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from toonsplat_package import load_toonsplat

    load_toonsplat()
    from toonsplat.addon import pipeline

    return pipeline


def _parse(command: str, arguments: list[str]):
    return build_parser().parse_args([command, *arguments])


@pytest.mark.parametrize("style, extra", [
    ("cel", {}), ("toon", {}), ("exemplar", {"exemplar": "IMAGE"}), ("model", {"style_model": "IMAGE"}),
    ("folder", {"stylized_folder": "FOLDER"}), ("none", {}),
])
def test_build_arguments_parse_with_the_backend(addon_pipeline, tmp_path, style, extra):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    extra = {k: str(tmp_path) for k in extra}
    arguments = addon_pipeline.build_arguments(
        str(video), str(tmp_path / "out"), style=style, style_strength=0.5, preset="default",
        iterations=100, device="cpu", frame_start=3, frame_end=50, frame_stride=2, size=256,
        head_model="builtin", **extra)
    args = _parse("build", arguments)
    assert args.video == str(video) and args.iters == 100 and args.size == 256
    assert (args.frame_start, args.frame_end, args.frame_stride) == (3, 50, 2)
    from backend.formats.options import BUILD, BuildOptions, from_args
    from backend.pipeline.build import style_spec

    options = from_args(BuildOptions, args, BUILD)
    assert options.style.strength == 0.5 and options.train.iters == 100
    spec = style_spec(options)
    assert spec == style or spec.endswith(":" + str(tmp_path))


def test_default_style_is_the_backends(addon_pipeline, tmp_path):
    import inspect

    from backend.formats.options import StyleOptions

    default = inspect.signature(addon_pipeline.build_arguments).parameters["style"].default
    assert default == StyleOptions().style == "cel"


def test_check_tracking_arguments_stop_after_prepare(addon_pipeline, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    arguments = addon_pipeline.build_arguments(str(video), str(tmp_path / "out"), stop_after="prepare")
    assert _parse("build", arguments).stop_after == "prepare"
    assert _parse("build", addon_pipeline.build_arguments(str(video), str(tmp_path))).stop_after is None


def test_tracking_options_reach_prepare(addon_pipeline, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    args = _parse("build", addon_pipeline.build_arguments(str(video), str(tmp_path / "out"),
                                                          refine_tracking=True, eye_contact=" 0-24 "))
    assert args.refine == "photometric" and args.eye_contact == "0-24"
    plain = _parse("build", addon_pipeline.build_arguments(str(video), str(tmp_path)))
    assert plain.refine == "none" and plain.eye_contact is None
    from backend.formats.options import BUILD, BuildOptions, from_args, to_argv
    from backend.pipeline.build import Build

    options = from_args(BuildOptions, args, BUILD)
    prepare = Build(options, str(tmp_path)).prepare_options()
    assert prepare.track.refine == "photometric" and prepare.track.eye_contact == "0-24"
    assert prepare.video == str(video) and prepare.out == str(tmp_path / "data")
    # The stage's own command takes the same options back from its flags.
    reparsed = _parse("prepare", to_argv(prepare))
    assert reparsed.refine == "photometric" and reparsed.eye_contact == "0-24"


@pytest.mark.parametrize("export_format, command", [("ply", "export"), ("video", "render")])
def test_export_arguments_parse_with_the_backend(addon_pipeline, tmp_path, export_format, command):
    avatar, tracking = tmp_path / "a.npz", tmp_path / "t.npz"
    avatar.write_bytes(b"x")
    tracking.write_bytes(b"x")
    chosen, arguments = addon_pipeline.export_arguments(str(avatar), str(tmp_path / "o"), export_format,
                                                        str(tracking))
    assert chosen == command
    args = _parse(chosen, arguments)
    assert args.avatar == str(avatar) and args.tracking == str(tracking)


@pytest.mark.parametrize("preset, strength, expected", [
    ("toon", 0.8, "toon:0.8"), ("chibi", 1.0, "chibi:1"), ("subtle", 0.25, "subtle:0.25"),
    ("none", 0.8, None), ("toon", 0.0, None)])
def test_proportions_reach_the_build(addon_pipeline, tmp_path, preset, strength, expected):
    """The Style panel's proportions preset and strength become build's --proportions, which the
    backend parses back to the same preset and strength (none or 0: no flag at all)."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    arguments = addon_pipeline.build_arguments(str(video), str(tmp_path / "out"), proportions=preset,
                                               proportions_strength=strength)
    assert ("--proportions" in arguments) == (expected is not None)
    args = _parse("build", arguments)
    from backend.formats.options import BUILD, BuildOptions, from_args
    from backend.formats.proportions import parse_spec

    options = from_args(BuildOptions, args, BUILD)
    assert options.proportions == (expected or "none")
    if expected:
        spec = parse_spec(options.proportions)
        assert (spec.preset, spec.strength) == (preset, strength)


def test_unknown_proportions_are_refused_before_the_backend_runs(addon_pipeline, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    ToonSplatError = addon_pipeline.ToonSplatError  # the add-on's copy of backend.errors

    with pytest.raises(ToonSplatError, match="unknown proportions preset 'manga'.*toon"):
        addon_pipeline.build_arguments(str(video), str(tmp_path), proportions="manga")
    with pytest.raises(ToonSplatError, match="outside 0..1"):
        addon_pipeline.build_arguments(str(video), str(tmp_path), proportions="toon",
                                       proportions_strength=1.5)
