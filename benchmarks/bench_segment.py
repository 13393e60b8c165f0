"""`segment` end to end on a 1024x1024 frame at 0.08 Å/px, per inference backend, against one forward pass
of the plain reference U-Net (16-32-64-128, two 3x3 conv+BN+ReLU per level, 12 classes) on the same frame.

The frame: the demo movie's simulated CeO2 particle (0.08 Å/px) padded with vacuum to 1024², Poisson noise
at 1000 e/Å², uint16 TIFF. End to end = read the TIFF, normalise, resample to the model's pixel size,
network, column table (the per-pixel maps on the input grid are made only when written; figures and
file writing excluded). Every backend runs as `segment` does (vacuum skipped, `segmentation.vacuum`), and
the first one also on the whole frame (`--whole-frame`) and at each `--margin` (working pixels of
context around the particle). Runs alternate within each round, the reference among them, so the ratios
hold on a loaded machine. Prints a markdown table.

    .venv/bin/python benchmarks/bench_segment.py [--backend onnx --backend torch --backend int8] [--rounds 5] \
        [--margin 96]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backend", action="append", default=None)
    ap.add_argument("--margin", action="append", type=int, default=[], help="extra vacuum margins (pixels)")
    ap.add_argument("--lattice", action="append", default=[],
                    help="also time the first backend with this reading of the shipped pair (auto: the gate's pass "
                         "included)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from bench_track import make_movie

    from hrtem3d.io import open_image
    from hrtem3d.model.unet import count_flops, count_parameters, plain_unet_reference
    from hrtem3d.segmentation.segmenter import Segmenter

    tmp = Path(tempfile.mkdtemp())
    make_movie(tmp / "movie.npy", 1)
    path = tmp / "frame.tif"
    tifffile.imwrite(path, np.load(tmp / "movie.npy")[0])

    ref = plain_unet_reference().eval()
    x = torch.from_numpy(tifffile.imread(path).astype(np.float32))[None, None]
    backends = a.backend or ["torch", "onnx", "int8"]
    segs = {b: Segmenter(a.model, contrast="bright", backend=b, threads=a.threads) for b in backends}
    first = backends[0]
    segs[f"{first}, whole frame"] = Segmenter(a.model, contrast="bright", backend=first, threads=a.threads,
                                              skip_vacuum=False)
    for r in a.lattice:
        segs[f"{first}, lattice {r}"] = Segmenter(a.model, contrast="bright", backend=first, threads=a.threads,
                                                  lattice=r)
    for m in a.margin:
        segs[f"{first}, margin {m} px"] = Segmenter(a.model, contrast="bright", backend=first, threads=a.threads,
                                                    vacuum_margin=m)

    def end_to_end(seg):
        src = open_image(path, pixel_size_A=0.08)
        img = next(src.frames())[1][0]
        return seg.segment(img, src.pixel_size_A)

    jobs = {"reference": lambda: ref(x)} | {b: (lambda s=s: end_to_end(s)) for b, s in segs.items()}
    n_cols = {b: len(end_to_end(s).columns) for b, s in segs.items()}  # warm-up (int8 calibrates here)
    with torch.inference_mode():
        ref(x)
        times = {k: [] for k in jobs}
        for _ in range(a.rounds):
            for k, fn in jobs.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    t_ref = np.array(times["reference"])
    seg = next(iter(segs.values()))
    n = int(round(1024 * 0.08 / seg.pixel_size_A))
    print(f"model: {a.model or 'shipped default'}; {n}² working frame; {count_parameters(seg.model):,} parameters, "
          f"{count_flops(seg.model, (1, 1, n, n)) / 1e9:.2f} GFLOP; reference {count_parameters(ref):,} parameters, "
          f"{count_flops(ref, (1, 1, 1024, 1024)) / 1e9:.2f} GFLOP; {a.rounds} rounds, {a.threads} threads")
    print("| run | seconds (median) | ratio to reference forward (median of rounds) | frames/s | columns |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| reference plain U-Net forward, 1024² (baseline) | {np.median(t_ref):.3f} | 1.00 | "
          f"{1 / np.median(t_ref):.1f} | |")
    for b in segs:
        t = np.array(times[b])
        what = f"backend {b}" if b in backends else b
        if b in backends and segs[b].skip_vacuum:
            what += f" (vacuum skipped, margin {segs[b].vacuum_margin} px)"
        print(f"| segment end to end, {what} | {np.median(t):.3f} | {np.median(t / t_ref):.3f} | "
              f"{1 / np.median(t):.1f} | {n_cols[b]} |")


if __name__ == "__main__":
    main()
