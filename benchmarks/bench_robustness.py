"""Robustness benchmark: how well models count atoms per column on images made by other code and conditions.

For every set of `robust_sets.py` (built into --cache when missing) and every dose, each noisy image goes
through `Segmenter(model).segment(image, pixel_size_A)`, the path of `hrtem3d segment`; predictions are
matched to the truth per species (`match_columns`, 0.7 Å, Hungarian). Metrics, pooled over a set's images:

- Ce_exact / O_exact: matched with the exact atom count over all true columns of that species;
  Ce_pm1 / O_pm1: within one atom; Ce_bias: mean signed error of n_atoms over matched Ce columns (atoms);
- recall: matched true columns over all true columns; precision: matched predictions over all predictions
  (a prediction is a true positive if matched to a true column of its species);
- ECE: expected calibration error of the confidence for Ce exact-correctness (10 equal-width bins over
  matched Ce columns); conf: their mean confidence; ECE_floor: the ECE a perfectly calibrated model with
  the same confidences would show on that many columns (`ece_sampling_floor`), the set's sampling noise;
- warn: share of the set's images that get the out-of-envelope warning, decided as `hrtem3d segment` decides
  it (`segment.envelope_check`: the lattice check on the image, then, knowing this model's columns, a
  missing lattice taken back when the columns sit on it and counts far below what the particle's size
  holds put out). Confidence, hence ECE, is that of the segmenter alone (no cap), so ECE keeps measuring
  the model's own calibration; ECE_seen is that of the confidence a user reads (capped at 0.2 on warned
  images, as `segment` writes it).

A "[intensity oracle]" row per set: per image, a Gaussian classifier on the integrated intensity in a 0.5 Å
disc around every TRUE Ce column, fitted on that image's own truth (an optimistic ceiling, as score.py's).
With --independent, the actual CLI (`hrtem3d segment DIR/p*_dose*.tif --pixel-size 0.10`) segments that set,
its columns.csv are scored alike, and the set's own score.py is run to check that Ce exact agrees.

    .venv/bin/python benchmarks/bench_robustness.py --model default [--model B.safetensors] \\
        [--baseline-model plain.safetensors] [--sets clean_0p10,astig] [--cache /work/data/robust] \\
        [--n-particles 4] [--independent ../shared/testdata/independent] [--out results.csv]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIDENCE: dict = {}  # (model, set) -> [(confidence, exact) of matched Ce columns], for the reliability figure
METRICS = ["Ce_exact", "Ce_pm1", "Ce_bias", "O_exact", "O_pm1", "recall", "precision", "ECE", "ECE_floor", "conf",
           "warn", "ECE_seen"]
CLI = Path(sys.executable).with_name("hrtem3d")


def load_truth(path: Path, pixel_A: float) -> pd.DataFrame:
    """True columns (x, y in pixels) as a table with x_A, y_A (Å), species and n_atoms > 0."""
    t = pd.DataFrame(json.loads(Path(path).read_text()))
    t = t[t["n_atoms"] > 0].reset_index(drop=True)
    return t.assign(x_px=t["x"], y_px=t["y"], x_A=t["x"] * pixel_A, y_A=t["y"] * pixel_A)[
        ["species", "x_px", "y_px", "x_A", "y_A", "n_atoms"]]


def match_image(truth: pd.DataFrame, pred: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Per-species matching: the truth table with matched, pred_n, confidence; and the number of predictions."""
    from hrtem3d.evaluate.metrics import match_columns

    parts = []
    for sp in ("Ce", "O"):
        t = truth[truth["species"] == sp]
        p = pred[pred["species"] == sp].reset_index(drop=True) if len(pred) else pred
        m = match_columns(t, p, max_dist_A=0.7)
        parts.append(m.assign(matched=m["pred_row"] >= 0))
    return pd.concat(parts, ignore_index=True), len(pred)


