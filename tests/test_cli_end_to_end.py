"""`hrtem3d train` and `hrtem3d evaluate` end to end through the command line (typer's CliRunner)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.data import store
from hrtem3d.model.io import load_model, read_metadata

runner = CliRunner()


def test_train_command_writes_a_model_that_segments(ten_store, tmp_path):
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", str(ten_store), "--out", str(out), "--steps", "3", "--batch", "2", "--crop",
                            "64", "--widths", "4,8", "--val-every", "3", "--workers", "0", "--seed", "5",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    meta = read_metadata(out)
    cfg = meta["train_config"]
    assert (cfg["steps"], cfg["batch"], cfg["crop"], list(cfg["widths"]), cfg["seed"]) == (3, 2, 64, [4, 8], 5)
    assert meta["dataset"]["train_structures"] == 9 and meta["dataset"]["val_structures"] == 1  # every 10th
    assert [h["step"] for h in meta["history"]] == [3]
    model, _ = load_model(out, "cpu")
    assert model.config.widths == (4, 8) and model.config.n_classes == 25
    assert out.with_name(out.name + ".ckpt").exists()
    r = runner.invoke(app, ["train", str(ten_store), "--out", str(out), "--steps", "3", "--batch", "4", "--crop",
                            "64", "--widths", "4,8", "--workers", "0", "--seed", "5", "--no-progress"])
    assert r.exit_code == 2 and "batch" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_evaluate_command_scores_every_true_column_at_every_dose(tiny_model, tiny_store, tmp_path):
    out = tmp_path / "eval"
    r = runner.invoke(app, ["evaluate", str(tiny_store), "--model", str(tiny_model), "--out", str(out),
                            "--doses", "1000,10000", "--max-structures", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    root = store.open_store(tiny_store)
    first_two = sorted(store.completed(root))[:2]
    groups = {int(g.attrs["index"]): g for g in store.structure_groups(root)}
    n_true = sum(len(store.read_columns(groups[i])) for i in first_two)  # from the store, not the output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.dose) == [1000, 10000] and (summary.n_true_columns == n_true).all()
    cols = pd.read_parquet(out / "columns.parquet")
    assert len(cols) == 2 * n_true and sorted(cols.structure.unique()) == first_two
    for dose, g in cols.groupby("dose"):
        row = summary[summary.dose == dose].iloc[0]
        assert row.recall == pytest.approx((g.pred_row >= 0).mean(), abs=1e-4)
        ce = g[g.species == "Ce"]
        exact = ((ce.pred_row >= 0) & (ce.pred_species == "Ce") & (ce.pred_n == ce.n_atoms)).mean()
        assert row.Ce_exact == pytest.approx(exact, abs=1e-4)
    for name in ("accuracy_vs_dose.png", "confusion_Ce.png", "confusion_O.png", "reliability.png"):
        img = np.asarray(Image.open(out / name).convert("L"), float)
        assert min(img.shape) >= 200 and img.std() > 5, name
    assert (out / "summary.md").read_text().count("1000") >= 1
