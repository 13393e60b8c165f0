"""Route each image to a static or a vibrating reader by a classifier with its own encoder.

A lattice at rest and a vibrating one (frozen-phonon TDS) need different readings of a thick column, and
the counting network's own features do not tell them apart (eleventh look). This routes every image: a
vibration classifier trained for the question alone (`tds_identifiability.py --out GATE`) looks at the
whole working image (`segment`'s resampling and normalisation, attention pooling over every position),
and the image goes to the static reader (the shipped model) or to the vibrating one (a model trained on
vibrating lattices, or the vibrating reading of a model with lattice heads) by p(vibrating) > threshold.
One gate pass (the encoder alone) and one counting pass per image.

The shipped pair is this router with the shipped gate (`segment --lattice auto`, `hrtem3d.segmentation.route`);
here any gate and readers can be combined, as a benchmark model spec `route=GATE,STATIC,VIBRATING[,THRESHOLD]`
(each model a path, "default", or PATH@READING; the threshold on p(vibrating) the gate file's unless given), e.g.

    python benchmarks/bench_robustness.py --model default \\
        --model route=gate.safetensors,default,benchmarks/candidates/lattice_v1.safetensors@vibrating \\
        --cache /work/data/robust --n-particles 8 --sets clean_0p10,phonons,all

and on its own, for the gate's p(vibrating) per source:

    python benchmarks/lattice_route.py GATE --pairs /work/data/tds_pairs --robust /work/data/robust \\
        --independent ../shared/testdata/independent --test /work/data/test.zarr

or to set the gate's threshold from static training images (a high percentile of its p(vibrating) there; no
test set is looked at):

    python benchmarks/lattice_route.py GATE --set-threshold /work/data/train300.zarr --save GATE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

PREFIX = "route="


def is_route(spec: str) -> bool:
    """Whether a benchmark model spec names a routed pair."""
    return spec.startswith(PREFIX)


def parse_route(spec: str) -> tuple[str, str, str, float | None]:
    """`route=GATE,STATIC,VIBRATING[,THRESHOLD]` into its gate, its two readers and its threshold (None if
    not given)."""
    gate, static, vibrating, *rest = spec[len(PREFIX):].split(",")
    return gate, static, vibrating, float(rest[0]) if rest else None


class RoutedSegmenter:
    """`Segmenter`'s `segment` and `set_contrast`, routing each image by the gate (see the module doc)."""

    def __init__(self, spec: str, threads: int = 2) -> None:
        from bench_robustness import load_segmenter

        from hrtem3d.segmentation.route import LatticeRoute

        gate, static, vibrating, given = parse_route(spec)
        if threads:
            torch.set_num_threads(threads)
        self.gate = LatticeRoute.from_file(gate)
        self.static = load_segmenter(static, threads)
        self.vibrating = load_segmenter(vibrating, threads)
        self.threshold = self.gate.threshold if given is None else given
        self.p_vibrating: list[float] = []  # one per image segmented

    @property
    def contrast(self) -> str:
        return self.static.contrast

    def set_contrast(self, contrast: str, gain=None) -> None:
        self.static.set_contrast(contrast, gain)
        self.vibrating.set_contrast(contrast, gain)

    def segment(self, image: np.ndarray, pixel_size_A: float, frame: int = 0, *, gain: float | None = None):
        p = self.gate.p_vibrating(image, pixel_size_A)
        self.p_vibrating.append(p)
        seg = self.vibrating if p > self.threshold else self.static
        return seg.segment(image, pixel_size_A, frame, gain=gain)


def store_fields(path: Path, dose: float, n: int, first: int = 0):
    """`n` whole fields of a store at `dose` e/Å² as `segment` sees them (the store's grid is the working
    grid): noisy counts with the detector's MTF, one draw of the store's optics each, cycling over its
    structures from the `first`-th."""
    from hrtem3d.data import store
    from hrtem3d.data.dataset import HrtemDataset
    from hrtem3d.simulate.optics import blur, shot_noise

    indices = sorted(store.completed(store.open_store(path)))[first:] if first else None
    ds = HrtemDataset(path, indices, crop=256, samples_per_epoch=n, seed=99, dose=dose, augment=False)
    m = len(ds.indices)
    for i in range(n):
        d = ds.draw(i, i % m)
        full = ds.bank.intensity(ds.bank.spectra[i % m], d["optics"])
        lam = np.clip(full, 0, None) * np.float32(d["detector"].dose_e_per_A2 * ds.sampling_A ** 2)
        yield blur(shot_noise(lam, np.random.default_rng(i)), d["detector"], ds.sampling_A), ds.sampling_A


