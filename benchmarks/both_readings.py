"""Every image read by both readers of the shipped pair: what the routing costs, and what averaging would give.

The shipped pair routes each image to the static reader or to the vibrating one by the vibration gate's
p(vibrating) against its threshold (`segmentation.route`). This script reads every image of the chosen sources
both ways (`segment(..., lattice="static")` and `"vibrating"`, the rest of `segment`'s path as shipped: the
contrast gate, the gain search, both confidence maps), matches each reading to the truth, and keeps one row per
true column with both readings, their calibrated confidences and pooled class probabilities, the gate's p and
the reading `segment` would have taken. `summary` then prints, per source and dose:

- Ce exact of the static reader, the vibrating reader, the routed pair, and the better of the two per image
  (an oracle: the ceiling of any router), with the gate's p per image;
- the Bayesian average over both hypotheses, (1 - p) P_static + p P_vibrating, with the gate's p as it is:
  its ECE with the routed count kept, and Ce exact and ECE of its most probable count.

    python benchmarks/both_readings.py collect --robust /work/data/robust --sets phonons,clean_0p10,astig \\
        --independent ../shared/testdata/independent --test /work/data/test.zarr --out both.parquet   # ~10 min
    python benchmarks/both_readings.py summary both.parquet
    python benchmarks/both_readings.py collect --store /work/data/cal51.zarr --store /work/data/cal52_tds.zarr \
        --n-store 450 --out fit.parquet                                 # fitting images, ~8 min
    python benchmarks/both_readings.py fit fit.parquet both.parquet     # the weight sigma(a logit p + b) fitted there
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

DOSES = (300.0, 1000.0, 5000.0)


def sources(a: argparse.Namespace):
    """`(source, case, dose, image, stated pixel size, truth, true pixel size or None)` of the in-domain store,
    the fitting stores, the robustness sets and the independent set (truth in true Å)."""
    import tifffile
    from bench_robustness import load_truth, set_cases

    if a.test:
        from hrtem3d.data import store
        from hrtem3d.evaluate.metrics import _images

        idx = sorted(store.completed(store.open_store(a.test)))[:a.n_test]
        for dose in DOSES:
            for i, cols, d, sampling in _images(a.test, idx, dose, 0):
                yield "test", i, dose, d["counts"].astype(np.float32), sampling, cols, None
    for path in a.store or []:  # fitting images, drawn through the microscope envelope as gate_confidence.py draws
        from gate_confidence import fitting_draws

        for i, _, d, truth in fitting_draws(path, a.n_store):
            yield (Path(path).stem, i, float(d["detector"].dose_e_per_A2), d["counts"], d["pixel_size_A"], truth,
                   d["native_pixel_A"])
    for s in a.sets.split(",") if a.robust else []:
        for case, image, truth in set_cases(a.robust / s, a.n):
            yield s, case["particle"], case["dose_e_per_A2"], image, case["pixel_size_angstrom"], truth, None
    if a.independent:
        for k in range(6):
            for dose in DOSES:
                image = tifffile.imread(a.independent / f"p{k}_dose{dose:g}.tif").astype(np.float32)
                truth = load_truth(a.independent / f"p{k}_columns.json", 0.10)
                yield "independent", k, dose, image, 0.10, truth, None


def read_both(seg, image: np.ndarray, px: float, truth: pd.DataFrame, true_px: float | None = None) -> pd.DataFrame:
    """One row per true column: each reading's matched count (-1 unmatched), calibrated confidence and pooled
    class probabilities (`s_...` static, `v_...` vibrating); `px` the stated pixel size (Å), `true_px` the true
    one where they differ (the truth is in true Å)."""
    from hrtem3d.evaluate.calibrate import in_true_A
    from hrtem3d.evaluate.metrics import match_columns

    readings = {lat[0]: in_true_A(seg.segment(image, px, lattice=lat).columns, true_px)
                for lat in ("static", "vibrating")}
    parts = []
    for sp in ("Ce", "O"):
        t = truth[truth["species"] == sp].reset_index(drop=True)
        out = t[["species", "n_atoms"]].copy()
        for r, cols in readings.items():
            pred = cols[cols["species"] == sp].reset_index(drop=True)
            m = match_columns(t, pred, max_dist_A=0.7)
            got = pred.reindex(m["pred_row"].where(m["pred_row"] >= 0)).reset_index(drop=True)
            out[f"{r}_pred_n"] = np.where(m["pred_row"] >= 0, m["pred_n"], -1)
            out[f"{r}_confidence"] = got["confidence"].to_numpy(float)
            for c in (c for c in pred.columns if c.startswith("p_") and c != "p_column"):
                out[f"{r}_{c}"] = got[c].to_numpy(float)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def collect(a: argparse.Namespace) -> None:
    import torch
    from bench_robustness import load_segmenter
    from tqdm import tqdm

    torch.set_num_threads(a.threads)
    seg = load_segmenter("default", a.threads)
    rows = []
    for source, case, dose, image, px, truth, true_px in tqdm(list(sources(a)), desc="images"):
        seg.set_contrast(seg.contrast)
        p = seg.route.p_vibrating(image, px, 1.0)
        rows.append(read_both(seg, image, px, truth, true_px).assign(source=source, case=case, dose=dose, p_vibrating=p,
                                                            routed=seg.route.reading(p)))
    table = pd.concat(rows, ignore_index=True)
    tmp = Path(str(a.out) + ".tmp")
    table.to_parquet(tmp)
    tmp.replace(a.out)
    print(f"{len(table)} true columns of {len(rows)} images -> {a.out}")


def with_distribution(raw: np.ndarray, k: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Class distributions with the reported class `k` at its calibrated confidence `c` and the rest shared out
    as the raw pooled probabilities were.

    >>> with_distribution(np.array([[0.6, 0.3, 0.1]]), np.array([0]), np.array([0.8])).round(3).tolist()
    [[0.8, 0.15, 0.05]]
    """
    rows = np.arange(len(k))
    rest = raw.sum(1) - raw[rows, k]
    out = raw * ((1 - c) / np.clip(rest, 1e-9, None))[:, None]
    out[rows, k] = c
    return out


