"""The shipped pair: a static reader, a vibrating reader, and the vibration gate that routes each input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.errors import HrtemError
from hrtem3d.segmentation.route import SHIPPED_READING, LatticeRoute
from hrtem3d.segmentation.segmenter import Segmenter


@pytest.fixture(scope="module")
def routed(shipped_segmenter):
    return shipped_segmenter  # the default: routed


@pytest.fixture(scope="module")
def readers():
    return {"static": Segmenter(lattice="static"), "vibrating": Segmenter(lattice="vibrating")}


def test_the_shipped_readings_are_two_networks_and_the_default_routes_between_them(shipped_segmenter, readers):
    assert shipped_segmenter.lattice_reading == SHIPPED_READING == "auto" and shipped_segmenter.route is not None
    static, vib = readers["static"], readers["vibrating"]
    assert static.route is None and static.lattice_reading == "static" and vib.route is None
    assert vib.lattice_reading == "vibrating" and not vib.model.config.lattice_heads  # its head fixed
    assert vib.calibration != static.calibration  # each reader its own confidence map
    assert shipped_segmenter.vibrating.lattice_reading == "vibrating"
    with pytest.raises(HrtemError, match="lattice must be one of static, vibrating, auto"):
        Segmenter(lattice="hot")


def test_the_shipped_gate_threshold_came_from_training_images():
    from hrtem3d.model.gate import default_gate_path, load_gate

    route = LatticeRoute.shipped()
    assert 0.5 < route.threshold < 1 and route.pixel_size_A == 0.16 and route.normalization == "relative"
    assert "percentile" in load_gate(default_gate_path())[1]["threshold_source"]  # not a test set's figure


@pytest.mark.parametrize("threshold, reading", [(0.0, "vibrating"), (1.0, "static")])
def test_each_image_is_read_by_the_reader_its_gate_chooses(routed, readers, shipped_movie, threshold, reading,
                                                           monkeypatch):
    image, px = shipped_movie.frames[0], shipped_movie.pixel_size_A
    monkeypatch.setattr(routed.route, "threshold", threshold)
    r = routed.segment(image, px)
    assert r.lattice == reading and r.p_vibrating == pytest.approx(routed.route.p_vibrating(image, px))
    assert 0 < r.p_vibrating < 1
    want = readers[reading].segment(image, px).columns
    other = readers[{"static": "vibrating", "vibrating": "static"}[reading]].segment(image, px).columns
    pd.testing.assert_frame_equal(r.columns, want)
    assert not other[["n_atoms", "confidence"]].equals(want[["n_atoms", "confidence"]])  # the route is visible
    told = routed.segment(image, px, lattice=reading)  # a reading given is used without asking the gate
    assert told.p_vibrating is None and told.lattice == reading
    pd.testing.assert_frame_equal(told.columns, want)


def test_a_file_is_routed_once_on_its_first_frame(routed, shipped_movie, tmp_path, monkeypatch):
    calls = []
    real = routed.route.p_vibrating
    monkeypatch.setattr(routed.route, "p_vibrating", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(routed.route, "threshold", 0.0)  # every frame would read vibrating on its own
    from hrtem3d.jobs.workflows import segment_file
    from hrtem3d.simulate.movie import write_movie

    stack = write_movie(shipped_movie, tmp_path / "movie")["movie"]  # 4 frames
    r = segment_file(stack, tmp_path / "out", routed)
    trust = json.loads((tmp_path / "out" / "movie" / "trust.json").read_text())
    assert len(calls) == 1 and trust["lattice_reading"] == "vibrating" == r["lattice_reading"]
    assert 0 < trust["p_vibrating"] < 1
    cols = pd.read_csv(tmp_path / "out" / "movie" / "columns.csv")
    assert sorted(cols.frame.unique()) == [0, 1, 2, 3]


def test_track_decides_the_reading_on_its_reference_frame_and_holds_it(shipped_movie, tmp_path):
    from hrtem3d.simulate.movie import write_movie

    files = write_movie(shipped_movie, tmp_path / "movie")
    r = CliRunner().invoke(app, ["track", str(files["movie"]), "--out", str(tmp_path / "out"), "--no-figures",
                                 "--no-progress", "--lattice", "auto", "--chunk", "2"])
    assert r.exit_code == 0, r.output
    trust = json.loads((tmp_path / "out" / "trust.json").read_text())
    assert trust["lattice_reading"] in ("static", "vibrating") and 0 < trust["p_vibrating"] < 1
    route = LatticeRoute.shipped()
    assert trust["lattice_reading"] == route.reading(route.p_vibrating(shipped_movie.frames[0],
                                                                       shipped_movie.pixel_size_A))
    # every chunk read its frames as the reference frame decided: the tables equal a fixed reading's
    fixed = CliRunner().invoke(app, ["track", str(files["movie"]), "--out", str(tmp_path / "fixed"), "--no-figures",
                                     "--no-progress", "--lattice", trust["lattice_reading"], "--chunk", "2"])
    assert fixed.exit_code == 0, fixed.output
    a, b = (pd.read_parquet(tmp_path / d / "columns.parquet") for d in ("out", "fixed"))
    pd.testing.assert_frame_equal(a[["frame", "x_A", "y_A", "n_atoms"]], b[["frame", "x_A", "y_A", "n_atoms"]])


def test_segment_cli_reports_the_reading(shipped_movie, tmp_path):
    img = tmp_path / "one.tif"
    tifffile.imwrite(img, shipped_movie.frames[0].astype(np.float32))
    r = CliRunner().invoke(app, ["segment", str(img), "--pixel-size", str(shipped_movie.pixel_size_A), "--out",
                                 str(tmp_path / "o"), "--lattice", "auto", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "lattice (p_vibrating" in r.output
    bad = CliRunner().invoke(app, ["segment", str(img), "--pixel-size", "0.16", "--out", str(tmp_path / "b"),
                                   "--lattice", "warm"])
    assert bad.exit_code != 0 and "--lattice" in bad.output and "Traceback" not in bad.output
