"""Route each image to a static or a vibrating reader by a classifier with its own encoder.

A lattice at rest and a vibrating one (frozen-phonon TDS) need different readings of a thick column, and
the counting network's own features do not tell them apart (eleventh look). This routes every image: a
vibration classifier trained for the question alone (`tds_identifiability.py --out GATE`) looks at the
whole working image (`segment`'s resampling and normalisation, attention pooling over every position),
and the image goes to the static reader (the shipped model) or to the vibrating one (a model trained on
vibrating lattices, or the vibrating reading of a model with lattice heads) by p(vibrating) > threshold.
One gate pass (the encoder alone) and one counting pass per image.

Used by the benchmarks as a model spec, `route=GATE,STATIC,VIBRATING[,THRESHOLD]` (each model a path,
"default", or PATH@READING; the threshold on p(vibrating) 0.5 unless given), e.g.

    python benchmarks/bench_robustness.py --model default \\
        --model route=gate.safetensors,default,benchmarks/candidates/lattice_v1.safetensors@vibrating \\
        --cache /work/data/robust --n-particles 8 --sets clean_0p10,phonons,all

and on its own, for the gate's p(vibrating) per source:

    python benchmarks/lattice_route.py GATE --pairs /work/data/tds_pairs --robust /work/data/robust \\
        --independent ../shared/testdata/independent --test /work/data/test.zarr
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


class VibrationGate:
    """p(vibrating) of one normalised working image, from a `tds_identifiability.py --out` file."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from safetensors import safe_open
        from tds_identifiability import VibrationClassifier, load_classifier

        from hrtem3d.data.normalize import normalizer
        from hrtem3d.model.io import load_model, read_metadata

        with safe_open(str(path), "pt") as f:
            init = f.metadata()["init"]
        if threads:
            torch.set_num_threads(threads)
        unet, _ = load_model(init, "cpu")  # the architecture (its weights are replaced below)
        self.net = load_classifier(VibrationClassifier(unet), path).eval()
        meta = read_metadata(init)
        self.pixel_size_A = float(meta["pixel_size_A"])
        self.normalize = normalizer(meta.get("normalization", "median/MAD"))  # as `Segmenter` reads it

    @torch.inference_mode()
    def __call__(self, work: np.ndarray) -> float:
        ny, nx = (s - s % 16 for s in work.shape)  # the encoder halves four times
        x = torch.from_numpy(np.ascontiguousarray(work[:ny, :nx], np.float32))[None, None]
        return float(torch.sigmoid(self.net(x))[0])

    def p_of(self, image: np.ndarray, pixel_size_A: float) -> float:
        """p(vibrating) of an image as recorded, through `segment`'s resampling and normalisation."""
        from hrtem3d.data.resample import to_working_grid

        work, _ = to_working_grid(np.asarray(image, np.float32), pixel_size_A, self.pixel_size_A)
        return self(self.normalize(work))


class RoutedSegmenter:
    """`Segmenter`'s `segment` and `set_contrast`, routing each image by the gate (see the module doc)."""

    def __init__(self, spec: str, threads: int = 2, threshold: float = 0.5) -> None:
        from bench_robustness import load_segmenter

        gate, static, vibrating, given = parse_route(spec)
        self.gate = VibrationGate(gate, threads)
        self.static = load_segmenter(static, threads)
        self.vibrating = load_segmenter(vibrating, threads)
        self.threshold = threshold if given is None else given
        self.p_vibrating: list[float] = []  # one per image segmented

    @property
    def contrast(self) -> str:
        return self.static.contrast

    def set_contrast(self, contrast: str, gain=None) -> None:
        self.static.set_contrast(contrast, gain)
        self.vibrating.set_contrast(contrast, gain)

    def segment(self, image: np.ndarray, pixel_size_A: float, frame: int = 0, *, gain: float | None = None):
        p = self.gate.p_of(image, pixel_size_A)
        self.p_vibrating.append(p)
        seg = self.vibrating if p > self.threshold else self.static
        return seg.segment(image, pixel_size_A, frame, gain=gain)


def main() -> None:
    import pandas as pd
    import tifffile
    from bench_robustness import set_cases

    from hrtem3d.data.dataset import HrtemDataset
    from hrtem3d.simulate.optics import blur, shot_noise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gate")
    ap.add_argument("--pairs", type=Path, help="bench_tds_pairs cache (static.zarr, tds4.zarr)")
    ap.add_argument("--test", type=Path, help="an in-domain (static) test store")
    ap.add_argument("--robust", type=Path, help="robust_sets cache")
    ap.add_argument("--sets", default="clean_0p10,phonons,background,all,astig,carbon,tilt,mtf_strong,vibration")
    ap.add_argument("--independent", type=Path)
    ap.add_argument("--n", type=int, default=8, help="images per store and dose; particles per set")
    ap.add_argument("--doses", default="300,1000,5000")
    a = ap.parse_args()
    gate = VibrationGate(a.gate, threads=2)
    rows = []

    def add(source: str, dose: float, ps: list[float]) -> None:
        p = np.asarray(ps)
        rows.append({"source": source, "dose": dose, "n": len(p), "mean p(vibrating)": p.mean(),
                     "share > 0.5": (p > 0.5).mean()})

    doses = [float(d) for d in a.doses.split(",")]
    stores = []
    if a.pairs:
        stores += [("pairs static", a.pairs / "static.zarr"), ("pairs TDS x4", a.pairs / "tds4.zarr")]
    if a.test:
        stores.append(("test store (static)", a.test))
    for name, path in stores:
        for dose in doses:
            ds = HrtemDataset(path, crop=256, samples_per_epoch=a.n, seed=99, dose=dose, augment=False)
            n = len(ds.indices)
            ps = []
            for i in range(a.n):
                d = ds.draw(i, i % n)
                # the whole field, as segment sees it (the store's grid is the working grid)
                full = ds.bank.intensity(ds.bank.spectra[i % n], d["optics"])
                lam = np.clip(full, 0, None) * np.float32(d["detector"].dose_e_per_A2 * ds.sampling_A ** 2)
                counts = blur(shot_noise(lam, np.random.default_rng(i)), d["detector"], ds.sampling_A)
                ps.append(gate(gate.normalize(counts)))
            add(name, dose, ps)
    if a.robust:
        for s in a.sets.split(","):
            by: dict = {}
            for case, image, _ in set_cases(a.robust / s, a.n):
                by.setdefault(case["dose_e_per_A2"], []).append(gate.p_of(image, case["pixel_size_angstrom"]))
            for dose, ps in sorted(by.items()):
                add(f"robust {s}", dose, ps)
    if a.independent:
        import json

        meta = json.loads((a.independent / "meta.json").read_text())
        px = float(meta["pixel_size_angstrom"])
        by = {}
        for case in meta["cases"]:
            img = tifffile.imread(a.independent / case["image"]).astype(np.float32)
            by.setdefault(case["dose_e_per_A2"], []).append(gate.p_of(img, px))
        for dose, ps in sorted(by.items()):
            add("independent", dose, ps)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
