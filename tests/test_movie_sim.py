"""Simulated in-situ movie: events, ground truth, drift, determinism and the written files (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from hrtem3d.contracts import TRUTH_EVENT_FIELDS, TRUTH_FIELDS
from hrtem3d.io import open_image
from hrtem3d.simulate import MultisliceConfig
from hrtem3d.simulate.movie import (
    MovieConfig,
    fourier_resample,
    shift_image,
    simulate_movie,
    write_movie,
)

EVENT_FRAMES = (2, 4, 6)


def tiny_config(**kw) -> MovieConfig:
    """8 frames of a 16-19 Å particle in a 35.8 Å cell, 0.08 Å potential sampling (about 1 s a movie)."""
    ms = MultisliceConfig(potential_sampling_A=0.08, store_sampling_A=0.16, store_gpts=224)
    settings = {"n_frames": 8, "event_frames": EVENT_FRAMES, "diameter_A": (16.0, 19.0), "multislice": ms, **kw}
    return MovieConfig(**settings)


@pytest.fixture(scope="module")
def movie():
    return simulate_movie(tiny_config(), seed=1)


def _column(truth: pd.DataFrame, frame: int, species: str, key_u: int, key_v: int) -> pd.DataFrame:
    t = truth
    return t[(t.frame == frame) & (t.species == species) & (t.key_u == key_u) & (t.key_v == key_v)]


def test_frames_shape_dtype_and_dose(movie):
    cfg = tiny_config()
    assert movie.frames.shape == (8, 224, 224) and movie.frames.dtype == np.float32
    assert np.isfinite(movie.frames).all() and (movie.frames >= 0).all()
    assert movie.clean.shape == movie.frames.shape
    assert movie.pixel_size_A == pytest.approx(0.16)
    assert movie.frame_interval_s == pytest.approx(0.133)
    expected = cfg.dose_e_per_A2 * movie.pixel_size_A**2
    for frame in movie.frames:
        assert frame.mean() == pytest.approx(expected, rel=0.05)
    assert list(movie.truth.columns) == TRUTH_FIELDS and list(movie.events.columns) == TRUTH_EVENT_FIELDS
    assert movie.drift_A.shape == (8, 2) and np.all(movie.drift_A[0] == 0)
    steps = np.linalg.norm(np.diff(movie.drift_A, axis=0), axis=1)
    assert np.all((steps > 0.5 * cfg.drift_A_per_frame) & (steps < 1.5 * cfg.drift_A_per_frame))


def test_events_match_truth(movie):
    ev, truth = movie.events, movie.truth
    assert list(ev.kind) == ["ce_loss", "o_vacancy", "migration", "migration"]
    assert list(ev.frame) == [2, 4, 6, 6]
    assert list(ev.species) == ["Ce", "O", "Ce", "Ce"]
    assert list(ev.n_after - ev.n_before) == [-1, -2, -1, 1]
    assert ev.n_before[0] >= 2 and ev.n_before[1] >= 3 and ev.n_before[2] >= 2 and ev.n_before[3] >= 1
    changed = set()
    for r in ev.itertuples():
        before = _column(truth, r.frame - 1, r.species, r.key_u, r.key_v)
        after = _column(truth, r.frame, r.species, r.key_u, r.key_v)
        assert before.n_atoms.item() == r.n_before and after.n_atoms.item() == r.n_after
        # the column is where the events table says, in that frame's drifted coordinates
        assert after.x_A.item() == pytest.approx(r.x_A) and after.y_px.item() == pytest.approx(r.y_px)
        changed.add((r.frame, r.species, r.key_u, r.key_v))
    # nothing else changes, ever
    key = ["species", "key_u", "key_v"]
    for f in range(1, 8):
        a = truth[truth.frame == f - 1].set_index(key).n_atoms
        b = truth[truth.frame == f].set_index(key).n_atoms
        assert a.index.equals(b.index)
        diff = {k for k in a.index if a[k] != b[k]}
        assert diff == {k[1:] for k in changed if k[0] == f}


def test_atom_totals_per_event(movie):
    tot = movie.truth.groupby(["frame", "species"]).n_atoms.sum().unstack()
    ce, o = tot["Ce"].to_numpy(), tot["O"].to_numpy()
    f1, f2, f3 = EVENT_FRAMES
    assert ce[f1] == ce[f1 - 1] - 1 and o[f1] == o[f1 - 1]
    assert o[f2] == o[f2 - 1] - 2 and ce[f2] == ce[f2 - 1]
    assert ce[f3] == ce[f3 - 1] and o[f3] == o[f3 - 1]
    assert np.all(np.diff(ce)[[f for f in range(7) if f + 1 not in EVENT_FRAMES]] == 0)


def test_event_sites_are_separated_surface_columns(movie):
    ev, truth = movie.events, movie.truth
    xy = ev[["x_A", "y_A"]].to_numpy() - movie.drift_A[ev.frame.to_numpy()]
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert 3.0 <= d[2, 3] <= 7.0  # migration from column A to column B
    for i, j in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]:
        assert d[i, j] >= 6.0
    size = movie.frames.shape[-1] * movie.pixel_size_A
    for f in range(8):
        p = xy + movie.drift_A[f]
        assert np.all((p >= 6.0) & (p <= size - 6.0))
    ce0 = truth[(truth.frame == 0) & (truth.species == "Ce")][["x_A", "y_A"]].to_numpy()
    n_nb = np.array([len(n) - 1 for n in cKDTree(ce0).query_ball_point(ce0, 4.2)])
    assert n_nb.max() == 6
    tree = cKDTree(ce0)
    for i in (0, 2, 3):  # Ce events sit at the projected periphery
        site = xy[i]
        assert len(tree.query_ball_point(site, 4.2)) - 1 < 6


def test_truth_moves_with_drift_and_matches_image(movie):
    truth, p = movie.truth, movie.pixel_size_A
    assert np.allclose(truth.x_px * p, truth.x_A) and np.allclose(truth.y_px * p, truth.y_A)
    key = ["species", "key_u", "key_v"]
    first = truth[truth.frame == 0].set_index(key)
    for f in range(1, 8):
        now = truth[truth.frame == f].set_index(key).loc[first.index]
        np.testing.assert_allclose(now.x_A - first.x_A, movie.drift_A[f, 0], atol=1e-9)
        np.testing.assert_allclose(now.y_A - first.y_A, movie.drift_A[f, 1], atol=1e-9)
    # Ce columns are bright peaks of the clean image at these optics: the nearest local maximum
    # (parabola-refined) must sit on the drifted truth position
    r = int(np.ceil(0.7 / p))
    for f in (0, 7):
        img = movie.clean[f]
        ce = truth[(truth.frame == f) & (truth.species == "Ce")]
        errors = []
        for x, y in zip(ce.x_px, ce.y_px, strict=True):
            i0, j0 = int(round(y)), int(round(x))
            win = img[i0 - r:i0 + r + 1, j0 - r:j0 + r + 1]
            i, j = np.unravel_index(np.argmax(win), win.shape)
            dy = _vertex(win[i - 1:i + 2, j]) if 0 < i < 2 * r else 0.0
            dx = _vertex(win[i, j - 1:j + 2]) if 0 < j < 2 * r else 0.0
            errors.append(np.hypot(j0 - r + j + dx - x, i0 - r + i + dy - y) * p)
        errors = np.array(errors)
        assert (errors < 0.3).mean() >= 0.8
        assert np.median(errors) < 0.05  # also catches a half-pixel convention error (0.08 Å)


def _vertex(v: np.ndarray) -> float:
    d = v[0] - 2 * v[1] + v[2]
    return 0.0 if d == 0 else 0.5 * (v[0] - v[2]) / d


def test_same_seed_same_movie(movie):
    again = simulate_movie(tiny_config(), seed=1)
    np.testing.assert_array_equal(again.frames, movie.frames)
    pd.testing.assert_frame_equal(again.truth, movie.truth)
    pd.testing.assert_frame_equal(again.events, movie.events)
    other = simulate_movie(tiny_config(), seed=2)
    assert other.frames.shape != movie.frames.shape or not np.array_equal(other.frames, movie.frames)
    assert not np.allclose(other.drift_A, movie.drift_A)


def test_write_movie_round_trip(movie, tmp_path):
    paths = write_movie(movie, tmp_path / "out")
    assert set(paths) == {"movie", "truth_columns", "truth_events"}
    src = open_image(paths["movie"])
    assert src.shape == movie.frames.shape
    assert src.pixel_size_A == pytest.approx(movie.pixel_size_A, rel=1e-6)
    assert src.frame_interval_s == pytest.approx(movie.frame_interval_s, rel=1e-6)
    np.testing.assert_array_equal(src.read_all(), movie.frames)
    truth = pd.read_csv(paths["truth_columns"])
    assert list(truth.columns) == TRUTH_FIELDS and len(truth) == len(movie.truth)
    np.testing.assert_allclose(truth.x_px, movie.truth.x_px, atol=1e-4)
    events = pd.read_csv(paths["truth_events"])
    assert list(events.kind) == list(movie.events.kind)
    assert list(events.n_after) == list(movie.events.n_after)
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_resample_and_shift_helpers():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    img = 1 + 0.3 * np.cos(2 * np.pi * 3 * xx / n) * np.sin(2 * np.pi * 5 * yy / n)
    up = fourier_resample(img, 96)
    yy2, xx2 = np.mgrid[0:96, 0:96] * (n / 96)
    np.testing.assert_allclose(up, 1 + 0.3 * np.cos(2 * np.pi * 3 * xx2 / n) * np.sin(2 * np.pi * 5 * yy2 / n),
                               atol=1e-5)
    down = fourier_resample(img, 48)
    assert down.mean() == pytest.approx(img.mean(), rel=1e-6)
    g = np.exp(-((xx - 20.0) ** 2 + (yy - 30.0) ** 2) / 8)
    moved = shift_image(g, np.array([2.5, -1.25]))  # (dx, dy) in pixels
    cy, cx = (moved * yy).sum() / moved.sum(), (moved * xx).sum() / moved.sum()
    assert (cx, cy) == pytest.approx((22.5, 28.75), abs=1e-3)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="event_frames"):
        MovieConfig(n_frames=4, event_frames=(1, 3, 4)).validate()
    with pytest.raises(ValueError, match="event_frames"):
        MovieConfig(event_frames=(0, 2, 3)).validate()
    with pytest.raises(ValueError, match="event sites"):  # too small for three sites 6 Å apart
        simulate_movie(tiny_config(diameter_A=(9.0, 10.0)), seed=0)