def seen_by_user(truth: pd.DataFrame, cols: pd.DataFrame, env) -> tuple[pd.DataFrame, int, bool]:
    """`match_image` of a model's columns, with the envelope verdict `segment` reaches on them (`env`, the
    image's `check_envelope`, reconsidered knowing the columns) and `confidence_seen`, the confidence as
    `segment` writes it (capped when warned)."""
    from hrtem3d.segmentation.envelope_check import cap_confidence, reconsider

    chk = reconsider(env, cols)
    m, n_pred = match_image(truth, cols)
    m["confidence_seen"] = cap_confidence(m, chk)["confidence"]
    return m, n_pred, not chk.in_envelope


def metrics(m: pd.DataFrame, n_pred: int) -> dict:
    """The METRICS of pooled matched truth tables (see the module docstring)."""
    from hrtem3d.evaluate.metrics import ece_sampling_floor, expected_calibration_error

    out: dict = {}
    for sp in ("Ce", "O"):
        g = m[m["species"] == sp]
        ok = g["matched"].to_numpy(bool)
        err = (g["pred_n"] - g["n_atoms"]).to_numpy(float)
        out[f"{sp}_exact"] = float((ok & (err == 0)).mean()) if len(g) else np.nan
        out[f"{sp}_pm1"] = float((ok & (np.abs(err) <= 1)).mean()) if len(g) else np.nan
        if sp == "Ce":
            out["Ce_bias"] = float(err[ok].mean()) if ok.any() else np.nan
            conf = g["confidence"].to_numpy(float)[ok]
            out["ECE"] = expected_calibration_error(conf, err[ok] == 0)
            out["ECE_floor"] = ece_sampling_floor(conf)
            if "confidence_seen" in g:
                out["ECE_seen"] = expected_calibration_error(g["confidence_seen"].to_numpy(float)[ok], err[ok] == 0)
            out["conf"] = float(conf.mean()) if ok.any() else np.nan
            out["n_true_Ce"] = len(g)
    out["recall"] = float(m["matched"].mean()) if len(m) else np.nan
    out["precision"] = float(m["matched"].sum() / n_pred) if n_pred else np.nan
    out["n_true"], out["n_pred"] = len(m), n_pred
    return out


