"""Per-input decisions of `segment` and `track`: contrast polarity per file, one network per run,
a model fingerprint that never reads the whole file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import hrtem3d
from hrtem3d.cli import app
from hrtem3d.evaluate.metrics import match_columns


@pytest.fixture(scope="module")
def bright_and_dark(tmp_path_factory):
    """A simulated particle with bright atoms and the same image with its contrast reversed about the mean."""
    p = hrtem3d.simulate_particle(seed=2)
    d = tmp_path_factory.mktemp("contrast")
    bright = p.image.astype(np.float32)
    dark = (2 * bright.mean() - bright).astype(np.float32)  # relative intensity exactly negated
    np.save(d / "bright.npy", bright)
    np.save(d / "dark.npy", dark)
    return p, d / "bright.npy", d / "dark.npy"


def _segment(out: Path, *inputs: Path, contrast: str | None = "auto") -> dict[str, pd.DataFrame]:
    flag = [] if contrast is None else ["--contrast", contrast]  # None: segment's default
    r = CliRunner().invoke(app, ["segment", *map(str, inputs), "--out", str(out), "--pixel-size", "0.16",
                                 *flag, "--no-progress"])
    assert r.exit_code == 0, r.output
    return {p.stem: pd.read_csv(out / p.stem / "columns.csv") for p in inputs}


def _by_position(t: pd.DataFrame) -> pd.DataFrame:
    """The table's positions, species and counts in a fixed order (the row order of peaks that tie in
    height may differ between an image and its inverse)."""
    t = t[["x_px", "y_px", "species", "n_atoms"]]
    return t.iloc[np.lexsort((t.x_px, t.y_px))].reset_index(drop=True)


def test_auto_contrast_is_decided_for_each_input(bright_and_dark, tmp_path):
    p, bright, dark = bright_and_dark
    alone = _segment(tmp_path / "alone", dark)["dark"]
    for order in ((bright, dark), (dark, bright)):
        tables = _segment(tmp_path / order[0].stem, *order)
        for name, t in tables.items():  # both polarities found: the columns of the particle, each time
            m = match_columns(p.truth, t)
            assert (m.pred_row >= 0).mean() > 0.85, (order, name)
        pd.testing.assert_frame_equal(tables["dark"], alone)  # as if segmented on its own
        pd.testing.assert_frame_equal(_by_position(tables["dark"]), _by_position(tables["bright"]), atol=0.01)
    forced = _segment(tmp_path / "forced", dark, contrast="bright")["dark"]  # the wrong polarity does differ
    assert (match_columns(p.truth, forced).pred_row >= 0).mean() < 0.85


def test_default_contrast_is_as_recorded(bright_and_dark, tmp_path):
    """Without --contrast the image is taken as recorded (no guess that could flip a legitimate image): the
    bright image is found, the inverted one is segmented as it is, exactly as with --contrast bright."""
    p, bright, dark = bright_and_dark
    default = _segment(tmp_path / "default", bright, dark, contrast=None)
    assert (match_columns(p.truth, default["bright"]).pred_row >= 0).mean() > 0.85
    as_bright = _segment(tmp_path / "bright", dark, contrast="bright")["dark"]
    pd.testing.assert_frame_equal(default["dark"], as_bright)
    assert (match_columns(p.truth, default["dark"]).pred_row >= 0).mean() < 0.85


def test_errors_in_library_terms_and_in_the_clis(bright_and_dark, tmp_path):
    p, bright, _ = bright_and_dark
    with pytest.raises(hrtem3d.HrtemError) as e:
        hrtem3d.segment(p.image, p.pixel_size_A, contrast="purple")
    assert str(e.value).startswith("contrast must be") and e.value.param == "contrast"
    assert isinstance(e.value, ValueError)
    for command in (["segment", str(bright), "--out", str(tmp_path), "--pixel-size", "0.16"],
                    ["track", str(bright), "--out", str(tmp_path / "t"), "--pixel-size", "0.16"]):
        r = CliRunner().invoke(app, [*command, "--contrast", "purple"])
        assert r.exit_code == 2 and r.output.startswith("error: --contrast must be bright, dark or auto"), r.output
        assert len(r.output.strip().splitlines()) == 1


def test_track_loads_the_network_once_and_fingerprints_the_model_cheaply(tmp_path, monkeypatch):
    from test_movie_sim import tiny_config

    import hrtem3d.jobs.track_movie as tracking
    import hrtem3d.segmentation.segmenter as segmenter
    from hrtem3d.model.io import default_model_path
    from hrtem3d.simulate.movie import simulate_movie

    m = simulate_movie(tiny_config(n_frames=5, event_frames=(1, 2, 3)), seed=1)
    path = tmp_path / "movie.npy"
    np.save(path, m.frames)
    model = tmp_path / "model.safetensors"
    shutil.copy(default_model_path(), model)

    loads = []
    real = segmenter.load_model

    def counting(*a, **k):
        loads.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(segmenter, "load_model", counting)
    monkeypatch.setattr(tracking, "_SEGMENTERS", {})
    whole = Path.read_bytes

    def no_whole_model(self):
        assert self.suffix != ".safetensors", f"{self} read whole"
        return whole(self)

    monkeypatch.setattr(Path, "read_bytes", no_whole_model)
    settings = tracking.TrackSettings(pixel_size_A=m.pixel_size_A, chunk=2, model=str(model))
    r = tracking.track_movie(path, tmp_path / "out", settings, progress=False, figures=True)
    assert r["frames"] == 5 and (tmp_path / "out" / "figure2.png").exists()
    assert len(loads) == 1  # reference frame, chunks and figures share one network

    # the fingerprint lets the same run resume, and refuses a model whose weights changed
    stamp = (tmp_path / "out" / ".parts" / "chunk_00000000.json").stat().st_mtime_ns
    tracking.track_movie(path, tmp_path / "out", settings, progress=False, figures=False)
    assert (tmp_path / "out" / ".parts" / "chunk_00000000.json").stat().st_mtime_ns == stamp
    with open(model, "rb") as f:
        raw = bytearray(f.read())
    raw[-1] ^= 0x01  # one bit of the last weight
    model.write_bytes(bytes(raw))
    with pytest.raises(hrtem3d.HrtemError, match="another input or settings"):
        tracking.track_movie(path, tmp_path / "out", settings, progress=False, figures=False)
    fp = json.loads((tmp_path / "out" / ".parts" / "settings.json").read_text())["model"]
    assert isinstance(fp, str) and len(fp) == 16
