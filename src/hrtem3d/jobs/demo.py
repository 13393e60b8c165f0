"""The built-in example behind `hrtem3d demo`: simulate, image and label one particle."""

from __future__ import annotations

import shutil
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
    from hrtem3d.evaluate.metrics import match_columns
    from hrtem3d.segmentation.segmenter import Segmenter
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


def movie_demo(out: str | Path, seed: int = 0, progress: bool = True) -> dict:
    """Simulate a 24-frame in-situ movie with three known events, run `track`, compare with the truth.

    Writes `out/movie/` (movie.tif and the true columns and events), `out/track/` (everything
    `hrtem3d track` writes) and `out/report.md`. Returns a summary dict.
    """
    import pandas as pd

    from hrtem3d.evaluate.metrics import movie_depth_accuracy
    from hrtem3d.jobs.track_movie import TrackSettings, track_movie
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie, write_movie
    from hrtem3d.tracking.events import match_events

    out = Path(out)
    cfg = MovieConfig()
    m = simulate_movie(cfg, seed=seed, progress=progress)
    files = write_movie(m, out / "movie")
    # the demo's own track folder starts afresh: a finished run of another seed or model would be refused
    shutil.rmtree(out / "track", ignore_errors=True)
    r = track_movie(files["movie"], out / "track", TrackSettings(), progress=progress)
    events = pd.read_csv(out / "track" / "events.csv")
    truth, found = match_events(events, m.events, m.pixel_size_A)
    acc = movie_depth_accuracy(pd.read_parquet(out / "track" / "columns.parquet"), m.truth)
    n_found, n_false = int((truth.found_row >= 0).sum()), int((found.truth_row < 0).sum())
    states = " → ".join(dict.fromkeys(m.info.get("formula", [])))
    lines = [f"# hrtem3d demo: a simulated in-situ movie (seed {seed})", "",
             f"{cfg.n_frames} frames of {m.frames.shape[2]}x{m.frames.shape[1]} pixels at {m.pixel_size_A:.3f} Å, "
             f"{cfg.dose_e_per_A2:g} e/Å² per frame, {1 / cfg.frame_interval_s:.1f} frames/s, drift "
             f"{np.hypot(*m.drift_A[-1]):.2f} Å in all; structure {states}", "",
             f"**{n_found} of {len(truth)} true column changes found** (within 2 frames and 0.7 Å), "
             f"**{n_false} false event(s)**; target: all found, at most one false.", "",
             "## True changes", "", _table(truth[["frame", "kind", "species", "n_before", "n_after", "found_row",
                                                   "d_frames", "d_A", "found_kind", "same_counts"]]), "",
             "## Events found by `hrtem3d track`", "",
             _table(found[["frame", "kind", "species", "n_before", "n_after", "confidence", "truth_row"]]), "",
             "## Depth of every true column in every frame: fraction right", "", _table(acc.reset_index()), "",
             f"{r['tracks']} tracked columns, {r['columns_per_frame']:.0f} per frame; segmenting took "
             f"{r['segment_seconds']:.1f} s. Figures: {', '.join(Path(f).name for f in r.get('figures', []))}."]
    report = atomic_write(out / "report.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    return {"found": n_found, "true_changes": len(truth), "false_events": n_false, "report": str(report),
            "ce_single_frame": float(acc.loc["Ce", "single_frame"]), "ce_denoised": float(acc.loc["Ce", "denoised"]),
            "files_movie": [str(report), *r.get("figures", []), str(out / "track" / "events.csv")]}


def _table(df) -> str:
    """A DataFrame as a markdown table (no extra dependency)."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) if body else head + "\n" + rule