def intensity_oracle(image: np.ndarray, truth: pd.DataFrame, pixel_A: float) -> np.ndarray:
    """Per true Ce column, the depth a Gaussian classifier on integrated intensity (0.5 Å disc, image over its
    median) gives when fitted on this image's own truth."""
    from hrtem3d.evaluate.metrics import integrated_intensity

    ce = truth[truth["species"] == "Ce"]
    if not len(ce):
        return np.zeros(0, int)
    f = integrated_intensity(image / np.median(image), ce["x_px"].to_numpy(), ce["y_px"].to_numpy(), 0.5 / pixel_A)
    n = ce["n_atoms"].to_numpy()
    classes = np.unique(n)
    mu = np.array([f[n == k].mean() for k in classes])
    sd = np.array([max(f[n == k].std(), 1e-3) if (n == k).sum() > 1 else f.std() + 1e-3 for k in classes])
    prior = np.array([(n == k).mean() for k in classes])
    ll = -0.5 * ((f[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(prior)
    return classes[ll.argmax(1)]


def oracle_metrics(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Ce_exact, Ce_pm1, Ce_bias of the intensity oracle over (true n, oracle n) pairs (others NaN)."""
    n = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0)
    g = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0)
    out = dict.fromkeys(METRICS, np.nan)
    if len(n):
        out.update(Ce_exact=float((g == n).mean()), Ce_pm1=float((np.abs(g - n) <= 1).mean()),
                   Ce_bias=float((g - n).mean()), n_true_Ce=len(n))
    return out


#: a model spec's suffix for "auto" contrast gain without the contrast gate (the particle's counts alone)
NO_CONTRAST_GATE = "!countgain"
#: a model spec's suffix for the contrast gate without its confidence map (`confidence.apply_gates_map`)
NO_GATES_MAP = "!nogatesmap"
#: a model spec's suffix for another contrast gate file (`!gate=PATH`; its own confidence map with it)
GATE_FILE = "!gate="
#: a model spec's suffix for another vibration gate file of the shipped pair (`!vgate=PATH`, its threshold)
VGATE_FILE = "!vgate="


def strip_switches(model: str) -> tuple[str, set[str]]:
    """A model spec without its `!` switches (`NO_CONTRAST_GATE`, `NO_GATES_MAP`, `GATE_FILE`, `VGATE_FILE`),
    and the switches."""
    bare, *switches = model.split("!")
    return bare, {"!" + w for w in switches}


def split_reading(model: str) -> tuple[str, str | None]:
    """`PATH@READING` (a model with lattice heads and the reading to use: static, vibrating, auto) into its
    two parts; a plain path or "default" has no reading."""
    path, _, reading = model.partition("@")
    return path, reading or None


def model_name(model: str) -> str:
    """A model's name in the tables: "default", or the file's stem with "@READING" when one is asked for."""
    from lattice_route import is_route, parse_route

    if is_route(model):  # a routed pair: named by its gate's file
        gate, _, _, threshold = parse_route(model)
        return "route:" + Path(gate).stem + (f"@{threshold:g}" if threshold is not None else "")
    model, switches = strip_switches(model)
    path, reading = split_reading(model)
    shown = sorted(w.split("=")[0] + "=" + Path(w.split("=", 1)[1]).stem if "=" in w else w for w in switches)
    return ("default" if path == "default" else Path(path).stem) + (f"@{reading}" if reading else "") + "".join(shown)


def load_segmenter(model: str, threads: int, backend: str = "auto"):
    """`Segmenter` for a model path (`PATH@READING` for one reading of a model with lattice heads) or
    "default" (the shipped model); registers "mean/std" if needed."""
    from lattice_route import RoutedSegmenter, is_route

    from hrtem3d.segmentation.segmenter import Segmenter

    if is_route(model):  # route=GATE,STATIC,VIBRATING (lattice_route.py)
        return RoutedSegmenter(model, threads=threads)
    model, switches = strip_switches(model)
    model, reading = split_reading(model)
    path = None if model == "default" else model
    if path is not None:
        from plain_unet import ensure_normalization

        from hrtem3d.model.io import read_metadata

        ensure_normalization(read_metadata(path).get("normalization"))
    # contrast as recorded: `hrtem3d segment`'s default
    seg = Segmenter(path, threads=threads, backend=backend, contrast="bright", lattice=reading)
    seg.use_contrast_gate = NO_CONTRAST_GATE not in switches
    seg.use_gates_map = NO_GATES_MAP not in switches
    for w in switches:
        if w.startswith(GATE_FILE):  # a candidate contrast gate in place of the shipped one
            from hrtem3d.segmentation.gain import ContrastRead

            seg.contrast_read = ContrastRead.from_file(w[len(GATE_FILE):])
        if w.startswith(VGATE_FILE):  # a candidate vibration gate routing the shipped pair
            from hrtem3d.segmentation.route import LatticeRoute

            if seg.route is None:
                raise SystemExit(f"{VGATE_FILE}PATH routes the shipped pair; {model} is not it")
            seg.route = LatticeRoute.from_file(w[len(VGATE_FILE):], seg.device)
    return seg


def set_cases(folder: Path, n_particles: int, doses: list[float] | None = None):
    """Yield `(case, image, truth)` for the first `n_particles` of a built set (`doses` only, if given):
    the case's meta, its noisy image in electrons (float32) and its true columns (`load_truth`)."""
    import tifffile

    for case in json.loads((folder / "meta.json").read_text())["cases"]:
        if case["particle"] >= n_particles or (doses and case["dose_e_per_A2"] not in doses):
            continue
        px = case["pixel_size_angstrom"]
        image = tifffile.imread(folder / case["image"]).astype(np.float32) / case.get("gain_adu_per_e", 1)
        yield case, image, load_truth(folder / f"p{case['particle']}_columns.json", px)


def run_set(folder: Path, segs: dict, n_particles: int, doses: list[float] | None = None) -> list[dict]:
    """Score every model and the intensity oracle on one built set (`doses` only, if given); one result row
    per (model, dose)."""
    from hrtem3d.segmentation.envelope_check import check_envelope

    by: dict = {}
    for case, image, truth in set_cases(folder, n_particles, doses):
        px, dose = case["pixel_size_angstrom"], case["dose_e_per_A2"]
        env = check_envelope(image, px)
        for name, seg in segs.items():
            seg.set_contrast(seg.contrast)  # each image a new input, as `hrtem3d segment` on separate files
            cols = seg.segment(image, px).columns
            m, n_pred, warned = seen_by_user(truth, cols, env)
            routed = getattr(seg, "p_vibrating", None)  # a routed pair: did this image go to the vibrating reader?
            by.setdefault((name, dose), []).append((m, n_pred, warned, routed[-1] > seg.threshold if routed else None))
            _keep_confidence(name, folder.name, m)
        ce = truth[truth["species"] == "Ce"]
        oracle = intensity_oracle(image, truth, px)
        by.setdefault(("intensity oracle", dose), []).append((ce["n_atoms"].to_numpy(), oracle))
    rows = []
    for (name, dose), items in by.items():
        if name == "intensity oracle":
            res = oracle_metrics(items)
        else:
            res = metrics(pd.concat([i[0] for i in items], ignore_index=True), sum(i[1] for i in items))
            res["warn"] = float(np.mean([i[2] for i in items]))
            if items[0][3] is not None:
                res["routed_vibrating"] = float(np.mean([i[3] for i in items]))
        rows.append({"model": name, "set": folder.name, "dose": dose, "n_images": len(items), **res})
    return rows


def run_independent(folder: Path, models: dict, segs: dict, doses: list[float] | None = None,
                    backends: dict | None = None) -> list[dict]:
    """The independent set through the `hrtem3d segment` CLI (`doses` only, if given), scored here and by
    its own score.py (which scores every image it finds). A model the CLI cannot load yet (normalization
    "mean/std") is run in this process through its `Segmenter` instead, and its rows say so."""
    import tifffile
    from lattice_route import is_route

    from hrtem3d.model.io import read_metadata
    from hrtem3d.segmentation.envelope_check import check_envelope

    meta = json.loads((folder / "meta.json").read_text())
    px = float(meta["pixel_size_angstrom"])
    cases = [c for c in meta["cases"] if not doses or c["dose_e_per_A2"] in doses]
    images = [str(folder / c["image"]) for c in cases]
    rows, oracle = [], {}
    for name, model in models.items():
        bare = strip_switches(model)[0]
        path, reading = split_reading(bare)
        route = is_route(model) or bare != model  # in-process: the CLI has no switch for it
        norm = None if path == "default" or route else read_metadata(path).get("normalization")
        via = "cli" if _cli_knows(norm) and not route else "in-process"
        with tempfile.TemporaryDirectory() as tmp:
            if via == "cli":
                cmd = [str(CLI), "segment", *images, "--pixel-size", f"{px}", "--out", tmp, "--no-progress"]
                cmd += [] if path == "default" else ["--model", str(path)]
                cmd += ["--backend", (backends or {}).get(name, "auto")] + (["--lattice", reading] if reading else [])
                subprocess.run(cmd, check=True, capture_output=True, text=True)
            else:
                print(f"  {name}: segmenting in this process ({'a routed pair' if route else repr(norm) + ' model'})")
                for case in cases:
                    cols = segs[name].segment(tifffile.imread(folder / case["image"]).astype(np.float32), px).columns
                    (Path(tmp) / Path(case["image"]).stem).mkdir()
                    cols.to_csv(Path(tmp) / Path(case["image"]).stem / "columns.csv", index=False)
            by: dict = {}
            for case in cases:
                truth = load_truth(folder / f"p{case['particle']}_columns.json", px)
                pred = pd.read_csv(Path(tmp) / Path(case["image"]).stem / "columns.csv")
                pred = pred.assign(x_A=pred["x_px"] * px, y_A=pred["y_px"] * px)
                trust = Path(tmp) / Path(case["image"]).stem / "trust.json"
                warned = (not json.loads(trust.read_text())["in_envelope"]) if trust.exists() else not \
                    check_envelope(tifffile.imread(folder / case["image"]).astype(np.float32), px).in_envelope
                m, n_pred = match_image(truth, pred)
                m["confidence_seen"] = m["confidence"]  # as `segment` wrote it (capped when it warned)
                by.setdefault(case["dose_e_per_A2"], []).append((m, n_pred, warned))
                _keep_confidence(name, "independent", m)
                if name == next(iter(models)):
                    img = tifffile.imread(folder / case["image"]).astype(np.float32)
                    ce = truth[truth["species"] == "Ce"]
                    oracle.setdefault(case["dose_e_per_A2"], []).append((ce["n_atoms"].to_numpy(),
                                                                         intensity_oracle(img, truth, px)))
            ref = _score_py(folder, tmp)
        for dose, items in sorted(by.items()):
            res = metrics(pd.concat([i[0] for i in items], ignore_index=True), sum(i[1] for i in items))
            res["warn"] = float(np.mean([i[2] for i in items]))
            agree = abs(ref.get(int(dose), np.nan) - res["Ce_exact"]) < 1e-3
            print(f"  {name} independent @ {dose:g} ({via}): Ce exact {res['Ce_exact']:.3f}, score.py "
                  f"{ref.get(int(dose), float('nan')):.3f} -> {'agree' if agree else 'DISAGREE'}")
            rows.append({"model": name, "set": "independent", "dose": float(dose), "n_images": len(items),
                         "segmented_by": via, "score_py_Ce_exact": ref.get(int(dose), np.nan), **res})
    for dose, items in sorted(oracle.items()):
        rows.append({"model": "intensity oracle", "set": "independent", "dose": float(dose), "n_images": len(items),
                     **oracle_metrics(items)})
    return rows


def _keep_confidence(model: str, set_name: str, m: pd.DataFrame) -> None:
    g = m[(m["species"] == "Ce") & m["matched"]]
    CONFIDENCE.setdefault((model, set_name), []).append(
        (g["confidence"].to_numpy(float), (g["pred_n"] == g["n_atoms"]).to_numpy()))


def reliability_figure(model: str, sets: list[str], path: str, in_domain: str | None = None) -> None:
    """Reliability curves of `model` on `sets` (every dose pooled), and in-domain from an `hrtem3d evaluate`
    columns.parquet, written to `path`."""
    from hrtem3d.fsutil import save_figure
    from hrtem3d.viz.evaluation import reliability_curves

    groups = {}
    if in_domain:
        c = pd.read_parquet(in_domain)
        c = c[(c["species"] == "Ce") & (c["pred_row"] >= 0)]
        right = (c["pred_species"] == c["species"]) & (c["pred_n"] == c["n_atoms"])
        groups["in-domain test set"] = (c["confidence"].to_numpy(float), right.to_numpy())
    for name in sets:
        parts = CONFIDENCE.get((model, name), [])
        if parts:
            groups[name] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    save_figure(reliability_curves(groups), path)
    print(f"wrote {path}")


def _cli_knows(normalization: str | None) -> bool:
    """Whether hrtem3d itself (hence `hrtem3d segment`) knows this normalization name."""
    from hrtem3d.data.normalize import normalizer

    try:
        normalizer(normalization)
        return True
    except ValueError:
        return False


def _score_py(folder: Path, pred_dir: str) -> dict:
    """exact_end2end per dose printed by the set's own score.py."""
    out = subprocess.run([sys.executable, str(folder / "score.py"), str(folder), pred_dir], check=True,
                         capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    head = lines[0].split()
    return {int(v[0]): float(v[head.index("exact_end2end")]) for v in (ln.split() for ln in lines[1:])}


def print_tables(df: pd.DataFrame, models: list[str]) -> None:
    """One table per model: rows = set (then its intensity-oracle row), columns = metric@dose."""
    doses = sorted(df["dose"].unique())
    sets = list(dict.fromkeys(df["set"]))
    pd.set_option("display.width", 400)
    for model in models:
        rows = {}
        for s in sets:
            for who, label in ((model, s), ("intensity oracle", f"{s} [intensity oracle]")):
                g = df[(df["model"] == who) & (df["set"] == s)].set_index("dose")
                if len(g):
                    rows[label] = {f"{k}@{d:g}": g.at[d, k] if d in g.index else np.nan for k in METRICS for d in doses}
        print(f"\n## {model}\n" + pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    if len(models) > 1:
        piv = df[df["model"].isin(models + ["intensity oracle"])].pivot_table(
            index="set", columns=["model", "dose"], values="Ce_exact", sort=False)
        print("\n## Ce exact, all models\n" + piv.to_string(float_format=lambda v: f"{v:.3f}"))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    import robust_sets as rs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True,
                    help="model file or 'default'; FILE@static or FILE@vibrating for one reading of a model with "
                         "lattice heads; repeat to compare")
    ap.add_argument("--baseline-model", action="append", default=[], help="a baseline model file (repeatable)")
    ap.add_argument("--sets", default=",".join(rs.SETS), help="comma-separated sets ('' for none)")
    ap.add_argument("--cache", default="/work/data/robust", help="folder of the built sets")
    ap.add_argument("--n-particles", type=int, default=4)
    ap.add_argument("--independent", default=None, help="folder of the independent set (with score.py)")
    ap.add_argument("--out", default="results.csv", help="CSV of every result row")
    ap.add_argument("--doses", default=None, help="comma-separated doses to score (default: every dose of a set)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--reliability-figure", default=None, help="write reliability curves of the first model here")
    ap.add_argument("--reliability-sets", default="clean_0p10,independent,mtf_strong,phonons,background,all",
                    help="sets in the reliability figure")
    ap.add_argument("--in-domain-columns", default=None,
                    help="columns.parquet of `hrtem3d evaluate` on the in-domain test set, for the figure")
    ap.add_argument("--backend", action="append", default=None,
                    help="inference backend (auto, onnx, torch, int8); repeat to compare (rows: model[backend])")
    a = ap.parse_args(argv)
    backends = a.backend or ["auto"]
    models, backend_of = {}, {}
    for m in a.model:
        for b in backends:
            name = model_name(m) + (f"[{b}]" if len(backends) > 1 else "")
            models[name], backend_of[name] = m, b
    models.update({f"baseline:{Path(m).stem}": m for m in a.baseline_model})
    segs = {name: load_segmenter(path, a.threads, backend_of.get(name, "auto")) for name, path in models.items()}
    rows = []
    doses = [float(d) for d in a.doses.split(",")] if a.doses else None
    cfg = rs.BuildConfig(n_particles=a.n_particles)
    for name in [s.strip() for s in a.sets.split(",") if s.strip()]:
        t = time.perf_counter()
        folder = rs.build_set(name, a.cache, cfg)
        rows += run_set(folder, segs, a.n_particles, doses)
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    if a.independent:
        t = time.perf_counter()
        rows += run_independent(Path(a.independent), models, segs, doses, backend_of)
        print(f"independent: {time.perf_counter() - t:.1f} s", flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(a.out, index=False)
    print_tables(df, list(models))
    print(f"\nwrote {a.out} ({len(df)} rows)")
    if a.reliability_figure:
        reliability_figure(next(iter(models)), a.reliability_sets.split(","), a.reliability_figure,
                           a.in_domain_columns)
    return df


if __name__ == "__main__":
    main()
