"""Exit waves per second on this machine: the whole path (structure, potential, multislice, crop).

Baseline in the same run: abTEM alone on a 512x512 grid at 0.1 Å (plane wave through the
same kind of particle), the figure quoted for these machines (about 0.3 s).

    .venv/bin/python benchmarks/bench_simulate.py [--n 8]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def abtem_baseline(n: int) -> float:
    import abtem

    from hrtem3d.structure import random_particle

    abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False})
    times = []
    for i in range(n + 1):
        atoms, _ = random_particle(np.random.default_rng(100 + i))
        t = time.perf_counter()
        pot = abtem.Potential(atoms, gpts=(512, 512), slice_thickness=1.913, parametrization="lobato",
                              projection="infinite")
        abtem.PlaneWave(energy=300e3).multislice(pot)
        if i:  # first call plans FFTs and compiles
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def ours(n: int, workers: int, sampling: float) -> tuple[float, float]:
    """Structures per second; with workers, on a running local cluster (start-up not counted)."""
    from dask.distributed import LocalCluster

    from hrtem3d.data.generate import SimulationSettings, simulate_dataset

    tmp = Path(tempfile.mkdtemp())
    s = SimulationSettings(seed=11)
    s.multislice.potential_sampling_A = sampling
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) if workers else None
    addr = cluster.scheduler_address if cluster else None
    try:
        # warm-up run (imports, FFT planning in every worker) is not counted
        simulate_dataset(tmp / "warm.zarr", 2 * max(1, workers), s, workers=0, scheduler=addr, progress=False)
        t = time.perf_counter()
        simulate_dataset(tmp / "run.zarr", n, s, workers=0, scheduler=addr, progress=False)
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp)
        if cluster:
            cluster.close()
    return n / wall, wall / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args()
    base = abtem_baseline(max(3, a.n // 2))
    rows = [("abTEM alone, 512² at 0.1 Å (baseline)", 1, 1 / base, base)]
    for sampling in (0.1, 0.05):
        for workers in (0, 1, 2):
            rate, per = ours(a.n, workers, sampling)
            label = f"hrtem3d simulate, {sampling} Å potential ({int(round(51.2 / sampling))}²)"
            label += " in-process" if workers == 0 else " on a dask LocalCluster"
            rows.append((label, max(1, workers), rate, per))
    print("| path | workers | exit waves/s | s per structure | time / baseline |")
    print("| --- | --- | --- | --- | --- |")
    for label, w, rate, per in rows:
        print(f"| {label} | {w} | {rate:.2f} | {per:.2f} | {per / base:.2f} |")


if __name__ == "__main__":
    main()
