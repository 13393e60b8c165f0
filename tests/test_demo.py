"""`hrtem3d demo`: the built-in example runs and writes what it says."""

import pandas as pd
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.model.io import default_model_path


def test_demo_writes_figures_and_ground_truth(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data_figure.png").stat().st_size > 20_000
    truth = pd.read_csv(tmp_path / "ground_truth_columns.csv")
    assert {"species", "x_px", "y_px", "n_atoms"} <= set(truth.columns)
    assert set(truth.species) == {"Ce", "O"} and truth.n_atoms.min() >= 1
    if default_model_path().exists():
        cols = pd.read_csv(tmp_path / "columns.csv")
        assert (tmp_path / "network_figure.png").exists()
        assert len(cols) > 0.5 * len(truth)
        assert "Ce columns with exactly the right atom count" in r.output


def test_demo_runs_again_into_the_same_folder(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--out", str(tmp_path)]).exit_code == 0
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "--movie-seed", "1"])  # another movie, same folder
    assert r.exit_code == 0, r.output
    assert "seed 1" in (tmp_path / "movie_demo" / "report.md").read_text()
