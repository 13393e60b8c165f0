"""Can a model tell thermal diffuse scattering from a thinner column? Paired stores, same particles.

Builds stores of the same particles (same seed) with a static lattice and with frozen phonons (4 and
16 configurations by default), images them with the in-domain optics (`hrtem3d evaluate`'s images),
and prints, per model and store, Ce exact and the mean signed depth error (atoms) of the detected Ce
columns, overall and by true column length. A model that reads TDS from the image has the same bias on
every store; one that cannot has a bias that grows with column length on the TDS stores, the under-count
a real image (which always carries TDS) would get.

Example (about 6 min of simulation on 2 cores, then a minute per model and store):

    python benchmarks/bench_tds_pairs.py --model default --model v7.safetensors --cache /work/data/tds_pairs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from hrtem3d.data.generate import SimulationSettings, simulate_dataset
from hrtem3d.evaluate.metrics import evaluate

LENGTH_BINS = {"bias 1-3": (1, 3), "bias 4-5": (4, 5), "bias 6-7": (6, 7), "bias 8+": (8, 99)}  # true atoms


def build(cache: Path, configs: list[int], n: int, seed: int, scale: tuple[float, float]) -> dict[str, Path]:
    """The paired stores, simulated once (resumable; same seed, so the same particles in each)."""
    stores = {}
    for c in configs:
        s = SimulationSettings(seed=seed)
        s.particles.diameter_A = (16.0, 46.0)
        if c:
            s.multislice.frozen_phonons, s.multislice.phonon_scale = c, scale
        path = cache / (f"tds{c}.zarr" if c else "static.zarr")
        simulate_dataset(path, n, s, workers=2, progress=False, n_films=0)
        stores[f"TDS x{c}" if c else "static"] = path
    return stores


def table(model: str, name: str, store: Path, doses: tuple[float, ...]) -> list[dict]:
    """Rows of the table for one model (`PATH@READING`: one reading of a model with lattice heads) on one store."""
    from bench_robustness import load_segmenter, model_name, split_reading

    path = split_reading(model)[0]
    cols = evaluate(path, store, doses=doses, progress=False, segmenter=load_segmenter(model, threads=0))["columns"]
    ce = cols[cols.species == "Ce"]
    rows = []
    for dose, g in ce.groupby("dose"):
        hit = g[g.pred_species == "Ce"]
        err = hit.pred_n - hit.n_atoms
        row = {"model": model_name(model), "store": name, "dose": int(dose),
               "Ce exact": round(float((g.pred_n == g.n_atoms).mean()), 3), "bias": round(float(err.mean()), 2),
               "confidence": round(float(hit.confidence.mean()), 2)}
        for label, (lo, hi) in LENGTH_BINS.items():
            sel = hit.n_atoms.between(lo, hi)
            row[label] = round(float(err[sel].mean()), 2) if sel.any() else np.nan
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[],
                    help="model file, or 'default' (repeatable); FILE@static or FILE@vibrating for one reading")
    ap.add_argument("--cache", type=Path, required=True, help="folder for the paired stores")
    ap.add_argument("--configs", default="0,4,16", help="frozen-phonon configurations per store (0 = static)")
    ap.add_argument("--phonon-scale", default="1,1", help="thermal r.m.s. factor range of the TDS stores")
    ap.add_argument("--n", type=int, default=8, help="particles per store")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--doses", default="1000,5000")
    ap.add_argument("--out", type=Path, help="CSV of the table")
    a = ap.parse_args()
    lo, hi = (float(v) for v in a.phonon_scale.split(","))
    stores = build(a.cache, [int(c) for c in a.configs.split(",")], a.n, a.seed, (lo, hi))
    doses = tuple(float(d) for d in a.doses.split(","))
    models = a.model or ["default"]  # "default": the shipped pair as `segment` runs it
    rows = [r for m in models for name, path in stores.items() for r in table(m, name, path, doses)]
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False))
    if a.out:
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
