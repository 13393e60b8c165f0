"""Calibrating the column confidence on held-out validation structures (never the test set).

The column confidence is the pooled probability of the reported class. A logistic map of its logit
and of two features of the whole image (the log of its relative noise, so one map serves every dose,
and the mean logit of all its columns' confidences, so an image the network is unsure of as a whole
lowers every column's confidence: Platt scaling with per-image inputs), fitted on validation
structures of the training store at doses drawn across the envelope, makes it a calibrated probability
that the reported atom count (and species) is right. The map is stored in the model file.

A model trained through the microscope envelope (`scope_envelope` in its file) is calibrated on
validation images drawn through the same envelope, at native pixel sizes with a stated calibration,
as `segment` meets them; a model without one on images at the store's sampling.

The same validation structures also set the detection threshold of each species (the
column probability a peak needs to be reported): empty surface O sites look like faint
one-atom O columns, so O needs a higher threshold than Ce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit

from hrtem3d.data import store
from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.data.normalize import noise_level
from hrtem3d.errors import HrtemError
from hrtem3d.evaluate.metrics import match_columns
from hrtem3d.model.io import load_model, save_model
from hrtem3d.segmentation.confidence import (  # noqa: F401
    ALL_FEATURES,
    FEATURES,
    apply_calibration,
    column_features,
    logit,
    uses_ratio,
)
from hrtem3d.segmentation.envelope_check import count_size_ratio
from hrtem3d.segmentation.segmenter import Segmenter
from hrtem3d.simulate.scope import ScopeEnvelope
from hrtem3d.train.loop import split_structures, training_class_weights


def fit_platt(conf: np.ndarray, correct: np.ndarray, feature: np.ndarray | None = None
              ) -> tuple[float, float, float | list[float]]:
    """(a, b, c) minimising the log-loss of sigma(a * logit(conf) + b + c . feature) against `correct`.

    Without `feature` this is Platt scaling and c = 0. With one feature per column (shape `[n]`) c is a
    number; with several (shape `[n, k]`, e.g. the `FEATURES` of `segmentation.confidence`) c is a list of k.
    """
    z, y = logit(conf), correct.astype(float)
    several = feature is not None and np.ndim(feature) == 2
    f = np.zeros((len(z), 0)) if feature is None else np.asarray(feature, float).reshape(len(z), -1)
    x = np.column_stack([z, np.ones_like(z), f])

    ridge = np.r_[0.0, 0.0, np.full(f.shape[1], 1e-4)]  # keeps the feature terms finite on a few columns

    def nll(p):  # logistic regression on [logit(conf), 1, features]: convex, with its exact gradient
        t = x @ p
        loss = np.mean(np.logaddexp(0, t) - y * t) + ridge @ p**2
        return loss, x.T @ (expit(t) - y) / len(y) + 2 * ridge * p

    res = minimize(nll, x0=np.r_[1.0, np.zeros(x.shape[1] - 1)], jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-8})
    a, b, c = float(res.x[0]), float(res.x[1]), [float(v) for v in res.x[2:]]
    return a, b, (c if several else c[0] if c else 0.0)


def _validation(data: str | Path) -> tuple:
    root = store.open_store(data)
    _, val_idx = split_structures(sorted(store.completed(root)), 0.1)
    n = int(store.settings_of(root)["multislice"]["store_gpts"])
    sampling = float(store.settings_of(root)["multislice"]["store_sampling_A"])
    groups = {int(g.attrs["index"]): g for g in store.structure_groups(root)}
    return val_idx, n, sampling, groups


def scope_of(meta: dict) -> ScopeEnvelope | None:
    """The microscope envelope a model was trained through (None for a model trained on ideal images)."""
    d = meta.get("scope_envelope")
    if not d:
        return None
    return ScopeEnvelope(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                            if k in ScopeEnvelope.__dataclass_fields__})


def _validation_image(ds: HrtemDataset, i: int, k: int, truth, sampling: float):
    """(image, stated pixel size Å, truth in the image's frame, true Å per input pixel or None if exact)."""
    d = ds.draw(i, structure=k)
    if "acquisition" not in d:
        return d["counts"], sampling, truth, None
    oy, ox = d["origin_A"]
    return d["counts"], d["pixel_size_A"], truth.assign(x_A=truth.x_A - ox, y_A=truth.y_A - oy), d["native_pixel_A"]


def in_true_A(columns: pd.DataFrame, true_pixel_A: float | None) -> pd.DataFrame:
    """A column table's positions in true Å (the stated calibration may be off; a comparison with the truth
    must not be): x_A, y_A from the pixel positions times `true_pixel_A` (Å per pixel of the input image).

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"x_px": [10.0], "y_px": [20.0], "x_A": [1.1], "y_A": [2.2]})  # stated 0.11 Å/px
        >>> in_true_A(t, 0.1)[["x_A", "y_A"]].values.tolist()
        [[1.0, 2.0]]
    """
    if true_pixel_A is None:
        return columns
    return columns.assign(x_A=columns.x_px * true_pixel_A, y_A=columns.y_px * true_pixel_A)


def fit_detection_thresholds(model_path: str | Path, data: str | Path, dose: float = 1000.0, seed: int = 6,
                             grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9),
                             scope: ScopeEnvelope | None = None, lattice: str | None = None) -> dict:
    """Per-species detection thresholds (column probability) that maximise min(recall, precision)
    on the validation structures of `data` at `dose` (e/Å²); ties go to the higher recall. `lattice`:
    the reading of a lattice-heads model (`Segmenter`'s)."""
    val_idx, n, sampling, groups = _validation(data)
    seg = Segmenter(model_path, contrast="bright", lattice=lattice, contrast_gain=1.0)  # the network's own reading
    seg.calibration, seg.detection = None, None
    ds = HrtemDataset(data, val_idx, crop=n, dose=dose, seed=seed, augment=False, scope=scope)
    runs = []
    for k in range(len(val_idx)):
        image, stated, truth, true_px = _validation_image(ds, k, k, store.read_columns(groups[ds.indices[k]]),
                                                          sampling)
        runs.append((truth, in_true_A(seg.segment(image, stated).columns, true_px)))
    best = None
    for t_ce in grid:
        for t_o in grid:
            tp = n_true = n_pred = 0
            for truth, pred in runs:
                keep = pred[pred["p_column"] >= np.where(pred["species"] == "O", t_o, t_ce)].reset_index(drop=True)
                tp += int((match_columns(truth, keep).pred_row >= 0).sum())
                n_true, n_pred = n_true + len(truth), n_pred + len(keep)
            recall, precision = tp / max(n_true, 1), tp / max(n_pred, 1)
            key = (min(recall, precision), recall)
            if best is None or key > best[0]:
                best = (key, {"Ce": t_ce, "O": t_o, "recall": recall, "precision": precision, "dose": dose})
    return best[1]


