"""What a lattice-heads model's gate says: mean p(vibrating) per image source and dose.

A model with lattice heads (`hrtem3d train --lattice-heads`) mixes its static and vibrating readings by an
image-level gate. This prints, for each source, the gate's mean p(vibrating) over whole images (run through
`segment`'s own resampling and normalisation) and the share above 0.5: the pairs benchmark's static and TDS
stores (`bench_tds_pairs.py`'s cache), an in-domain test store, robustness sets (`robust_sets.py`'s cache)
and the independent images.

    python benchmarks/lattice_gate.py --model lh1.safetensors --pairs /work/data/tds_pairs \\
        --test /work/data/test.zarr --robust /work/data/robust --independent ../shared/testdata/independent
    # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gate(net, work: np.ndarray) -> float:
    """p(vibrating) of the gate on one normalised working image."""
    x = torch.from_numpy(np.ascontiguousarray(work, np.float32))[None, None]
    with torch.inference_mode():
        return float(torch.sigmoid(net(x, hypotheses=True)[2])[0])


def main() -> None:
    from lattice_route import add_source_args, p_by_source

    from hrtem3d.data import store
    from hrtem3d.data.dataset import HrtemDataset
    from hrtem3d.segmentation.segmenter import Segmenter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model file with lattice heads")
    add_source_args(ap, sets="clean_0p10,phonons,background,all,tilt", n=16)
    a = ap.parse_args()
    seg = Segmenter(a.model, contrast="bright", threads=2, lattice="auto")
    if not seg.lattice_heads:
        raise SystemExit(f"{a.model} has no lattice heads")
    net = seg.model
    rows = []
    stores = []
    if a.pairs:
        stores += [("pairs, static", a.pairs / "static.zarr"), ("pairs, TDS x4", a.pairs / "tds4.zarr")]
    if a.test:
        stores.append((a.test.name, a.test))
    for name, path in stores:
        n = int(store.settings_of(store.open_store(path))["multislice"]["store_gpts"])
        for dose in (300.0, 1000.0, 5000.0):
            ds = HrtemDataset(path, crop=n, dose=dose, seed=7, augment=False, samples_per_epoch=a.n)
            ps = [gate(net, seg.segment(ds.draw(i, structure=i)["counts"], ds.sampling_A).working_image)
                  for i in range(min(a.n, len(ds.indices)))]
            rows.append((name, dose, ps))
    rows += p_by_source(a, lambda image, px: gate(net, seg.segment(image, px).working_image))
    print("| images | dose (e/Å²) | n | mean p(vibrating) | share > 0.5 |\n| --- | --- | --- | --- | --- |")
    for name, dose, ps in rows:
        print(f"| {name} | {dose:.0f} | {len(ps)} | {np.mean(ps):.2f} | {np.mean(np.array(ps) > 0.5):.2f} |")


if __name__ == "__main__":
    main()
