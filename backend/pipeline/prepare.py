"""``python -m backend prepare``: a video, image folder or portrait in; the prepared-data folder out.

Ingest gives frames, masks and landmarks; tracking fits the head model to them (and to the pixels
with ``--refine photometric``), calibrates the gaze from eye-contact frames, and writes
tracking.npz, landmarks.npz and the QA pictures; prepare.json records what was done. Also converts
existing trackings (``--from-metrical DIR``, ``--from-vhap DIR``) into the same folder layout.
Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, replace

from ..formats import options as opts
from ..formats.options import PrepareOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opts.add_arguments(parser, PrepareOptions)


def run(args: argparse.Namespace, progress) -> int:
    prepare(opts.from_args(PrepareOptions, args), progress)
    return 0


def prepare(options: PrepareOptions, progress) -> dict:
    """Run ingest and tracking into ``options.out``; returns the prepare.json report.

    Raises:
        InputError: bad input or options (says which and what to do).
    """
    from ..errors import InputError
    from ..fileio import ensure_writable_folder, write_json
    from ..formats.prepared import PreparedData

    if options.size and not 64 <= options.size <= 4096:
        raise InputError(f"--size must be 0 (automatic) or between 64 and 4096 pixels, got "
                         f"{options.size}")
    if options.from_metrical or options.from_vhap:
        return _convert(options, progress)
    options.source()
    import numpy as np

    from ..ingest.frames import ingest
    from ..tracking import pipeline as tracking

    started = time.perf_counter()
    data = PreparedData(ensure_writable_folder(options.out))
    got = ingest(options, data, progress)
    options = replace(options, size=got.size)
    marks = got.landmarks
    eye_contact = tracking.check_options(options.track, len(marks.valid), options.size)
    progress.stage("fit", "fitting the head model to the landmarks")
    stamp = time.perf_counter()
    model = tracking.load_model(options.track)
    points = marks.points[..., :2]
    result = tracking.fit(model, points, marks.valid, got.intrinsics, options.size, options.track,
                          got.single_image, data, progress)
    flagged = tracking.flag_bad_fits(result, marks.valid, options.size)
    track = tracking.to_tracking(model, result, got.frames, marks.valid & ~flagged, options.size,
                                 got.info, options.track.landmark_embedding)
    eye_report = None
    if eye_contact is not None:
        track, eye_report = tracking.calibrate_gaze(model, track, eye_contact)
    tracking.write_tracking(data, track, points, marks.found, options.size)
    qa_paths = []
    if options.qa:
        from ..tracking.qa import write_strips

        qa_paths = write_strips(data, model, result, points, marks.found)
        for path in qa_paths:
            progress.preview(path, "landmark and mesh QA strip")
    timings = {**got.timings, "fit_s": time.perf_counter() - stamp}
    timings["total_s"] = time.perf_counter() - started
    summary = tracking.fit_summary(model, result, marks.valid, track.valid, flagged, options.size)
    summary["head_model"]["spec"] = options.track.head_model
    n_frames = len(got.crop_boxes)
    report = {"source": asdict(got.info), "options": asdict(options), "frames": n_frames,
              "crop_boxes": np.round(got.crop_boxes, 2).tolist(),
              "faces_found": int(marks.found.sum()), "valid": int(marks.valid.sum()),
              "hand_frames": got.hand_frames,
              "timings": timings, "fps_end_to_end": n_frames / timings["total_s"],
              **summary, "eye_contact": eye_report,
              "qa": [os.path.relpath(p, data.root) for p in qa_paths]}
    write_json(data.prepare_report, report)
    progress.result(f"prepared {n_frames} frames ({report['valid']} with a face) in "
                    f"{timings['total_s']:.1f} s", path=data.root)
    return report


def _convert(options: PrepareOptions, progress) -> dict:
    """--from-metrical / --from-vhap: another tracker's folder -> a prepared-data folder."""
    from ..errors import InputError
    from ..fileio import read_json
    from ..formats.prepared import PreparedData
    from ..tracking import converters

    if options.video or options.images or options.image or (options.from_metrical
                                                            and options.from_vhap):
        raise InputError("give one input: --from-metrical or --from-vhap cannot be combined "
                         "with --video/--images/--image or with each other")
    head_model = options.track.head_model
    PreparedData(options.out).clear_occluders()  # an earlier prepare's, not these frames'
    if options.from_metrical:
        converters.convert_metrical(options.from_metrical, options.out, head_model, progress)
    else:
        converters.convert_vhap(options.from_vhap, options.out, head_model, progress)
    return read_json(PreparedData(options.out).prepare_report, "prepare report")