def add_source_args(ap: argparse.ArgumentParser, *, sets: str, n: int) -> None:
    """The image sources a gate is read on (`lattice_route.py`, `lattice_gate.py`): paired stores, an in-domain
    store, robustness sets and the independent set."""
    ap.add_argument("--pairs", type=Path, help="bench_tds_pairs cache (static.zarr, tds4.zarr)")
    ap.add_argument("--test", type=Path, help="an in-domain (static) test store")
    ap.add_argument("--robust", type=Path, help="robust_sets cache")
    ap.add_argument("--sets", default=sets)
    ap.add_argument("--independent", type=Path, help="folder of the independent set")
    ap.add_argument("--n", type=int, default=n, help="images per store and dose; particles per set")


def shifted_images(a: argparse.Namespace):
    """`(source, dose, image, pixel size)` of the robustness sets `a.sets` (`a.n` particles each) in `a.robust`
    and of the independent set `a.independent`, as recorded."""
    import json

    import tifffile
    from bench_robustness import set_cases

    for s in a.sets.split(",") if a.robust else []:
        for case, image, _ in set_cases(a.robust / s, a.n):
            yield f"robust {s}", case["dose_e_per_A2"], image, case["pixel_size_angstrom"]
    if a.independent:
        meta = json.loads((a.independent / "meta.json").read_text())
        for case in meta["cases"]:
            image = tifffile.imread(a.independent / case["image"]).astype(np.float32)
            yield "independent", case["dose_e_per_A2"], image, float(meta["pixel_size_angstrom"])


def p_by_source(a: argparse.Namespace, p_of) -> list[tuple[str, float, list[float]]]:
    """`p_of(image, pixel size)` of every image of `shifted_images(a)`, grouped `(source, dose, [p, ...])`: the
    sources in their order, the doses ascending within each."""
    by: dict = {}
    for source, dose, image, px in shifted_images(a):
        by.setdefault(source, {}).setdefault(dose, []).append(p_of(image, px))
    return [(source, dose, ps) for source, doses in by.items() for dose, ps in sorted(doses.items())]


def main() -> None:
    import pandas as pd

    from hrtem3d.model.gate import load_gate, save_gate
    from hrtem3d.segmentation.route import LatticeRoute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gate", type=Path, help="a gate file (`tds_identifiability.py --out`)")
    add_source_args(ap, sets="clean_0p10,phonons,background,all,astig,carbon,tilt,mtf_strong,vibration", n=8)
    ap.add_argument("--doses", default="300,1000,5000")
    ap.add_argument("--set-threshold", type=Path, metavar="STORE",
                    help="a static training store: the gate's threshold becomes the --percentile of its p(vibrating) "
                         "over --n-threshold whole fields a dose, written with --save")
    ap.add_argument("--percentile", type=float, default=98.0)
    ap.add_argument("--n-threshold", type=int, default=60)
    ap.add_argument("--first-structure", type=int, default=0,
                    help="--set-threshold from the store's structures from this one on (those the gate never saw)")
    ap.add_argument("--save", type=Path, help="where --set-threshold writes the gate file")
    a = ap.parse_args()
    torch.set_num_threads(2)
    route = LatticeRoute.from_file(a.gate)
    doses = [float(d) for d in a.doses.split(",")]
    if a.set_threshold:
        ps = [route.p_vibrating(img, px) for dose in doses
              for img, px in store_fields(a.set_threshold, dose, a.n_threshold, a.first_structure)]
        t = round(float(np.percentile(ps, a.percentile)), 2)
        print(f"p(vibrating) on {len(ps)} fields of {a.set_threshold}: median {np.median(ps):.3f}, "
              f"{a.percentile:g}th percentile {t:.2f}")
        if a.save:
            gate, meta = load_gate(a.gate)
            save_gate(a.save, gate, {**meta, "threshold": t, "threshold_source":
                                     f"{a.percentile:g}th percentile of p(vibrating) on {len(ps)} whole fields of "
                                     f"{a.set_threshold.name} (structures {a.first_structure} on) at {a.doses} e/Å²"})
            print(f"wrote {a.save} (threshold {t:.2f})")
        return
    rows = []

    def add(source: str, dose: float, ps: list[float]) -> None:
        p = np.asarray(ps)
        rows.append({"source": source, "dose": dose, "n": len(p), "mean p(vibrating)": p.mean(),
                     f"share > {route.threshold:g}": (p > route.threshold).mean()})

    stores = []
    if a.pairs:
        stores += [("pairs static", a.pairs / "static.zarr"), ("pairs TDS x4", a.pairs / "tds4.zarr")]
    if a.test:
        stores.append(("test store (static)", a.test))
    for name, path in stores:
        for dose in doses:
            add(name, dose, [route.p_vibrating(img, px) for img, px in store_fields(path, dose, a.n)])
    for source, dose, ps in p_by_source(a, route.p_vibrating):
        add(source, dose, ps)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
