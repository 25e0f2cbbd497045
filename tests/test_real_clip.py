"""The quick variant of ``bench quality`` on a real webcam clip (``../shared/data/real``): the
first 4 s of cap13_edit2.mp4 at 256 px, built with the defaults and a short schedule, then the
same data trained against the real frames. Floors, not the bench's targets: a regression in the
head region, the neck cut, the crop or the fill shows here first."""

from __future__ import annotations

import os

import pytest

from backend.pipeline.bench_quality import clip_rows, default_clips

CLIP = next((c for c in default_clips() if os.path.basename(c) == "cap13_edit2.mp4"), None)


@pytest.mark.slow
@pytest.mark.skipif(CLIP is None, reason="../shared/data/real/cap13_edit2.mp4 is not beside the repository")
def test_quick_real_clip_build(tmp_path, torch_single_thread):
    rows = {(r.case, r.metric): r.value for r in clip_rows(CLIP, str(tmp_path / "cap13"), quick=True)}
    # Every stage ran and was timed.
    for stage in ("prepare", "stylize", "train", "export"):
        assert rows[("cap13_edit2", f"{stage} seconds")] > 0
    # The head region is learned against both the stylized and the real frames.
    assert rows[("cap13_edit2", "psnr_head")] > 18.0
    assert rows[("cap13_edit2-style-none", "psnr_head")] > 18.0
    assert rows[("cap13_edit2", "ssim_head")] > 0.5
    # The turntable covers the head model's silhouette at +-45 deg (the novel-view prior).
    assert min(rows[("cap13_edit2", "coverage_-45")], rows[("cap13_edit2", "coverage_45")]) > 90.0
    # Export is a preview, not a full reenactment.
    assert (tmp_path / "cap13" / "preview.mp4").exists()
    assert not (tmp_path / "cap13" / "reenactment.mp4").exists()
    assert (tmp_path / "cap13" / "turntable.png").exists()
