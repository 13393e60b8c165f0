"""Training samples per second from the Dataset on one core (optics, noise, labels, crop, flips).

Baseline in the same run: abTEM applying its own CTF to the same exit wave and taking the
intensity (what one sample would cost with abTEM's objects instead of ours).

    .venv/bin/python benchmarks/bench_dataset.py --store DATA.zarr [--crop 256]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from hrtem3d.data.dataset import HrtemDataset

    ds = HrtemDataset(a.store, crop=a.crop, samples_per_epoch=a.n)
    ds[0]
    t = time.perf_counter()
    for i in range(a.n):
        ds[i]
    rate = a.n / (time.perf_counter() - t)

    import abtem

    abtem.config.set({"dask.lazy": False})
    from hrtem3d.data import store

    g = store.structure_groups(store.open_store(a.store))[0]
    wave = g["exit_wave"][0].T.copy()
    rng = np.random.default_rng(0)
    n_ref = max(10, a.n // 10)
    t = time.perf_counter()
    for _ in range(n_ref):
        optics, _ = ds.envelope.sample(rng)
        w = abtem.Waves(wave, energy=300e3, sampling=ds.sampling_A)
        _ = optics.to_abtem().apply(w).intensity().array
    ref = n_ref / (time.perf_counter() - t)
    print("| path | samples/s (1 core) | ratio to baseline |")
    print("| --- | --- | --- |")
    print(f"| abTEM CTF + intensity only (baseline) | {ref:.1f} | 1.00 |")
    print(f"| HrtemDataset, {a.crop}² crop, full sample | {rate:.1f} | {rate / ref:.2f} |")


if __name__ == "__main__":
    main()
