"""The gates' confidence map: what the contrast gate (and the vibration gate) say about a count's trust.

The column confidence is calibrated by the reader's own map (`segmentation.confidence`) on images like its
training images. The contrast gate sees what that map cannot: how much lattice contrast the microscope took
away (g, with a spread). Where the gate reads a loss that the counts were not made at (its lower bound under
the threshold, or an image the lattice guard did not accept), where its reading is itself unsure, or where
the counts rest on a raised gain, a count is worth less than the reader's map says, and by how much depends
on the column's length. `--vibration` adds the vibration gate's probability of the reading not used.

This script measures that and fits the map (`segmentation.confidence.GATE_FEATURES`, `apply_gates_map`) on
images that no gate was trained or thresholded on and that no benchmark scores: the particles of fresh stores
(static, and with frozen phonons), each drawn through the microscope envelope (support film, residual
aberrations, vibration, a diffuse background up to g = 3, detector MTF, native pixel sizes, calibrations a
few per cent off) and read by `segment`'s whole path. It prints the ECE of the map fitted on half the
particles and scored on the other half, per kind of image and dose, and the map fitted on all of them.
(The shipped map was fitted before the scope's background ripple was widened, 2026-12-06: the same commands
now draw rippled backgrounds up to 40 % instead of 10 %.)

    hrtem3d simulate /work/data/cal51.zarr -n 100 --seed 51                                    # 2 min
    hrtem3d simulate /work/data/cal52_tds.zarr -n 60 --seed 52 --frozen-phonons 8 --phonon-scale 0.9,1.2
    python benchmarks/gate_confidence.py collect /work/data/cal51.zarr --n 1200 --out cal51u.parquet   # 11 min
    python benchmarks/gate_confidence.py collect /work/data/cal52_tds.zarr --n 600 --out cal52u.parquet
    python benchmarks/gate_confidence.py fit cal51u.parquet cal52u.parquet --vibrating cal52u.parquet --save
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def fitting_draws(path: str | Path, n: int, *, seed: int = 71, background: tuple[float, float] = (0.1, 2.0),
                  truth: bool = True):
    """Yield `(i, structure, draw, true columns)` for `n` fitting images of the store `path`, its particles in turn,
    each drawn through the default microscope envelope with a background b in `background` (`HrtemDataset.draw`,
    as `calibrate._validation_image` draws, the acquisition kept); the true columns (None unless `truth`) in true
    Å from the draw's origin (compare with `evaluate.calibrate.in_true_A` of the columns, at the draw's
    `native_pixel_A`). The fitting images of this script, `both_readings.py` and `contrast_gate.py read-fitting`."""
    from hrtem3d.data import store
    from hrtem3d.data.dataset import HrtemDataset
    from hrtem3d.simulate.scope import ScopeEnvelope

    root = store.open_store(path)
    idx = sorted(store.completed(root))
    size = int(store.settings_of(root)["multislice"]["store_gpts"])
    groups = {int(g.attrs["index"]): g for g in store.structure_groups(root)}
    ds = HrtemDataset(path, idx, crop=size, seed=seed, augment=False, scope=ScopeEnvelope(background=background))
    for i in range(n):
        k = i % len(idx)
        d = ds.draw(i, structure=k)
        cols = None
        if truth:
            oy, ox = d["origin_A"]
            cols = store.read_columns(groups[ds.indices[k]])
            cols = cols.assign(x_A=cols.x_A - ox, y_A=cols.y_A - oy)
        yield i, int(ds.indices[k]), d, cols


def collect(a: argparse.Namespace) -> None:
    """One row per matched true column of `--n` images drawn through the envelope: the confidence as `segment`
    reports it without the gates' map, whether the count is right, and the gates' features."""
    import torch
    from tqdm import tqdm

    from hrtem3d.evaluate.calibrate import in_true_A
    from hrtem3d.evaluate.metrics import match_columns
    from hrtem3d.segmentation import segmenter as seg_module
    from hrtem3d.segmentation.segmenter import Segmenter

    torch.set_num_threads(a.threads)
    lo, hi = (float(v) for v in a.background.split(","))
    seg = Segmenter(contrast="bright")
    seg.use_gates_map = False  # the confidence as the map this script fits meets it: before the map, and uncapped
    seg_module.cap_at_estimated_gain = lambda columns: columns  # (the map replaces the flat cap where it applies)
    rows = []
    for i, structure, d, truth in tqdm(fitting_draws(a.store, a.n, seed=a.seed, background=(lo, hi)), total=a.n,
                                       desc="images"):
        image, stated, true_px = d["counts"], d["pixel_size_A"], d["native_pixel_A"]
        seg.set_contrast(seg.contrast)
        r = seg.segment(image, stated)
        m = match_columns(truth, in_true_A(r.columns, true_px))
        m = m[m.pred_row >= 0]
        if not len(m):
            continue
        acq = d.get("acquisition")
        rows.append(pd.DataFrame({
            "image": i, "structure": structure, "dose": float(d["detector"].dose_e_per_A2),
            "species": m.species.to_numpy(), "n_true": m.n_atoms.to_numpy(), "n_pred": m.pred_n.to_numpy(),
            "correct": ((m.pred_species == m.species) & (m.pred_n == m.n_atoms)).to_numpy(),
            "confidence": m.confidence.to_numpy(float),
            "g_true": 1 + (acq.background if acq is not None else 0.0),
            "g_read": r.contrast_loss, "g_spread": r.contrast_spread, "g_used": r.contrast_gain,
            "lattice": r.lattice, "p_vibrating": r.p_vibrating if r.p_vibrating is not None else np.nan}))
    out = pd.concat(rows, ignore_index=True)
    tmp = Path(str(a.out) + ".tmp")
    out.to_parquet(tmp)
    tmp.replace(a.out)
    print(f"{len(out)} columns of {out.image.nunique()} images -> {a.out}")


def summary(df: pd.DataFrame, conf: np.ndarray, label: str) -> dict:
    from hrtem3d.evaluate.metrics import expected_calibration_error

    ok = df.correct.to_numpy(bool)
    return {"map": label, "columns": len(df), "accuracy": ok.mean(), "confidence": conf.mean(),
            "ECE": expected_calibration_error(conf, ok)}


def fit_features_only(conf: np.ndarray, correct: np.ndarray, feature: np.ndarray) -> tuple[float, float, list[float]]:
    """(1, 0, c): the map sigma(logit(conf) + c . feature) of least log-loss, the reader's own scale kept (an
    image whose features are 0, one the gates read as ideal at the gain used, keeps its confidence)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    from hrtem3d.segmentation.confidence import logit

    z, y, f = logit(conf), correct.astype(float), np.asarray(feature, float)

    def nll(c):
        t = z + f @ c
        return np.mean(np.logaddexp(0, t) - y * t) + 1e-4 * c @ c, f.T @ (expit(t) - y) / len(y) + 2e-4 * c

    res = minimize(nll, np.zeros(f.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-8})
    return 1.0, 0.0, [float(v) for v in res.x]


