"""`hrtem3d track` on simulated in-situ movies: events against the truth, resuming, bad frames, workers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.evaluate.metrics import movie_depth_accuracy
from hrtem3d.segmentation.segmenter import TABLE_FIELDS
from hrtem3d.simulate.movie import MovieConfig, simulate_movie, write_movie
from hrtem3d.tracking.events import EVENT_FIELDS, match_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """The issue's movie: 24 frames at 1000 e/Å² per frame, drift, three events (seed 0)."""
    m = simulate_movie(MovieConfig(), seed=0)
    files = write_movie(m, tmp_path_factory.mktemp("movie"))
    return m, files


def _run(*args):
    return CliRunner().invoke(app, ["track", *map(str, args), "--no-progress"])


@pytest.mark.parametrize("seed", [101, 102])
def test_track_finds_every_event_of_the_simulated_movie(seed, tmp_path):
    """Movies outside the block the change-point thresholds were tuned on (seeds 0-19).

    Tolerances from docs/benchmarks.md (bench_events.py, shipped model): 40 of 40 true changes found on
    the held-out seeds 30-39 but 77 of 80 on seeds 0-19, 0.8 false events a movie and 2 of 10 movies
    with two or more: at least 3 of a movie's 4 changes found, at most two false events. Denoising
    removes noise, not the network's bias (docs/tracking.md): better than single frames, not perfect.
    """
    m = simulate_movie(MovieConfig(), seed=seed)
    files = write_movie(m, tmp_path / "movie")
    r = _run(files["movie"], "--out", tmp_path)
    assert r.exit_code == 0, r.output
    cols = pd.read_parquet(tmp_path / "columns.parquet")
    assert set(TABLE_FIELDS + ["time_s", "n_atoms_raw"]) <= set(cols.columns)
    np.testing.assert_allclose(cols.time_s, cols.frame * m.frame_interval_s, rtol=1e-6)  # from the TIFF
    assert cols.n_atoms.min() >= 1 and cols.confidence.between(0, 1).all()
    events = pd.read_csv(tmp_path / "events.csv")
    assert list(events.columns) == EVENT_FIELDS
    truth, found = match_events(events, m.events, m.pixel_size_A)
    assert (truth.found_row >= 0).sum() >= len(truth) - 1 == 3, truth  # within 2 frames and 0.7 Å
    assert (found.truth_row < 0).sum() <= 2, found  # at most two false events
    # column_id is stable: most true columns keep one id through the movie
    tracks = pd.read_parquet(tmp_path / "tracks.parquet")
    assert (tracks.n_frames == 24).sum() >= 0.8 * (m.truth.frame == 0).sum()
    assert (tracks.n_frames >= 20).sum() <= 1.1 * (m.truth.frame == 0).sum()  # few spurious long tracks
    # temporal denoising: depths of the true columns are right more often than in single frames
    # (seed 101: Ce 0.91 -> 0.94, O 0.78 -> 0.88)
    acc = movie_depth_accuracy(cols, m.truth)
    assert (acc.denoised > acc.single_frame).all() and acc.loc["Ce", "denoised"] >= 0.9, acc
    _check_figures(tmp_path, cols, events, m)


