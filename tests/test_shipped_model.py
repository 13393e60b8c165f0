"""The shipped model on a simulated movie with ground truth: detection thresholds, calibration, tiling, drift.

These are the model-dependent checks of issue 11: the settings the model file carries must really act
on the answers (a tiny 4-step model puts every peak above any threshold, so it cannot show that).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.data.normalize import noise_level
from hrtem3d.evaluate.metrics import match_columns
from hrtem3d.model.io import default_model_path, read_metadata
from hrtem3d.segmentation.segmenter import TABLE_FIELDS, Segmenter
from hrtem3d.simulate.movie import write_movie

META = read_metadata(default_model_path())


def _precision_recall(truth: pd.DataFrame, pred: pd.DataFrame) -> tuple[float, float]:
    hit = int((match_columns(truth, pred).pred_row >= 0).sum())
    return hit / max(len(pred), 1), hit / max(len(truth), 1)


def test_per_species_detection_thresholds_are_applied(shipped_movie):
    m = shipped_movie
    need = {s: float(META["detection_threshold"][s]) for s in ("Ce", "O")}  # from the file, not the Segmenter
    strict_seg, loose_seg = Segmenter(contrast="bright"), Segmenter(contrast="bright")
    loose_seg.detection = None
    for f in (0, 3):
        truth = m.truth[m.truth.frame == f]
        strict = strict_seg.segment(m.frames[f], m.pixel_size_A).columns
        loose = loose_seg.segment(m.frames[f], m.pixel_size_A).columns
        for species, t in need.items():
            assert strict.loc[strict.species == species, "p_column"].min() >= t, (f, species)
        # without the thresholds faint peaks (mostly O: empty surface sites) come through, and exactly those go
        below = loose.p_column < loose.species.map(need)
        assert below.sum() >= 3 and loose[below].species.eq("O").mean() > 0.5, loose[below]
        assert len(strict) == len(loose) - below.sum()
        # ... and they are mostly false columns: precision rises (to >= 0.98), recall falls by 3 % at most here
        (p_strict, r_strict), (p_loose, r_loose) = _precision_recall(truth, strict), _precision_recall(truth, loose)
        assert p_strict > p_loose and p_strict >= 0.98 and r_strict >= r_loose - 0.05 and r_strict >= 0.95


def test_confidence_calibration_of_the_model_file_is_applied(shipped_movie):
    m = shipped_movie
    cal = META["column_calibration"]
    a, b, c = float(cal["a"]), float(cal["b"]), np.atleast_1d(cal["c"]).astype(float)
    seg, raw_seg = Segmenter(contrast="bright"), Segmenter(contrast="bright")
    raw_seg.calibration = None
    conf, right = [], []
    for f in range(4):
        s = seg.segment(m.frames[f], m.pixel_size_A)
        raw = raw_seg.segment(m.frames[f], m.pixel_size_A).columns.confidence.to_numpy(float)
        q = np.clip(raw, 1e-6, 1 - 1e-6)
        # the image's features: log relative noise of the working image and (a two-feature map) the mean
        # logit of every column's raw confidence
        feature = np.array([np.log(noise_level(s.working_image)), np.log(q / (1 - q)).mean()])[:len(c)]
        expect = 1 / (1 + np.exp(-(a * np.log(q / (1 - q)) + b + feature @ c)))
        got = s.columns.confidence.to_numpy(float)
        np.testing.assert_allclose(got, expect, atol=1e-6)
        assert np.abs(got - raw).max() > 1e-3  # the map is not the identity at this dose
        mm = match_columns(m.truth[m.truth.frame == f], s.columns)
        mm = mm[mm.pred_row >= 0]
        conf.append(mm.confidence.to_numpy(float))
        right.append(((mm.pred_n == mm.n_atoms) & (mm.pred_species == mm.species)).to_numpy())
    # calibrated: the mean confidence of matched columns is the fraction whose depth is right
    assert abs(np.concatenate(conf).mean() - np.concatenate(right).mean()) < 0.05


def test_a_map_with_shift_features_reads_the_particles_ratio_and_each_columns_count(shipped_movie):
    """`calibrate --shift-features` maps: the particle's count-to-size ratio and each column's count enter the
    map as `segmentation.confidence.column_features` defines them, from the columns the segmenter found."""
    from hrtem3d.segmentation.envelope_check import TYPICAL_RATIO, count_size_ratio

    m = shipped_movie
    seg, raw_seg = Segmenter(contrast="bright"), Segmenter(contrast="bright")
    seg.calibration = {"a": 1.0, "b": 0.0, "c": [1.0, 0.5], "features": ["log_ratio", "log_n"]}
    raw_seg.calibration = None
    s, raw = seg.segment(m.frames[0], m.pixel_size_A), raw_seg.segment(m.frames[0], m.pixel_size_A).columns
    ratio = count_size_ratio(s.columns)
    assert np.isfinite(ratio) and abs(np.log(ratio / TYPICAL_RATIO)) > 0.01  # the feature is not zero here
    q = np.clip(raw.confidence.to_numpy(float), 1e-6, 1 - 1e-6)
    z = np.log(q / (1 - q)) + np.clip(np.log(ratio / TYPICAL_RATIO), -1, 1)
    z += 0.5 * np.log(np.maximum(raw.n_atoms.to_numpy(float), 1))
    np.testing.assert_allclose(s.columns.confidence.to_numpy(float), 1 / (1 + np.exp(-z)), atol=1e-6)


def test_tiles_with_the_default_overlap_change_no_depth(shipped_movie):
    m = shipped_movie
    image = np.concatenate([m.frames[0], m.frames[2]], axis=1)  # 320 x 640: two particles side by side
    whole = Segmenter(contrast="bright", skip_vacuum=False)  # the whole frame, no box around the particles
    assert max(image.shape) <= whole.tile  # one forward pass
    tiled = Segmenter(contrast="bright", tile=448, skip_vacuum=False)  # default overlap; 2 x 4 tiles, seams
    assert tiled.overlap == whole.overlap >= 137  # the shipped network's receptive radius
    a, b = whole.segment(image, m.pixel_size_A), tiled.segment(image, m.pixel_size_A)
    assert np.abs(a.probs - b.probs).max() < 1e-4
    assert len(a.columns) == len(b.columns) >= 2 * 0.9 * (m.truth.frame == 0).sum()
    np.testing.assert_allclose(b.columns[["x_px", "y_px"]], a.columns[["x_px", "y_px"]], atol=1e-3)
    assert (a.columns.n_atoms.to_numpy() == b.columns.n_atoms.to_numpy()).all()
    assert (a.columns.species.to_numpy() == b.columns.species.to_numpy()).all()
    with pytest.raises(Exception, match="twice the overlap"):
        Segmenter(contrast="bright", tile=256)


@pytest.mark.slow
def test_track_measures_and_removes_a_non_diagonal_drift(shipped_movie, tmp_path):
    """Drift of +0.33, -0.21 Å/frame: x and y swapped anywhere (measure, store, correct) is caught."""
    m = shipped_movie
    files = write_movie(m, tmp_path / "movie")
    r = CliRunner().invoke(app, ["track", str(files["movie"]), "--out", str(tmp_path / "out"), "--no-figures",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    cols = pd.read_parquet(tmp_path / "out" / "columns.parquet")
    drift = cols.groupby("frame")[["drift_x_A", "drift_y_A"]].first().to_numpy()
    assert np.abs(m.drift_A[:, 0] - m.drift_A[:, 1]).max() > 1.5  # far from diagonal
    np.testing.assert_allclose(drift, m.drift_A, atol=0.25)  # measured within 0.17 Å; a swap errs by 0.5+
    # drift-corrected positions are those of the reference frame: every true column of frame 0 has a
    # 4-frame track there
    tracks = pd.read_parquet(tmp_path / "out" / "tracks.parquet")
    long = tracks[tracks.n_frames == 4]
    truth0 = m.truth[m.truth.frame == 0]
    assert len(long) >= 0.9 * len(truth0)
    d = np.hypot(long.xc_A.to_numpy()[:, None] - truth0.x_A.to_numpy()[None],
                 long.yc_A.to_numpy()[:, None] - truth0.y_A.to_numpy()[None])
    assert (d.min(0) < 0.3).mean() >= 0.9 and (d.min(1) < 0.3).mean() >= 0.95
    # per frame, the corrected position of a tracked column stays put
    linked = cols[cols.column_id >= 0]
    assert linked.groupby("column_id")[["xc_A", "yc_A"]].std().max().max() < 0.3


@pytest.mark.parametrize("corner", ["bottom-left", "top-right"])
def test_auto_contrast_of_a_dark_particle_in_a_corner_of_a_vacuum_frame(shipped_movie, corner):
    """The polarity is decided where the particle is (the largest non-vacuum box), not on the frame's
    centre, which here holds only vacuum."""
    m = shipped_movie
    frame0 = m.frames[0].astype(np.float32)
    dark = 2 * frame0.mean() - frame0  # relative contrast exactly negated
    rng = np.random.default_rng(4)
    big = rng.poisson(float(np.median(dark[:8])), (720, 720)).astype(np.float32)
    oy, ox = (400, 0) if corner == "bottom-left" else (0, 400)
    big[oy:oy + 320, ox:ox + 320] = dark  # the centre crop (232..488) sees no particle
    seg = Segmenter(contrast="auto")
    found = seg.segment(big, m.pixel_size_A).columns
    assert seg.polarity(np.zeros((8, 8))) == -1.0  # decided: atoms dark
    truth = m.truth[m.truth.frame == 0].assign(y_px=lambda t: t.y_px + oy, x_px=lambda t: t.x_px + ox)
    truth = truth.assign(x_A=truth.x_px * m.pixel_size_A, y_A=truth.y_px * m.pixel_size_A)
    precision, recall = _precision_recall(truth, found)
    assert recall >= 0.9 and precision >= 0.95


def test_a_frame_without_columns_gives_an_empty_table_with_every_field():
    seg = Segmenter(contrast="bright")
    s = seg.segment(np.full((96, 160), 50.0, np.float32), 0.16)  # flat: vacuum without noise
    assert len(s.columns) == 0
    assert list(s.columns.columns[:len(TABLE_FIELDS)]) == TABLE_FIELDS and "intensity" in s.columns
    assert s.labels.shape == (96, 160) and not s.labels.any()


def test_per_pixel_maps_on_a_non_square_input_are_skimage_resizes_of_the_working_maps(shipped_movie):
    from skimage.transform import resize

    m = shipped_movie
    img = m.frames[0][:300, :260].astype(np.float32)  # 300 x 260 at 0.16 Å -> resampled to 0.0995 Å
    up = resize(img, (483, 418), order=1, preserve_range=True).astype(np.float32)
    s = Segmenter(contrast="bright").segment(up, 0.16 * 300 / 483)
    assert s.probs.shape[1:] != up.shape and s.labels.shape == up.shape == s.confidence.shape
    want = resize(s.probs.argmax(0).astype(np.uint8), up.shape, order=0, preserve_range=True, anti_aliasing=False)
    assert (s.labels == want).all()
    conf = resize(s.probs.max(0), up.shape, order=1, preserve_range=True, anti_aliasing=False)
    np.testing.assert_allclose(s.confidence[2:-2, 2:-2], conf[2:-2, 2:-2], atol=1e-5)  # bilinear, same centres
    np.testing.assert_allclose(s.confidence, conf, atol=0.01)  # the outermost pixels: edge handling differs


def test_an_in_memory_network_is_checked_and_used_as_given(shipped_movie):
    from hrtem3d.errors import HrtemError
    from hrtem3d.model.io import load_default_model

    net, meta = load_default_model("cpu")
    m = shipped_movie
    a = Segmenter((net, meta), contrast="bright").segment(m.frames[0], m.pixel_size_A).columns
    b = Segmenter(contrast="bright").segment(m.frames[0], m.pixel_size_A).columns
    pd.testing.assert_frame_equal(a, b)
    for bad in ((net, "meta"), ("net", meta), (net,), 3):
        with pytest.raises(HrtemError):
            Segmenter(bad)
    with pytest.raises(HrtemError, match="pixel_size_A"):
        Segmenter((net, {"scheme": meta["scheme"]}))


def test_int8_backend_calibrates_on_the_first_frame_and_counts_close_to_float(shipped_movie):
    m = shipped_movie
    q = Segmenter(contrast="bright", backend="int8")
    assert q.backend == "int8" and q.engine is None  # quantised only when it has seen a frame
    got = q.segment(m.frames[0], m.pixel_size_A).columns
    assert q.engine is not None and q.engine.backend == "int8"
    ref = Segmenter(contrast="bright").segment(m.frames[0], m.pixel_size_A).columns
    mm = match_columns(ref.assign(x_A=ref.x_px * m.pixel_size_A, y_A=ref.y_px * m.pixel_size_A), got)
    hit = mm.pred_row >= 0
    assert hit.mean() >= 0.97 and (mm.pred_n[hit] == mm.n_atoms[hit]).mean() >= 0.85
