"""Calibrating the column confidence on held-out validation structures (never the test set).

The column confidence is the pooled probability of the reported class. A two-parameter
logistic map (Platt scaling on its logit), fitted on validation structures of the
training store at doses drawn across the envelope, makes it a calibrated probability
that the reported atom count (and species) is right. The map is stored in the model file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from hrtem3d.analyze.evaluate import match_columns
from hrtem3d.analyze.segment import Segmenter
from hrtem3d.data import store
from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.model.io import load_model, save_model
from hrtem3d.train.loop import split_structures


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def apply_calibration(conf: np.ndarray, a: float, b: float) -> np.ndarray:
    """Calibrated confidence sigma(a * logit(conf) + b)."""
    return 1 / (1 + np.exp(-(a * logit(np.asarray(conf, float)) + b)))


def fit_platt(conf: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the log-loss of sigma(a * logit(conf) + b) against `correct`."""
    z, y = logit(conf), correct.astype(float)

    def nll(p):
        q = np.clip(1 / (1 + np.exp(-(p[0] * z + p[1]))), 1e-9, 1 - 1e-9)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    res = minimize(nll, x0=[1.0, 0.0], method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def calibration_pairs(model_path: str | Path, data: str | Path, n_images: int = 60, seed: int = 5
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(raw confidence, correct) of matched columns on validation structures of `data`."""
    root = store.open_store(data)
    _, val_idx = split_structures(sorted(store.completed(root)), 0.1)
    seg = Segmenter(model_path, contrast="bright")
    seg.calibration = None
    n = int(store.settings_of(root)["multislice"]["store_gpts"])
    sampling = float(store.settings_of(root)["multislice"]["store_sampling_A"])
    ds = HrtemDataset(data, val_idx, crop=n, seed=seed, augment=False)
    groups = {int(g.attrs["index"]): g for g in store.structure_groups(root)}
    conf, ok = [], []
    for i in range(n_images):
        k = i % len(val_idx)
        d = ds.draw(i, structure=k)
        truth = store.read_columns(groups[ds.indices[k]])
        m = match_columns(truth, seg.segment(d["counts"], sampling).columns)
        m = m[m.pred_row >= 0]
        conf.append(m.confidence.to_numpy(float))
        ok.append(((m.pred_species == m.species) & (m.pred_n == m.n_atoms)).to_numpy())
    return np.concatenate(conf), np.concatenate(ok)


def calibrate_model(model_path: str | Path, data: str | Path, out: str | Path | None = None,
                    n_images: int = 60) -> dict:
    """Fit the confidence map on validation structures and write it into the model file."""
    conf, ok = calibration_pairs(model_path, data, n_images)
    a, b = fit_platt(conf, ok)
    model, meta = load_model(model_path)
    meta = {k: v for k, v in meta.items() if k not in ("unet", "package_version")}
    meta["column_calibration"] = {"a": a, "b": b, "n_columns": int(len(conf)), "fitted_on": str(data)}
    save_model(out or model_path, model, meta)
    return meta["column_calibration"]
