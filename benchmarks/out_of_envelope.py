"""Out-of-envelope warning and lattice pixel size: a table of cases the model should and should not trust.

Builds small cases with the project's simulator (CeO2 [110] inside the training envelope; CeO2 in [100]
and [111]; a gold particle in [110]; a bare amorphous carbon film; the in-domain images with a pixel
size stated 10 % and 20 % off), reads the HAADF-STEM images of ../shared/testdata/microscope and the
noisy images of ../shared/testdata/independent, and prints per case: the envelope verdict, the lattice
pixel size near the stated one and with `--pixel-size lattice` (no prior), and, with --segment, the
shipped model's column count and mean confidence before the cap, and the verdict once the columns found
are known (`warned_after`: `envelope_check.reconsider`, lattice and counts, what `hrtem3d segment` reports).

    PYTHONPATH=src .venv/bin/python benchmarks/out_of_envelope.py [--n 6] [--segment] [--out oee.csv]
"""

from __future__ import annotations

import argparse
import glob
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "testdata"
if not SHARED.exists():
    SHARED = Path("/work/shared/testdata")
GOLD = dict(name="Au", a_A=4.08, structure="fcc", cation="Au", anion=None, bond_A=3.0,
            min_cations_per_anion=0, min_anions_per_cation=0)


def simulated(material, n: int, seed: int, sampling_A: float = 0.1, gpts: int = 320):
    """`n` noisy images `(image, pixel size, dose)` of random particles of `material`, optics from the envelope."""
    from hrtem3d.simulate import MultisliceConfig, OpticsEnvelope, detect, exit_wave, image_intensity
    from hrtem3d.structure import ParticleEnvelope, random_particle

    ms = MultisliceConfig(potential_sampling_A=0.08, store_sampling_A=sampling_A, store_gpts=gpts)
    env = OpticsEnvelope()
    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        atoms, p = random_particle(rng, ParticleEnvelope(diameter_A=(18.0, 26.0)), material, (ms.cell_A, ms.cell_A))
        wave = exit_wave(atoms, ms, seed=p.seed)
        optics, det = env.sample(rng, dose=float(rng.choice([300.0, 1000.0, 5000.0])))
        out.append((detect(image_intensity(wave, optics, sampling_A), det, sampling_A, rng), sampling_A,
                    det.dose_e_per_A2))
    return out


def film_images(n: int, seed: int, sampling_A: float = 0.1, gpts: int = 320):
    from hrtem3d.simulate import MultisliceConfig, OpticsEnvelope, detect, image_intensity
    from hrtem3d.simulate.film import carbon_film_bank

    ms = MultisliceConfig(potential_sampling_A=0.08, store_sampling_A=sampling_A, store_gpts=gpts)
    waves = carbon_film_bank(n, ms, seed=seed, thickness_A=30.0)
    out = []
    for k in range(n):
        rng = np.random.default_rng([seed, k, 9])
        optics, det = OpticsEnvelope().sample(rng, dose=1000.0)
        out.append((detect(image_intensity(waves[k], optics, sampling_A), det, sampling_A, rng), sampling_A, 1000.0))
    return out


def cases(n: int) -> dict:
    from hrtem3d.io import open_image
    from hrtem3d.structure.material import CERIA, Material

    c = {}
    dom = simulated(CERIA, n, 1)
    c["CeO2 [110] in-domain"] = dom
    c["CeO2 [110], pixel size stated 10 % large"] = [(im, p * 1.1, d) for im, p, d in dom]
    c["CeO2 [110], pixel size stated 20 % large"] = [(im, p * 1.2, d) for im, p, d in dom]
    c["CeO2 [110], pixel size stated 20 % small"] = [(im, p / 1.2, d) for im, p, d in dom]
    c["CeO2 [100]"] = simulated(replace(CERIA, zone_axis=(1, 0, 0), in_plane_x=(0, 1, 0)), n, 2)
    c["CeO2 [111]"] = simulated(replace(CERIA, zone_axis=(1, 1, 1), in_plane_x=(1, -1, 0)), n, 3)
    c["gold [110]"] = simulated(Material(**GOLD), n, 4)
    c["carbon film, no particle"] = film_images(n, 5)
    stem = []
    for f, px in [("dm/test_STEM_image.dm3", None), ("dm/test_STEM_image.dm3", 0.1)]:
        src = open_image(SHARED / "microscope" / f, pixel_size_A=px)
        stem.append((next(iter(src.frames()))[1][0].astype(np.float32), src.pixel_size_A, float("nan")))
    c["HAADF-STEM (microscope, file / 0.1 Å)"] = stem
    import tifffile

    for dose in (300, 1000, 5000):
        files = sorted(glob.glob(str(SHARED / "independent" / f"p*_dose{dose}.tif")))
        c[f"independent, {dose} e/Å²"] = [(tifffile.imread(f).astype(np.float32), 0.1, dose) for f in files]
    return c


def main() -> None:
    from hrtem3d.segmentation.envelope_check import check_envelope, reconsider
    from hrtem3d.segmentation.lattice import check_pixel_size, measure_lattice

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="simulated images per case")
    ap.add_argument("--segment", action="store_true", help="also segment with the shipped model")
    ap.add_argument("--out", type=Path, default=None, help="CSV of every image")
    ap.add_argument("--lattice", default=None, help="the shipped pair's reading (static, vibrating, auto; default: "
                                                    "`hrtem3d segment`'s)")
    a = ap.parse_args()
    seg = None
    if a.segment:
        from hrtem3d.segmentation.segmenter import Segmenter

        seg = Segmenter(contrast="bright", lattice=a.lattice)  # `hrtem3d segment`'s default
    rows = []
    t0 = time.time()
    for name, imgs in cases(a.n).items():
        for k, (im, px, dose) in enumerate(imgs):
            lat = check_pixel_size(im, px)
            env = check_envelope(im, px, lattice=lat)
            free = measure_lattice(im)
            r = {"case": name, "image": k, "dose": dose, "stated_A": px, "warned": not env.in_envelope,
                 "calibration_warned": lat.disagrees, "lattice_A": free.pixel_size_A if free.found else np.nan,
                 "lattice_spots": free.n_reflections, "near_spots": lat.fit.n_reflections,
                 "near_residual": lat.fit.residual,
                 "reasons": "; ".join(env.reasons)}
            if seg is not None and 0.005 <= px <= 2.0:
                s = seg.segment(im, px)
                r.update(columns=len(s.columns), mean_conf=float(s.columns.confidence.mean()) if len(s.columns)
                         else np.nan, warned_after=not reconsider(env, s.columns).in_envelope)
            rows.append(r)
    df = pd.DataFrame(rows)
    if a.out:
        df.to_csv(a.out, index=False)
    agg = {"images": ("image", "size"), "warned": ("warned", "mean"), "calibration_warned": ("calibration_warned",
                                                                                          "mean"),
           "lattice_A_median": ("lattice_A", "median")}
    if seg is not None:
        agg.update(warned_after=("warned_after", "mean"), columns=("columns", "mean"),
                   mean_conf=("mean_conf", "mean"))
    table = df.groupby("case", sort=False).agg(**agg)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
