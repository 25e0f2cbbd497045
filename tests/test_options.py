"""Stage options: one declaration gives the flag, the typed object and the argv (the add-on's)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from backend.formats import options as opts
from backend.formats.options import (
    BUILD,
    STAGE,
    BuildOptions,
    PrepareOptions,
    StyleOptions,
    TrackOptions,
    TrainOptions,
)


def _parser(cls, context):
    parser = argparse.ArgumentParser(exit_on_error=False)
    opts.add_arguments(parser, cls, context)
    return parser


def _roundtrip(options, context):
    parsed = _parser(type(options), context).parse_args(opts.to_argv(options, context))
    return opts.from_args(type(options), parsed, context)


SAMPLES = [
    (STAGE, PrepareOptions(video="clip.mp4", out="data", end=3.5, stride=2, size=256, qa=False,
                           hands=False,
                           track=TrackOptions(refine="photometric", eye_contact="0-9", focal=900.0,
                                              n_expressions=20))),
    (STAGE, StyleOptions(data="data", style="exemplar:x.png", strength=0.25, levels=4,
                         param=["saturation=1.3", "temporal=0.8"], region="face",
                         model_range="-1,1")),
    (STAGE, TrainOptions(data="data", out="train", preset="tiny", iters=10, resume=True,
                         images="stylized", progressive=True, frontal_yaw=0.3, seed=3,
                         novel_prior=0.0)),
    (BUILD, BuildOptions(out="build", frame_start=3, frame_end=40, force=["train", "export"],
                         stop_after="prepare",
                         prepare=PrepareOptions(images="folder", size=384, hands=False,
                                                track=TrackOptions(refine="photometric")),
                         style=StyleOptions(style="none", strength=0.5),
                         train=TrainOptions(iters=99, device="cpu", novel_prior=0.5))),
]


@pytest.mark.parametrize("context, options", SAMPLES, ids=lambda v: getattr(v, "__name__", None)
                         or type(v).__name__)
def test_argv_round_trip(context, options):
    assert _roundtrip(options, context) == options


def test_defaults_write_no_flags_and_record_no_parameters():
    assert opts.to_argv(BuildOptions(), BUILD) == []
    assert opts.changed(BuildOptions()) == {}
    changed = opts.changed(BuildOptions(prepare=PrepareOptions(track=TrackOptions(refine="photometric"))))
    assert changed == {"prepare.track.refine": "photometric"}


def test_build_flags_and_stage_flags_differ_only_where_declared():
    build = _parser(BuildOptions, BUILD)
    # Fields the build sets itself are no build flags.
    for flag in ("--from-metrical", "--data", "--resume", "--start"):
        with pytest.raises((argparse.ArgumentError, SystemExit)):
            build.parse_args(["--out", "o", flag, "x"])
    # A build name for a stage flag: the stage keeps its own.
    assert build.parse_args(["--out", "o", "--refine-tracking", "photometric"]).refine == "photometric"
    assert _parser(PrepareOptions, STAGE).parse_args(["--out", "o", "--refine", "photometric"]).refine \
        == "photometric"


def test_every_flag_has_its_help_once():
    def leaves(cls):
        for item in fields(cls):
            if item.metadata.get("nested"):
                yield from leaves(item.default_factory)
            else:
                yield item

    for cls in (PrepareOptions, StyleOptions, TrainOptions, BuildOptions):
        for item in leaves(cls):
            assert item.metadata["hidden"] or item.metadata["help"], f"{cls.__name__}.{item.name}"
    # The build's flags are the stages' flags: the same help object, not a copy.
    build_help = {a.dest: a.help for a in _parser(BuildOptions, BUILD)._actions}
    stage_help = {a.dest: a.help for a in _parser(PrepareOptions, STAGE)._actions}
    assert build_help["eye_contact"] is stage_help["eye_contact"]


def test_a_build_option_reaches_its_stage(tmp_path):
    """What a build option becomes in the stage it belongs to (no argv in between)."""
    from backend.pipeline.build import Build

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    parsed = _parser(BuildOptions, BUILD).parse_args(
        ["--out", str(tmp_path / "b"), "--video", str(video), "--expressions", "20",
         "--style-strength", "0.3", "--seed", "7", "--style", "none"])
    build = Build(opts.from_args(BuildOptions, parsed, BUILD), str(tmp_path / "b"))
    prepare, train = build.prepare_options(), build.train_options()
    assert prepare.track.n_expressions == 20 and prepare.out == str(tmp_path / "b" / "data")
    assert train.seed == 7 and train.images == "frames" and train.resume
    assert train.preset in ("cpu-fast", "gpu-paper")
    assert build.style_options().strength == 0.3


@pytest.mark.parametrize("flag, field, read, stage_value, build_value, preset_values, bad", [
    # --novel-prior 0 turns cpu-fast's prior off; a negative weight is refused
    ("--novel-prior", "novel_prior", lambda c: c.novel.weight, "0", "0.25", (1.0, 0.0), -1.0),
    # --register-at 0 turns cpu-fast's pose registration off; a share of 1 or more is refused
    ("--register-at", "register_at", lambda c: c.register.at, "0", "0.3", (0.5, 0.0), 1.5),
])
def test_a_training_flag_reaches_the_training_config(flag, field, read, stage_value, build_value,
                                                     preset_values, bad):
    """The flag sets its config value in train and in build (on either preset); unset, each
    preset's own value stands (cpu-fast, gpu-paper); a bad value is refused, naming the flag."""
    from backend.errors import InputError
    from backend.train.cli import training_overrides
    from backend.train.config import make_config

    stage = _parser(TrainOptions, STAGE).parse_args(["--data", "d", "--out", "o", flag, stage_value])
    options = opts.from_args(TrainOptions, stage, STAGE)
    assert read(make_config("cpu-fast", **training_overrides(options))) == float(stage_value)
    build = _parser(BuildOptions, BUILD).parse_args(["--out", "b", flag, build_value])
    options = opts.from_args(BuildOptions, build, BUILD).train
    assert read(make_config("gpu-paper", **training_overrides(options))) == float(build_value)
    for preset, value in zip(("cpu-fast", "gpu-paper"), preset_values):
        assert read(make_config(preset, **training_overrides(TrainOptions()))) == value
    with pytest.raises(InputError, match=f"{flag} {bad}"):
        training_overrides(TrainOptions(**{field: bad}))
