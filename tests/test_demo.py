"""`hrtem3d demo`: the built-in example runs and writes what it says."""

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.evaluate.metrics import match_columns
from hrtem3d.model.io import default_model_path


def test_demo_writes_figures_and_ground_truth(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    _assert_drawn(tmp_path / "data_figure.png")
    truth = pd.read_csv(tmp_path / "ground_truth_columns.csv")
    assert {"species", "x_px", "y_px", "n_atoms"} <= set(truth.columns)
    assert set(truth.species) == {"Ce", "O"} and truth.n_atoms.min() >= 1
    if default_model_path().exists():
        cols = pd.read_csv(tmp_path / "columns.csv")
        _assert_drawn(tmp_path / "network_figure.png")
        assert len(cols) > 0.5 * len(truth)
        # the printed figures are those of the written tables against the written truth
        m = match_columns(truth, cols)
        ce = m[m.species == "Ce"]
        exact = ((ce.pred_row >= 0) & (ce.pred_n == ce.n_atoms) & (ce.pred_species == "Ce")).mean()
        said = re.search(r"(\d+) columns found, recall ([\d.]+), Ce columns with exactly the right atom count "
                         r"([\d.]+)", r.output)
        assert said, r.output
        assert int(said[1]) == len(cols) and float(said[2]) == pytest.approx((m.pred_row >= 0).mean(), abs=0.006)
        assert float(said[3]) == pytest.approx(exact, abs=0.006) and exact >= 0.5


def _assert_drawn(path) -> None:
    """A real figure: several panels' worth of pixels, not blank, in more than a few colours."""
    img = np.asarray(Image.open(path).convert("RGB"), float)
    assert min(img.shape[:2]) >= 300 and img.shape[1] >= 2 * 300, img.shape
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 100, path


def test_demo_runs_again_into_the_same_folder(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--out", str(tmp_path)]).exit_code == 0
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--movie-seed", "1"])  # another movie, same folder
    assert r.exit_code == 0, r.output
    assert "seed 1" in (tmp_path / "movie_demo" / "report.md").read_text()