N_CLASSES = 12  # Ce columns of 1-12 atoms (the default scheme's cation block)


def both_found(t: pd.DataFrame) -> tuple[pd.DataFrame, dict, np.ndarray]:
    """The Ce columns both readings found, each reading's class distribution (`with_distribution`) and the truth
    as a class index."""
    t = t[(t.species == "Ce") & (t.s_pred_n > 0) & (t.v_pred_n > 0)].reset_index(drop=True)
    dist = {}
    for r in "sv":
        raw = t[[f"{r}_p_{k}" for k in range(1, N_CLASSES + 1)]].to_numpy(float)
        k = t[f"{r}_pred_n"].clip(1, N_CLASSES).to_numpy(int) - 1
        dist[r] = with_distribution(raw, k, t[f"{r}_confidence"].to_numpy(float))
    return t, dist, t.n_atoms.clip(1, N_CLASSES).to_numpy(int) - 1


def weight(p: np.ndarray, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """The vibrating reading's weight: sigma(scale logit(p) + shift) of the gate's p (1, 0: p itself)."""
    from scipy.special import expit, logit

    return expit(scale * logit(np.clip(p, 1e-6, 1 - 1e-6)) + shift)


def fit_weight(table: Path) -> tuple[float, float]:
    """(scale, shift) of `weight` of least log-loss of the averaged reading on the true counts of `table`."""
    from scipy.optimize import minimize

    t, dist, truth = both_found(pd.read_parquet(table))
    rows = np.arange(len(t))
    ps, pv = dist["s"][rows, truth], dist["v"][rows, truth]
    p = t.p_vibrating.to_numpy(float)

    def nll(x):
        w = weight(p, *x)
        return -np.mean(np.log(np.clip((1 - w) * ps + w * pv, 1e-9, None)))

    res = minimize(nll, x0=[1.0, 0.0], method="Nelder-Mead")
    print(f"weight fitted on {len(t)} Ce columns of {t.groupby(['source', 'case']).ngroups} images of {table}: "
          f"sigma({res.x[0]:.3f} logit p {res.x[1]:+.3f}), mean log-loss {res.fun:.4f} (p itself: {nll([1, 0]):.4f})")
    return float(res.x[0]), float(res.x[1])


def summary(table: Path, scale: float = 1.0, shift: float = 0.0) -> None:
    from hrtem3d.evaluate.metrics import expected_calibration_error as ece

    t = pd.read_parquet(table)
    ce = t[t.species == "Ce"]
    # Ce exact over every true column (a missed one is wrong), per image
    whole = ce.assign(ok_s=ce.s_pred_n == ce.n_atoms, ok_v=ce.v_pred_n == ce.n_atoms)
    whole["ok_r"] = np.where(whole.routed == "vibrating", whole.ok_v, whole.ok_s)
    per_image = whole.groupby(["source", "case", "dose"]).agg(
        s=("ok_s", "mean"), v=("ok_v", "mean"), r=("ok_r", "mean"), p=("p_vibrating", "first")).reset_index()
    per_image["best"] = per_image[["s", "v"]].max(axis=1)
    # the averaged reading, and every ECE, on the columns both readings found
    t, dist, truth = both_found(t)
    w = weight(t.p_vibrating.to_numpy(float), scale, shift)
    mix = (1 - w)[:, None] * dist["s"] + w[:, None] * dist["v"]
    vib = (t.routed == "vibrating").to_numpy()
    k_r = np.where(vib, t.v_pred_n, t.s_pred_n).clip(1, N_CLASSES) - 1  # the counts `segment` reports
    t = t.assign(ok_r=k_r == truth, c_r=np.where(vib, t.v_confidence, t.s_confidence),
                 ok_mix=mix.argmax(1) == truth, c_mix=mix.max(1), c_keep=mix[np.arange(len(t)), k_r])
    fmt = lambda x: " / ".join(f"{v:.2f}" for v in x)  # noqa: E731
    out = []
    for source, g in per_image.groupby("source", sort=False):
        by, cd = g.groupby("dose"), t[t.source == source].groupby("dose")
        out.append({"source": source, "static": fmt(by.s.mean()), "vibrating": fmt(by.v.mean()),
                    "routed": fmt(by.r.mean()), "best of two": fmt(by.best.mean()),
                    "p min / median / max": fmt([g.p.min(), g.p.median(), g.p.max()]),
                    "routed ECE": fmt(cd.apply(lambda d: ece(d.c_r.to_numpy(), d.ok_r.to_numpy()))),
                    "averaged ECE (count kept)": fmt(cd.apply(lambda d: ece(d.c_keep.to_numpy(), d.ok_r.to_numpy()))),
                    "routed exact (found by both)": fmt(cd.ok_r.mean()),
                    "averaged exact (found by both)": fmt(cd.ok_mix.mean()),
                    "averaged ECE": fmt(cd.apply(lambda d: ece(d.c_mix.to_numpy(), d.ok_mix.to_numpy())))})
    print(f"Ce exact per image (mean over images, every true Ce column), and over the Ce columns both readings "
          f"found, with the ECE there; the vibrating reading weighted sigma({scale:.3f} logit p {shift:+.3f})")
    print(pd.DataFrame(out).to_markdown(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="read every image both ways")
    c.add_argument("--test", type=Path, help="an in-domain (static) test store")
    c.add_argument("--n-test", type=int, default=30, help="structures of --test")
    c.add_argument("--robust", type=Path, help="robust_sets cache")
    c.add_argument("--sets", default="phonons,clean_0p10,astig,background,all")
    c.add_argument("--n", type=int, default=8, help="particles a set")
    c.add_argument("--independent", type=Path, help="folder of the independent set")
    c.add_argument("--store", type=Path, action="append", help="a store whose particles are drawn through the "
                   "envelope (fitting images, as `gate_confidence.py collect`); repeatable")
    c.add_argument("--n-store", type=int, default=300, help="images drawn from each --store")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("summary", help="the tables of a collected file")
    s.add_argument("table", type=Path)
    f = sub.add_parser("fit", help="fit the weight of the vibrating reading on fitting images, then score tables")
    f.add_argument("fit_table", type=Path, help="collected with --store (fitting images, no benchmark image)")
    f.add_argument("tables", type=Path, nargs="*", help="tables to score with the fitted weight")
    a = ap.parse_args()
    if a.cmd == "collect":
        collect(a)
    elif a.cmd == "summary":
        summary(a.table)
    else:
        scale, shift = fit_weight(a.fit_table)
        for table in a.tables:
            summary(table, scale, shift)


if __name__ == "__main__":
    main()
