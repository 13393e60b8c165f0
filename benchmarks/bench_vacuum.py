"""Vacuum skipping (`segmentation.vacuum`): accuracy and time against segmenting the whole frame.

Frames: each robustness set's noise-free particle images (`robust_sets.py`, built into --cache when
missing) placed at a random offset in a vacuum frame `--scale` times larger per side (one in four
touching a frame edge), the vacuum at the image's own level, Poisson noise at each dose at the set's
pixel size. Every frame is segmented by the shipped model with `skip_vacuum=False` (the baseline) and
with vacuum skipped at each margin. Per margin: the columns whose depth differs from the baseline's,
the baseline columns lost (none of them near a true column means a false column in vacuum removed),
true columns lost, Ce exact against the truth for both, the share of the frame the network ran on, and
the time. Prints a markdown table.

    .venv/bin/python benchmarks/bench_vacuum.py --cache /work/data/robust [--sets clean_0p10,phonons] \\
        [--margins 32,64,96,144] [--scale 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_SETS = "clean_0p10,pix_0p05,pix_0p07,pix_0p13,pix_0p15,mtf_strong,phonons,carbon,background,shapes,all"


def vacuum_frames(folder: Path, scale: float, rng: np.random.Generator) -> list[dict]:
    """One frame per (particle, dose) of a built set: the particle in a larger vacuum frame, with truth."""
    from bench_robustness import load_truth

    meta = json.loads((folder / "meta.json").read_text())
    out = []
    for case in meta["cases"]:
        stem = case["image"].split("_")[0]
        px = float(next(v for k, v in case.items() if k.startswith("pixel_size")))
        clean = tifffile.imread(folder / f"{stem}_clean.tif").astype(np.float32)
        h, w = clean.shape
        H, W = int(h * scale), int(w * scale)
        frame = np.full((H, W), np.median(np.concatenate([clean[0], clean[-1], clean[:, 0], clean[:, -1]])),
                        np.float32)
        edge = len(out) % 4 == 0
        oy = 0 if edge else int(rng.integers(0, H - h + 1))
        ox = int(rng.integers(0, W - w + 1))
        frame[oy:oy + h, ox:ox + w] = clean
        lam = frame * case["dose_e_per_A2"] * px * px
        truth = load_truth(folder / f"{stem}_columns.json", px)
        truth = truth.assign(x_px=truth["x_px"] + ox, y_px=truth["y_px"] + oy)
        truth = truth.assign(x_A=truth["x_px"] * px, y_A=truth["y_px"] * px)
        out.append(dict(image=rng.poisson(lam).astype(np.float32), pixel_size_A=px, truth=truth,
                        dose=case["dose_e_per_A2"], name=f"{folder.name}/{case['image']}"))
    return out


def compare(base: pd.DataFrame, other: pd.DataFrame, truth: pd.DataFrame, px: float) -> dict:
    """Depth changes and losses of `other` against `base` (same frame), and what the losses were."""
    from scipy.spatial import cKDTree

    if not len(base):
        return dict(changed=0, lost=0, lost_true=0, added=len(other))
    if not len(other):
        d = np.full(len(base), np.inf)
        i = np.zeros(len(base), int)
    else:
        d, i = cKDTree(other[["x_px", "y_px"]].to_numpy()).query(base[["x_px", "y_px"]].to_numpy())
    kept = d < 0.5
    changed = int((base["n_atoms"].to_numpy()[kept] != other["n_atoms"].to_numpy()[i[kept]]).sum())
    lost = base[~kept]
    near = 0
    if len(lost):
        dt, _ = cKDTree(truth[["x_px", "y_px"]].to_numpy()).query(lost[["x_px", "y_px"]].to_numpy())
        near = int((dt * px < 0.7).sum())
    return dict(changed=changed, lost=len(lost), lost_true=near, added=len(other) - int(kept.sum()))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/work/data/robust")
    ap.add_argument("--sets", default=DEFAULT_SETS)
    ap.add_argument("--margins", default="32,64,96,144")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--n-particles", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import torch
    from bench_robustness import match_image, metrics
    from robust_sets import BuildConfig, build_set

    from hrtem3d.segmentation.segmenter import Segmenter

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    frames = []
    for name in a.sets.split(","):
        folder = build_set(name, a.cache, BuildConfig(n_particles=a.n_particles))
        frames += vacuum_frames(Path(folder), a.scale, rng)
    margins = [int(m) for m in a.margins.split(",")]
    segs = {"whole frame (baseline)": Segmenter(contrast="auto", skip_vacuum=False, threads=a.threads)}
    default = Segmenter(contrast="auto", threads=a.threads).vacuum_margin
    segs |= {f"skip vacuum, margin {m} px" + (" (default)" if m == default else ""):
             Segmenter(contrast="auto", skip_vacuum=True, vacuum_margin=m, threads=a.threads) for m in margins}
    segs[f"skip vacuum, margin {default} px, contrast decided on its own box"] = Segmenter(contrast="auto",
                                                                                          threads=a.threads)
    rows, results, signs = [], {}, []
    base = next(iter(segs))
    for label, seg in segs.items():
        seg.segment(frames[0]["image"], frames[0]["pixel_size_A"])  # warm-up
        t_total, area, per = 0.0, 0.0, []
        for k, f in enumerate(frames):
            # the baseline decides each frame's contrast ("auto" on its centre); the margin rows reuse it, so
            # they differ from it by the margin alone; the last row decides on the particle's box
            seg.set_contrast("auto" if label == base or "own box" in label else signs[k])
            t = time.perf_counter()
            r = seg.segment(f["image"], f["pixel_size_A"])
            t_total += time.perf_counter() - t
            results[label, k] = r.columns
            if label == base:
                signs.append("bright" if seg.polarity(r.working_image) > 0 else "dark")
            area += float((r.probs[0] < 1).mean()) if seg.skip_vacuum else 1.0
            per.append(match_image(f["truth"], r.columns))
        pooled = {}
        for dose in sorted({f["dose"] for f in frames}):
            ms = [p for p, f in zip(per, frames) if f["dose"] == dose]
            pooled[dose] = metrics(pd.concat([m for m, _ in ms], ignore_index=True), sum(n for _, n in ms))
        cmp = [compare(results[next(iter(segs)), k], results[label, k], f["truth"], f["pixel_size_A"])
               for k, f in enumerate(frames)]
        rows.append(dict(run=label, **{f"Ce exact {int(d)}": v["Ce_exact"] for d, v in pooled.items()},
                         **{f"precision {int(d)}": v["precision"] for d, v in pooled.items()},
                         changed=sum(c["changed"] for c in cmp), lost=sum(c["lost"] for c in cmp),
                         lost_true=sum(c["lost_true"] for c in cmp), added=sum(c["added"] for c in cmp),
                         n_columns=sum(len(results[next(iter(segs)), k]) for k in range(len(frames))),
                         area=area / len(frames), seconds=t_total))
    df = pd.DataFrame(rows)
    base_t = df["seconds"].iloc[0]
    print(f"{len(frames)} frames from {a.sets} ({a.n_particles} particles each, 3 doses), vacuum frame x{a.scale:g} "
          f"per side; {a.threads} threads")
    print("| run | " + " | ".join(c for c in df.columns if c != "run") + " | time vs baseline |")
    print("|" + " --- |" * (len(df.columns) + 1))
    for _, r in df.iterrows():
        vals = [f"{v:.3f}" if isinstance(v, float) and k != "seconds" else f"{v:.1f}" if k == "seconds" else str(v)
                for k, v in r.items() if k != "run"]
        print(f"| {r['run']} | " + " | ".join(vals) + f" | {r['seconds'] / base_t:.2f} |")
    return df


if __name__ == "__main__":
    main()