def _check_figures(out, cols, events, m) -> None:
    """The figures are images of the run: sizes, frames, and not blank."""
    from PIL import Image, ImageSequence

    gif = Image.open(out / "overlay.gif")
    frames = [np.asarray(f.convert("L"), float) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == len(m.frames) == cols.frame.nunique()
    assert min(gif.size) >= 0.5 * m.frames.shape[1]  # not shrunk to a thumbnail
    assert all(f.std() > 10 for f in frames) and np.abs(frames[0] - frames[-1]).mean() > 1  # the movie moves
    for name in ("figure2.png", "depth_traces.png", "event_map.png"):
        img = np.asarray(Image.open(out / name).convert("L"), float)
        assert min(img.shape) >= 300 and img.std() > 10 and (img < 128).mean() > 0.005, name  # drawn on
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events"] == len(events) and summary["frames"] == len(m.frames)


def test_track_resumes_after_an_interruption_and_skips_bad_frames(movie, tmp_path, monkeypatch):
    m, _ = movie
    frames = m.frames[:10].copy()
    frames[3, 5:9, 7] = np.nan
    frames[7] = np.inf
    path = tmp_path / "movie.npy"
    np.save(path, frames)
    out = tmp_path / "out"
    import hrtem3d.jobs.track_movie as tracking

    real = tracking.segment_chunk
    calls, armed = [], [True]

    def interrupted(*a, **k):
        calls.append(a[0].first)
        if armed[0] and len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the second chunk
        return real(*a, **k)

    monkeypatch.setattr(tracking, "segment_chunk", interrupted)
    r = _run(path, "--out", out, "--pixel-size", 0.16, "--chunk", 4, "--no-figures")
    assert r.exit_code == 130 and "rerun" in r.output
    done = out / ".parts" / "chunk_00000000.json"
    assert done.exists() and not (out / "columns.parquet").exists()  # nothing looks finished
    stamp = done.stat().st_mtime_ns
    calls.clear()
    armed[0] = False
    r = _run(path, "--out", out, "--pixel-size", 0.16, "--chunk", 4, "--no-figures")
    assert r.exit_code == 0, r.output
    assert calls == [4, 8] and done.stat().st_mtime_ns == stamp  # the finished chunk is not redone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_frames"] == [3, 7] and "skipped frames [3, 7]" in r.output
    cols = pd.read_parquet(out / "columns.parquet")
    assert sorted(cols.frame.unique()) == [0, 1, 2, 4, 5, 6, 8, 9]
    # a rerun with other settings into the same folder is refused, not mixed
    r = _run(path, "--out", out, "--pixel-size", 0.16, "--chunk", 5, "--no-figures")
    assert r.exit_code == 2 and "another input or settings" in r.output and "Traceback" not in r.output


def test_track_bad_arguments_are_one_line_errors(movie, tmp_path):
    _, files = movie
    for args in (["--start", 30], ["--start", 5, "--stop", 3], ["--chunk", 0], ["--contrast", "purple"],
                 ["--change-threshold", -1]):
        r = _run(files["movie"], "--out", tmp_path / "x", *args)
        assert r.exit_code == 2 and r.output.startswith("error:") and "Traceback" not in r.output, (args, r.output)
    r = _run(tmp_path / "missing.tif", "--out", tmp_path / "y")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_track_on_dask_workers_matches_one_process(movie, tmp_path):
    _, files = movie
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run(files["movie"], "--out", one, "--stop", 8, "--chunk", 4, "--no-figures").exit_code == 0
    r = _run(files["movie"], "--out", two, "--stop", 8, "--chunk", 4, "--workers", 2, "--no-figures")
    assert r.exit_code == 0, r.output
    a, b = pd.read_parquet(one / "columns.parquet"), pd.read_parquet(two / "columns.parquet")
    pd.testing.assert_frame_equal(a[TABLE_FIELDS], b[TABLE_FIELDS], atol=1e-5)


def test_track_single_frame_without_frame_rate(movie, tmp_path):
    m, _ = movie
    path = tmp_path / "one.npy"
    np.save(path, m.frames[:1])
    r = _run(path, "--out", tmp_path / "o", "--pixel-size", 0.16, "--no-figures")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames"] == 1 and summary["events"] == 0 and "time_s counts frames" in summary["note"]
    cols = pd.read_parquet(tmp_path / "o" / "columns.parquet")
    assert len(cols) > 0.5 * (m.truth.frame == 0).sum() and (cols.time_s == 0).all()


def test_track_movie_without_columns_still_writes_everything(tmp_path):
    path = tmp_path / "noise.npy"
    np.save(path, np.random.default_rng(0).poisson(5.0, (6, 64, 64)).astype(np.float32))
    r = _run(path, "--out", tmp_path / "o", "--pixel-size", 0.1, "--fps", 10)
    assert r.exit_code == 0, r.output
    for name in ("columns.parquet", "tracks.parquet", "events.csv", "overlay.gif", "event_map.png"):
        assert (tmp_path / "o" / name).exists(), name
    assert len(pd.read_csv(tmp_path / "o" / "events.csv")) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["in_envelope"] is False and "out of the model's envelope" in summary["warnings"][0]
    assert "warning:" in r.output  # on stderr, one line
    cols = pd.read_parquet(tmp_path / "o" / "columns.parquet")
    assert (cols.confidence <= 0.2).all() and (cols.confidence_raw <= 0.2).all()


def test_track_checks_the_pixel_size_against_the_lattice_and_can_take_it_from_there(movie, tmp_path):
    m, _ = movie
    path = tmp_path / "three.npy"
    np.save(path, m.frames[:3])
    r = _run(path, "--out", tmp_path / "off", "--pixel-size", 0.176, "--no-figures")  # 10 % too large
    assert r.exit_code == 0, r.output
    trust = json.loads((tmp_path / "off" / "trust.json").read_text())
    assert trust["pixel_size_source"] == "given" and trust["pixel_size_A"] == 0.176
    assert trust["lattice_check"]["disagrees"] and any("%" in w for w in trust["warnings"])
    assert "warning:" in r.output and "--pixel-size" in r.output
    r = _run(path, "--out", tmp_path / "lat", "--pixel-size", "lattice", "--no-figures")
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "lat" / "summary.json").read_text())
    assert summary["pixel_size_source"] == "lattice" and abs(summary["pixel_size_A"] / m.pixel_size_A - 1) < 0.02
    cols = pd.read_parquet(tmp_path / "lat" / "columns.parquet")
    assert abs(cols.x_A / cols.x_px - summary["pixel_size_A"]).max() < 1e-9  # the measured size is the one used
    r = _run(path, "--out", tmp_path / "lat", "--pixel-size", "lattice", "--no-figures")  # resumes: same answer
    again = json.loads((tmp_path / "lat" / "summary.json").read_text())
    assert r.exit_code == 0 and again["pixel_size_A"] == summary["pixel_size_A"] and again["frames"] == 3
