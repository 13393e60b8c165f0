"""How much a model's counts depend on the image's contrast scale, and whether its confidence finds the scale.

The lattice contrast of a real image is 2-3x below simulation (the Stobbs factor); a uniform diffuse
background b turns the normalised image x = I / <I> - 1 into exactly x / (1 + b). This benchmark multiplies
the normalised working image by a fixed factor s before the network (`Segmenter.segment(..., gain=s)`, what
`--contrast-gain s` does) and scores every robustness set named with `bench_robustness`'s matching (0.7 Å, per species):

- a model that reads depth from absolute contrast shows Ce bias rising steeply with s, and on the
  background set (contrast halved) recovers at s near 2;
- a model that reads depth from something the scale does not change (column shapes, the particle's
  outline) shows a flat bias;
- `conf` (mean calibrated Ce confidence) and `pmax` (mean top class probability over column pixels)
  tell whether the model's own certainty could pick the right s at test time (it would peak there);
- `ratio` (`count_size_ratio` of the counts: mean Ce count over the width of the particle, 0.71 for the
  training particles) is the anchor `--contrast-gain auto` uses instead.

    .venv/bin/python benchmarks/bench_contrast_scale.py --model default [--model B.safetensors] \\
        [--sets clean_0p10,background,phonons,all] [--scales 0.6,0.8,1,1.25,1.5,2] \\
        [--cache /work/data/robust] [--n-particles 3] [--doses 1000,5000] [--out scale.csv]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def scan_image(seg, image: np.ndarray, pixel_A: float, truth: pd.DataFrame, scales: list[float]) -> list[dict]:
    """One row per scale: Ce exact, bias, recall, conf and pmax of `seg` on `image` with its input times s."""
    from bench_robustness import match_image, metrics

    from hrtem3d.segmentation.envelope_check import count_size_ratio

    rows = []
    for s in scales:
        seg.set_contrast(seg.contrast)
        r = seg.segment(image, pixel_A, gain=s)
        m, n_pred = match_image(truth, r.columns)
        res = metrics(m, n_pred)
        ce = r.columns[r.columns["species"] == "Ce"] if len(r.columns) else r.columns
        fg = r.probs[0] < 0.5
        rows.append({"s": s, "Ce_exact": res["Ce_exact"], "Ce_bias": res["Ce_bias"], "recall": res["recall"],
                     "conf": float(ce["confidence"].mean()) if len(ce) else np.nan,
                     "pmax": float(r.probs.max(0)[fg].mean()) if fg.any() else np.nan,
                     "ratio": count_size_ratio(r.columns)})
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from bench_robustness import load_segmenter, set_cases

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="model file or 'default'; repeat to compare")
    ap.add_argument("--sets", default="clean_0p10,background,phonons,all")
    ap.add_argument("--scales", default="0.6,0.8,1,1.25,1.5,2")
    ap.add_argument("--cache", default="/work/data/robust", help="folder of the sets (bench_robustness builds them)")
    ap.add_argument("--n-particles", type=int, default=3)
    ap.add_argument("--doses", default="1000,5000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="CSV of every (model, set, dose, particle, scale)")
    a = ap.parse_args(argv)
    scales = [float(v) for v in a.scales.split(",")]
    doses = [float(v) for v in a.doses.split(",")]
    rows = []
    for model in a.model:
        seg = load_segmenter(model, a.threads)
        for name in a.sets.split(","):
            folder = Path(a.cache) / name
            if not (folder / "meta.json").exists():
                raise SystemExit(f"{folder} is not built; run benchmarks/robust_sets.py --sets {name} first")
            for case, image, truth in set_cases(folder, a.n_particles, doses):
                for r in scan_image(seg, image, case["pixel_size_angstrom"], truth, scales):
                    rows.append({"model": model, "set": name, "dose": case["dose_e_per_A2"],
                                 "particle": case["particle"], **r})
    df = pd.DataFrame(rows)
    if a.out:
        df.to_csv(a.out, index=False)
    table = df.groupby(["model", "set", "dose", "s"])[["Ce_exact", "Ce_bias", "recall", "conf", "pmax",
                                                       "ratio"]].mean()
    pd.set_option("display.width", 200)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return df


if __name__ == "__main__":
    main()
