"""The built-in example behind `hrtem3d demo`: simulate, image and label one particle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrtem3d.fsutil import atomic_write, save_figure
from hrtem3d.labels import DEFAULT_SCHEME, make_targets
from hrtem3d.simulate import Detector, MultisliceConfig, Optics, detect, exit_wave, image_intensity
from hrtem3d.structure import ParticleEnvelope, column_table, random_particle
from hrtem3d.viz.data_figures import training_sample_figure


def data_demo(out: str | Path, seed: int = 7, doses: tuple[float, ...] = (300.0, 3000.0)) -> dict:
    """Simulate one CeO2 particle in [110], image it at two doses, write figure and ground truth.

    Writes `out/data_figure.png` (clean, noisy, target) and `out/ground_truth_columns.csv`.
    Returns a summary dict (atoms, columns, files).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ms = MultisliceConfig()
    rng = np.random.default_rng(seed)
    atoms, params = random_particle(rng, ParticleEnvelope(diameter_A=(30, 34), flat_bottom_prob=1.0,
                                                          tilt_deg=0.5), cell_A=(ms.cell_A, ms.cell_A))
    cols = column_table(atoms)
    wave = exit_wave(atoms, ms, seed=params.seed)
    optics = Optics(c1_A=60.0, c3_A=-1.0e5, c5_A=5e6, focal_spread_A=30.0, aperture_mrad=25.0)
    clean = image_intensity(wave, optics, ms.store_sampling_A)
    noisy = [detect(clean, Detector(dose_e_per_A2=d, mtf_half=1.0), ms.store_sampling_A, rng) for d in doses]
    cls, alpha = make_targets(cols, clean.shape, ms.store_sampling_A, DEFAULT_SCHEME)
    fig = training_sample_figure(clean, noisy, list(doses), cls, alpha, DEFAULT_SCHEME, ms.store_sampling_A,
                                 title=f"CeO2 [110], {atoms.get_chemical_formula()}, 300 kV, "
                                       f"C1 {optics.c1_A / 10:g} nm, C3 {optics.c3_A / 1e4:g} µm")
    figure = save_figure(fig, out / "data_figure.png")
    table = cols.assign(x_px=cols.x_A / ms.store_sampling_A, y_px=cols.y_A / ms.store_sampling_A)
    csv = atomic_write(out / "ground_truth_columns.csv", lambda p: table.to_csv(p, index=False))
    summary = {"atoms": len(atoms), "formula": atoms.get_chemical_formula(), "columns": len(cols),
               "max_depth": int(cols.n_atoms.max()), "files": [str(figure), str(csv)]}
    if model_available():
        summary.update(network_demo(out, clean, noisy[0], doses[0], cls, alpha, table, ms.store_sampling_A))
    return summary


def model_available() -> bool:
    from hrtem3d.model.io import default_model_path

    return default_model_path().exists()


def network_demo(out: Path, clean, noisy, dose, cls, alpha, truth, sampling_A: float) -> dict:
    """Segment the noisy image with the shipped model; figure and accuracy against the truth."""
    from hrtem3d.analyze.evaluate import match_columns
    from hrtem3d.analyze.segment import Segmenter
    from hrtem3d.viz.data_figures import network_figure

    seg = Segmenter(contrast="bright")
    s = seg.segment(noisy, sampling_A)
    fig = network_figure(clean, noisy, cls, alpha, s.labels, s.confidence, DEFAULT_SCHEME, sampling_A, dose,
                         title="shipped model on a simulated particle it has never seen")
    figure = save_figure(fig, out / "network_figure.png")
    csv = atomic_write(out / "columns.csv", lambda p: s.columns.to_csv(p, index=False, float_format="%.4f"))
    m = match_columns(truth, s.columns)
    ce = m[m.species == "Ce"]
    exact = float(((ce.pred_row >= 0) & (ce.pred_n == ce.n_atoms) & (ce.pred_species == "Ce")).mean())
    return {"files_network": [str(figure), str(csv)], "ce_exact": exact, "recall": float((m.pred_row >= 0).mean()),
            "detected": len(s.columns)}