def fit(a: argparse.Namespace) -> None:
    """Fit the map on half the structures, score on the other half (and the reverse); then on all of them."""
    from hrtem3d.evaluate.calibrate import fit_platt
    from hrtem3d.segmentation.confidence import (
        GATE_FEATURES,
        RAISED_FEATURES,
        VIBRATION_FEATURES,
        apply_calibration,
        gate_features,
    )

    df = pd.concat([pd.read_parquet(t).assign(tds=t.name in a.vibrating,
                                              structure=lambda d, k=k: d.structure + 10**6 * k)  # one id space
                    for k, t in enumerate(a.tables)], ignore_index=True)
    df = df[df.species == "Ce"] if a.cation_only else df
    if not a.with_raised:  # counts at a raised gain keep the flat cap: the map is for counts at gain 1
        df = df[df.g_used == 1].reset_index(drop=True)
    names = GATE_FEATURES + (RAISED_FEATURES if a.with_raised else ()) + (VIBRATION_FEATURES if a.vibration else ())
    p = df.p_vibrating.fillna(0.0).to_numpy(float)
    other = np.where(df.lattice.to_numpy() == "static", p, 1.0 - p)
    f = gate_features(df.g_read.to_numpy(float), df.g_spread.to_numpy(float), df.g_used.to_numpy(float),
                      df.n_pred.to_numpy(float), other, names)
    conf = df.confidence.to_numpy(float)
    ok = df.correct.to_numpy(bool)
    fitter = fit_platt if a.free_scale else fit_features_only
    fold = (df.structure.to_numpy() % 2).astype(bool)
    out = np.empty_like(conf)
    for held in (False, True):
        tr = fold != held
        ca, cb, cc = fitter(conf[tr], ok[tr], f[tr])
        out[~tr] = apply_calibration(conf[~tr], ca, cb, cc, f[~tr])
    kind = np.where(df.g_true > 1, "background", "none")
    kind = np.where((df.g_true > 1) & (df.g_used > 1), "background, raised", kind)
    tds = df.tds.to_numpy(bool) if "tds" in df else np.zeros(len(df), bool)
    kind = np.where(tds, np.char.add("vibrating, ", kind.astype(str)), kind)
    rows = []
    for name, sel in [("all", np.ones(len(df), bool)), *[(k, kind == k) for k in np.unique(kind)],
                      *[(f"dose {lo:g}-{hi:g}", (df.dose >= lo).to_numpy() & (df.dose < hi).to_numpy())
                        for lo, hi in ((0, 600), (600, 2500), (2500, 1e6))]]:
        for label, c in (("reader's map (before)", conf), ("+ gates' map (held out)", out)):
            rows.append({"images": name, **summary(df[sel], c[sel], label)})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    ca, cb, cc = fitter(conf, ok, f)
    cmap = {"a": ca, "b": cb, "c": cc, "features": list(names), "fitted_on": [t.name for t in a.tables],
            "fitted_by": "benchmarks/gate_confidence.py (docs/benchmarks.md, Nineteenth look)",
            "columns": int(len(df))}
    print(json.dumps(cmap, indent=1))
    if a.save:
        from hrtem3d.model.gate import default_gate_path, load_gate, save_gate

        path = default_gate_path("contrast")
        gate, meta = load_gate(path)
        save_gate(path, gate, {**meta, "confidence_map": cmap})
        print(f"wrote the map into {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("store")
    c.add_argument("--n", type=int, default=600, help="images (structures in turn, each its own draw)")
    c.add_argument("--seed", type=int, default=71)
    c.add_argument("--background", default="0.1,2.0", help="b range of the envelope's background (g = 1 + b)")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit")
    f.add_argument("tables", nargs="+", type=Path)
    f.add_argument("--cation-only", action="store_true", help="fit on Ce columns only")
    f.add_argument("--vibration", action="store_true", help="with the vibration gate's features")
    f.add_argument("--with-raised", action="store_true",
                   help="fit on counts at a raised gain too, with the `raised` features (measured, not shipped)")
    f.add_argument("--vibrating", nargs="*", default=[], help="file names of tables whose lattice vibrates")
    f.add_argument("--free-scale", action="store_true",
                   help="fit the map's scale and offset too (refits the reader's map over the envelope)")
    f.add_argument("--save", action="store_true", help="write the map into the shipped contrast gate's file")
    a = ap.parse_args()
    if a.cmd == "fit" and a.save and a.with_raised:  # `segment` maps counts at gain 1 only: such a map is not its
        ap.error("--with-raised fits a map that `segment` does not apply (counts at a raised gain keep the cap); "
                 "leave out --save")
    t0 = time.time()
    {"collect": collect, "fit": fit}[a.cmd](a)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
