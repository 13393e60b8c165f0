"""`hrtem3d track` throughput on 1024x1024 frames and its peak memory on a long movie.

The movie: a simulated CeO2 particle (the demo's movie, drift included) at 0.08 Å/px, padded
with vacuum to 1024x1024, fresh shot noise at 1000 e/Å² in every frame, stored as a uint16
.npy (memory-mapped by the reader, never loaded whole). Baseline, timed in the same run: one
forward pass of the plain reference U-Net (16-32-64-128, 12 classes) on a 1024x1024 frame.

    .venv/bin/python benchmarks/bench_track.py --frames 48 --workers 1 2     # throughput
    .venv/bin/python benchmarks/bench_track.py --frames 2000 --workers 1    # peak memory on a long movie
    .venv/bin/python benchmarks/bench_track.py --frames 200 --workers 1 --compile   # torch.compile lever

Each run calls the `hrtem3d track` command in a subprocess (figures off) and reads its peak
resident memory from the operating system (the largest of the command and its workers).
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
import torch


def make_movie(path: Path, n_frames: int, side: int = 1024, pixel_A: float = 0.08, dose: float = 1000.0) -> None:
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie

    m = simulate_movie(MovieConfig(pixel_size_A=pixel_A), seed=0)
    clean = m.clean
    pad = (side - clean.shape[1]) // 2
    mov = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n_frames, side, side))
    rng = np.random.default_rng(1)
    for i in range(n_frames):
        k = i % (2 * len(clean) - 2)  # back and forth through the simulated frames: drift stays smooth
        c = clean[k if k < len(clean) else 2 * len(clean) - 2 - k]
        lam = np.full((side, side), float(np.median(c[:8])), np.float32)
        lam[pad:pad + c.shape[0], pad:pad + c.shape[1]] = c
        mov[i] = np.clip(rng.poisson(lam * dose * pixel_A**2), 0, 65535)
    mov.flush()
    del mov


def reference_forward_s(threads: int, repeats: int = 3) -> float:
    from hrtem3d.model.unet import plain_unet_reference

    torch.set_num_threads(threads)
    ref = plain_unet_reference().eval()
    x = torch.randn(1, 1, 1024, 1024)
    ts = []
    with torch.inference_mode():
        ref(x)
        for _ in range(repeats):
            t = time.perf_counter()
            ref(x)
            ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def run_track(movie: Path, out: Path, workers: int, compile: bool = False, stop: int | None = None) -> dict:
    # a fresh wrapper process per run, so the peak memory is this run's alone
    wrap = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = [sys.executable, "-c", wrap, sys.executable, "-m", "hrtem3d.cli", "track", str(movie), "--out", str(out),
           "--pixel-size", "0.08", "--fps", "7.5", "--workers", str(workers), "--no-figures", "--no-progress"]
    cmd += ["--compile"] if compile else []
    cmd += ["--stop", str(stop)] if stop else []
    t = time.perf_counter()
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    peak_mb = int(res.stdout.split()[-1]) / 1024  # kB on Linux: the largest process of the run
    return {"wall": wall, "segment": summary["segment_seconds"], "frames": summary["frames"], "peak_mb": peak_mb,
            "events": summary["events"], "tracks": summary["tracks"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time --workers 1 --compile")
    ap.add_argument("--marginal-from", type=int, default=None,
                    help="also run --workers 1 on the first N frames: the difference of the two runs over the "
                         "difference of their frames is the per-frame cost without start-up and wrap-up")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_track_"))
    movie = tmp / "movie.npy"
    t = time.perf_counter()
    make_movie(movie, a.frames)
    print(f"movie: {a.frames} frames of 1024x1024 uint16 at 0.08 Å/px ({movie.stat().st_size / 2**30:.2f} GiB on "
          f"disk), made in {time.perf_counter() - t:.0f} s")
    rows = []
    for w, comp in [(w, False) for w in a.workers] + ([(1, True)] if a.compile else []):
        before = reference_forward_s(a.threads)  # the reference just before and after each run: the ratio
        r = run_track(movie, tmp / f"out_w{w}{'c' if comp else ''}", w, comp)  # holds on a machine whose
        rows.append((w, comp, r, (before + reference_forward_s(a.threads)) / 2))  # load changes
    if a.marginal_from:
        before = reference_forward_s(a.threads)
        short = run_track(movie, tmp / "out_short", 1, stop=a.marginal_from)
        t_ref_short = (before + reference_forward_s(a.threads)) / 2
    before = reference_forward_s(a.threads)
    t_seg = segment_per_frame_s(movie, a.threads)
    t_ref_seg = (before + reference_forward_s(a.threads)) / 2
    print("| run | frames | segmenting s | frames/s (segmenting) | whole command s | frames/s (whole) | "
          "time per frame / reference forward | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| reference plain U-Net forward, 1024² (baseline; mean of the runs') | 1 | "
          f"{np.mean([x[3] for x in rows]):.3f} | | | | 1.00 | |")
    print(f"| `Segmenter.segment` per frame, same movie, in process (for track / segment) | 12 | {12 * t_seg:.1f} | "
          f"{1 / t_seg:.2f} | | | {t_seg / t_ref_seg:.3f} | |")
    for w, comp, r, t_ref in rows:
        per = r["wall"] / r["frames"]
        name = f"hrtem3d track --workers {w}{' --compile' if comp else ''}"
        print(f"| {name} | {r['frames']} | {r['segment']:.1f} | {r['frames'] / r['segment']:.2f} "
              f"| {r['wall']:.1f} | {r['frames'] / r['wall']:.2f} | {per / t_ref:.3f} | {r['peak_mb']:.0f} |")
        print(f"  ({r['tracks']} tracks, {r['events']} events; track / segment per frame, each against its "
              f"own reference: {(per / t_ref) / (t_seg / t_ref_seg):.2f})", file=sys.stderr)
    if a.marginal_from:
        long = next(r for w, comp, r, _ in rows if w == 1 and not comp)
        t_ref = (next(t for w, comp, _, t in rows if w == 1 and not comp) + t_ref_short) / 2
        n = long["frames"] - short["frames"]
        per_wall, per_seg = (long["wall"] - short["wall"]) / n, (long["segment"] - short["segment"]) / n
        print(f"| hrtem3d track --workers 1, per frame from {short['frames']} to {long['frames']} frames "
              f"(start-up and wrap-up cancel) | {n} | {per_seg * n:.1f} | {1 / per_seg:.2f} | {per_wall * n:.1f} "
              f"| {1 / per_wall:.2f} | {per_wall / t_ref:.3f} | |")
        print(f"  marginal track / segment per frame: {(per_wall / t_ref) / (t_seg / t_ref_seg):.2f}", file=sys.stderr)


def segment_per_frame_s(movie: Path, threads: int, n: int = 12) -> float:
    """Median seconds of `Segmenter.segment` (shipped model, default backend, vacuum skipped) on n frames."""
    from hrtem3d.segmentation.segmenter import Segmenter

    frames = np.load(movie, mmap_mode="r")
    seg = Segmenter(contrast="bright", threads=threads)
    seg.segment(np.asarray(frames[0], np.float32), 0.08)
    ts = []
    for i in range(n):
        t = time.perf_counter()
        seg.segment(np.asarray(frames[i % len(frames)], np.float32), 0.08)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


if __name__ == "__main__":
    main()