def calibration_pairs(model_path: str | Path, data: str | Path, n_images: int = 300, seed: int = 5,
                      thresholds: dict | None = None, scope: ScopeEnvelope | None = None,
                      lattice: str | None = None, features: tuple[str, ...] = FEATURES
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw confidence, correct, map features `[n, len(features)]`) of matched columns on validation
    structures of `data`, doses drawn across the envelope, each image drawn through `scope` (None: at the
    store's sampling). The features are those of the whole image (`segmentation.confidence.image_features`:
    log relative noise, mean logit of every column found; with the shift features also the particle's
    count-to-size ratio and each column's count, `segmentation.confidence.column_features`)."""
    val_idx, n, sampling, groups = _validation(data)
    seg = Segmenter(model_path, contrast="bright", lattice=lattice, contrast_gain=1.0)
    seg.calibration, seg.detection = None, thresholds
    ds = HrtemDataset(data, val_idx, crop=n, seed=seed, augment=False, scope=scope)
    cation = seg.scheme.species[0]
    conf, ok, feat = [], [], []
    for i in range(n_images):
        k = i % len(val_idx)
        image, stated, truth, true_px = _validation_image(ds, i, k, store.read_columns(groups[ds.indices[k]]),
                                                          sampling)
        s = seg.segment(image, stated)
        m = match_columns(truth, in_true_A(s.columns, true_px))
        m = m[m.pred_row >= 0]
        conf.append(m.confidence.to_numpy(float))
        ok.append(((m.pred_species == m.species) & (m.pred_n == m.n_atoms)).to_numpy())
        raw = s.columns.confidence.to_numpy(float)
        ratio = count_size_ratio(s.columns) if uses_ratio(features) else float("nan")
        every = column_features(raw, noise_level(s.working_image), ratio,
                                n_atoms=s.columns.n_atoms.to_numpy(), cation=(s.columns.species == cation).to_numpy(),
                                names=features)
        feat.append(every[m.pred_row.to_numpy(int)])
    return np.concatenate(conf), np.concatenate(ok), np.concatenate(feat).reshape(-1, len(features))


def calibrate_model(model_path: str | Path, data: str | Path, out: str | Path | None = None,
                    n_images: int = 300, lattice: str | None = None, *, extra_data: tuple = (),
                    through_scope: ScopeEnvelope | None = None, keep_thresholds: bool = False,
                    shift_features: bool = False) -> dict:
    """Fit the detection thresholds and the confidence map on validation structures; write both
    into the model file (metadata `detection_threshold`, `column_calibration`).

    The thresholds are fitted on `data` as the model meets it (through its own training envelope, if any);
    `keep_thresholds` keeps the file's instead. The map is fitted on `n_images` validation images of
    `data` and of each store in `extra_data` (e.g. the same particles with frozen phonons), each drawn as
    the model meets it and, with `through_scope`, `n_images` more drawn through that microscope envelope:
    the confidence is then calibrated over what a user does not control, not only over ideal images.
    `shift_features` adds the particle's count-to-size ratio and each column's count to the map's features
    (`segmentation.confidence.SHIFT_FEATURES`).

    `lattice` ("static", "vibrating" or "auto"; a model with lattice heads): fit them for that reading
    and store them under `calibration_by_lattice[lattice]`, which `Segmenter(lattice=...)` uses; calibrate
    the static reading on a static store, the vibrating one on a store with frozen phonons.

    A model file without its training loss weights (`class_weights`, written by `train` since
    2026-11-30) first gets them recomputed from `data` with its training configuration, so that
    `find_columns` can undo their bias; `data` must then be the store it was trained on.
    """
    for path in (data, *extra_data):  # every store checked before any work: one line, nothing written
        store.open_store(path)
    model, meta = load_model(model_path)
    meta = {k: v for k, v in meta.items() if k not in ("unet", "package_version")}  # save_model writes these
    old = (meta.get("calibration_by_lattice", {}).get(lattice, {}) if lattice else meta).get("detection_threshold")
    if keep_thresholds and not old:
        raise HrtemError("the model file has no detection thresholds to keep; calibrate it without "
                         "`keep_thresholds`", param="keep_thresholds")
    if "class_weights" not in meta:
        meta["class_weights"] = training_class_weights(data, meta.get("train_config", {})).tolist()
        model_path = out = out or model_path
        save_model(model_path, model, meta)
    scope = scope_of(meta)
    thresholds = old if keep_thresholds else fit_detection_thresholds(model_path, data, scope=scope, lattice=lattice)
    sources = [(store_path, sc) for store_path in (data, *extra_data)
               for sc in ([scope] + ([through_scope] if through_scope is not None and scope is None else []))]
    features = ALL_FEATURES if shift_features else FEATURES
    pairs = [calibration_pairs(model_path, d, n_images, scope=sc, lattice=lattice, features=features,
                               thresholds={"Ce": thresholds["Ce"], "O": thresholds["O"]}) for d, sc in sources]
    conf, ok, feat = (np.concatenate([p[j] for p in pairs]) for j in range(3))
    a, b, c = fit_platt(conf, ok, feat)
    fitted_on = [str(d) + (" through the microscope envelope" if sc is not None else "") for d, sc in sources]
    fitted = {"detection_threshold": {**thresholds, "fitted_on": thresholds.get("fitted_on", str(data))},
              "column_calibration": {"a": a, "b": b, "c": c, "features": list(features), "n_columns": int(len(conf)),
                                     "fitted_on": "; ".join(fitted_on), "through_scope": scope is not None,
                                     "calibration_scope": through_scope.to_dict() if through_scope else None}}
    if lattice is None:
        meta.update(fitted)
    else:
        meta["calibration_by_lattice"] = {**meta.get("calibration_by_lattice", {}), lattice: fitted}
    save_model(out or model_path, model, meta)
    return {**fitted["column_calibration"], "detection_threshold": thresholds}
