"""Large frames: `segment` time and peak memory on 1024², 2048² and 4096² frames at 0.08 Å/px (issue 13).

Each (size, layout, mode) runs in its own process (peak resident memory = that process's maxrss, model and
imports included): the demo particle in vacuum, Poisson noise at 1000 e/Å², the shipped model with the
default backend. Layouts: "one" particle at the centre, or "grid": one particle at the centre of every
1024² block (particle area proportional to the frame's). Modes: the whole frame through the network
(`--whole-frame`), and vacuum skipped (the default of `segment`). Time per frame is the median of
--repeats after one warm-up; "per Mpx" divides it by the frame's area and "per particle" by the number of
particles, so proportionality reads off directly.

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


def worker(side: int, repeats: int, backend: str, layout: str, skip_vacuum: bool) -> None:
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(HERE))
    from hrtem3d.segmentation.segmenter import Segmenter
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie

    clean = simulate_movie(MovieConfig(pixel_size_A=0.08, n_frames=4, event_frames=(1, 2, 3)), seed=0).clean[0]
    lam = np.full((side, side), float(np.median(clean[:8])), np.float32)
    block = side if layout == "one" else 1024
    for y in range(0, side, block):
        for x in range(0, side, block):
            py, px = y + (block - clean.shape[0]) // 2, x + (block - clean.shape[1]) // 2
            lam[py:py + clean.shape[0], px:px + clean.shape[1]] = clean
    frame = np.random.default_rng(1).poisson(lam * 1000 * 0.08**2).astype(np.uint16)
    seg = Segmenter(None, contrast="bright", backend=backend, skip_vacuum=skip_vacuum)
    n = len(seg.segment(frame, 0.08).columns)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        seg.segment(frame, 0.08)
        ts.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"side": side, "s": float(np.median(ts)), "peak_MB": rss, "columns": n, "backend": seg.backend,
                      "particles": (side // block) ** 2, "layout": layout,
                      "mode": "vacuum skipped" if skip_vacuum else "whole frame"}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,2048,4096")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--layouts", default="one,grid")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layout", default="one", help=argparse.SUPPRESS)
    ap.add_argument("--whole-frame", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.repeats, a.backend, a.layout, not a.whole_frame)
    rows = []
    for layout in a.layouts.split(","):
        for whole in (True, False):
            for side in (int(s) for s in a.sizes.split(",")):
                cmd = [sys.executable, __file__, "--worker", str(side), "--repeats", str(a.repeats),
                       "--backend", a.backend, "--layout", layout] + (["--whole-frame"] if whole else [])
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| frame | particles | mode | backend | s/frame | s per Mpx | per Mpx / 1024² whole frame's | "
          "s per particle | peak memory (MB) | columns |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    base = next(r["s"] / (r["side"] ** 2 / 1e6) for r in rows if r["mode"] == "whole frame")
    for r in rows:
        mpx = r["side"] ** 2 / 1e6
        print(f"| {r['side']}² | {r['particles']} | {r['mode']} | {r['backend']} | {r['s']:.2f} | "
              f"{r['s'] / mpx:.3f} | {r['s'] / mpx / base:.2f} | {r['s'] / r['particles']:.2f} | "
              f"{r['peak_MB']:.0f} | {r['columns']} |")


if __name__ == "__main__":
    main()
