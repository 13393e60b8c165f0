"""Large frames: `segment` time and peak memory on 1024², 2048² and 4096² frames at 0.08 Å/px (issue 13).

Each size runs in its own process (peak resident memory = that process's maxrss, model and imports
included): the demo particle padded with vacuum, Poisson noise at 1000 e/Å², the shipped model with the
default backend. Time per frame is the median of --repeats after one warm-up; "per Mpx" divides it by
the frame's area so proportionality to area reads off directly.

    .venv/bin/python benchmarks/bench_large_frame.py [--sizes 1024,2048,4096] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def worker(side: int, repeats: int, backend: str) -> None:
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(HERE))
    from hrtem3d.segmentation.segmenter import Segmenter
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie

    clean = simulate_movie(MovieConfig(pixel_size_A=0.08, n_frames=4, event_frames=(1, 2, 3)), seed=0).clean[0]
    lam = np.full((side, side), float(np.median(clean[:8])), np.float32)
    p = (side - clean.shape[0]) // 2
    lam[p:p + clean.shape[0], p:p + clean.shape[1]] = clean
    frame = np.random.default_rng(1).poisson(lam * 1000 * 0.08**2).astype(np.uint16)
    seg = Segmenter(None, contrast="bright", backend=backend)
    n = len(seg.segment(frame, 0.08).columns)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        seg.segment(frame, 0.08)
        ts.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": side, "s": float(np.median(ts)), "peak_MB": rss, "columns": n, "backend": seg.backend}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,4096")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.repeats, a.backend)
    rows = []
    for side in (int(s) for s in a.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--worker", str(side), "--repeats", str(a.repeats),
                              "--backend", a.backend], capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]["s"] / (rows[0]["side"] ** 2 / 1e6)
    print("| frame | backend | s/frame | s per Mpx | per Mpx / smallest frame's | peak memory (MB) | columns |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mpx = r["side"] ** 2 / 1e6
        print(f"| {r['side']}² | {r['backend']} | {r['s']:.2f} | {r['s'] / mpx:.3f} | {r['s'] / mpx / base:.2f} | "
              f"{r['peak_MB']:.0f} | {r['columns']} |")


if __name__ == "__main__":
    main()
