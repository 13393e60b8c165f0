"""The contrast-scale benchmark (benchmarks/bench_contrast_scale.py) on one frame of the shipped movie."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_contrast_scale as bcs  # noqa: E402


def test_scaling_the_input_moves_a_contrast_reading_model_and_is_undone(shipped_movie, shipped_segmenter):
    m, seg = shipped_movie, shipped_segmenter
    truth = m.truth[(m.truth.frame == 0) & (m.truth.n_atoms > 0)].reset_index(drop=True)
    base = seg.normalize
    rows = bcs.scan_image(seg, m.frames[0], m.pixel_size_A, truth, [1.0, 2.0])
    assert seg.normalize is base  # the segmenter is left as it was found
    at = {r["s"]: r for r in rows}
    # the shipped model reads depth from absolute contrast: doubled contrast reads as thicker columns
    assert at[2.0]["Ce_bias"] > at[1.0]["Ce_bias"] + 0.3
    assert at[1.0]["Ce_exact"] > at[2.0]["Ce_exact"]
    assert all(0 < r["conf"] <= 1 and 0 < r["pmax"] <= 1 and r["recall"] > 0.8 for r in rows)
    assert np.isfinite([r["Ce_bias"] for r in rows]).all()
    # ... and so do the counts against the particle's width, the anchor of --contrast-gain auto
    assert at[2.0]["ratio"] > at[1.0]["ratio"] + 0.1
