"""hrtem3d from Python: open a microscope file, segment it, track a movie held in memory, export 3D.

Run:  python examples/quickstart.py [--out FOLDER]

Nothing is written unless --out is given (then the figures and the 3D model go there). About half
a minute on a laptop CPU: one simulated particle, one 16-frame simulated movie, the shipped model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import hrtem3d

# a real file from the developer test set (a 64 x 64 TEM acquisition, FEI TIA .emi + .ser)
REAL_FILE = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata" / "microscope" / "tia" / \
    "64x64_TEM_images_acquire.emi"


def depth_plot(ax, image: np.ndarray, columns, title: str) -> None:
    """The image in grey and the columns coloured by atoms in the column."""
    ax.imshow(image, cmap="gray")
    sc = ax.scatter(columns.x_px, columns.y_px, c=columns.n_atoms, cmap="viridis", vmin=1, vmax=12, s=14)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return sc


def main(out: Path | None = None) -> dict:
    model = hrtem3d.load_model()  # the shipped model, loaded once

    # 1. a real file: opened lazily with its calibration; its pixels are far coarser than atomic
    #    resolution (nm per pixel), so it is segmented as if sampled at the model's 0.16 Å, to show the call
    src = hrtem3d.open_image(REAL_FILE)
    print(f"{REAL_FILE.name}: {src.description}; {src.pixel_size_A:.3g} Å/pixel, {src.n_frames} frame(s)")
    real = hrtem3d.segment(src, pixel_size_A=model.pixel_size_A, model=model)
    print(f"  {len(real)} column-like features (not an HRTEM image: no atomic columns to expect)")

    # 2. a simulated CeO2 [110] particle with ground truth: segment, compare, plot columns by depth
    p = hrtem3d.simulate_particle(seed=1)
    cols = hrtem3d.segment(p.image, p.pixel_size_A, model)
    from hrtem3d.evaluate.metrics import match_columns

    m = match_columns(p.truth, cols)
    recall = float((m.pred_row >= 0).mean())
    exact = float(((m.pred_row >= 0) & (m.pred_n == m.n_atoms)).mean())
    print(f"simulated particle: {len(cols)} columns found, {recall:.0%} of the true ones, "
          f"{exact:.0%} with the right atom count")

    # 3. a movie held in memory: segment frame by frame, track, denoise depths in time, find events
    from hrtem3d.simulate.movie import MovieConfig, MultisliceConfig, simulate_movie

    cfg = MovieConfig(n_frames=16, event_frames=(4, 8, 12), diameter_A=(16.0, 19.0),
                      multislice=MultisliceConfig(potential_sampling_A=0.08, store_gpts=224))
    movie = simulate_movie(cfg, seed=1)
    mc = hrtem3d.segment_movie(movie.frames, movie.pixel_size_A, model, frame_interval_s=movie.frame_interval_s)
    result = hrtem3d.track(mc)
    from hrtem3d.tracking.events import match_events

    truth, found = match_events(result.events, movie.events, movie.pixel_size_A)
    print(f"movie: {len(mc.frames)} frames, {len(result.tracks)} tracked columns; {int((truth.found_row >= 0).sum())} "
          f"of {len(truth)} true column changes found, {int((found.truth_row < 0).sum())} other event(s)")

    # 4. an estimated 3D model of the particle (ase.Atoms), written only when asked
    atoms = hrtem3d.columns_to_atoms(cols)
    print(f"3D model: {atoms.get_chemical_formula()} ({len(atoms)} atoms)")

    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax = fig.subplots(1, 3)
    depth_plot(ax[0], src.read_all()[0], real, f"{REAL_FILE.name} (not HRTEM)")
    sc = depth_plot(ax[1], p.image, cols, f"simulated particle: {len(cols)} columns")
    fig.colorbar(sc, ax=ax[1], shrink=0.8, label="atoms in column")
    ids = result.tracks.sort_values("n_events", ascending=False).column_id.head(4)
    for cid in ids:
        t = result.columns[result.columns.column_id == cid]
        ax[2].step(t.time_s, t.n_atoms, where="mid", label=f"column {cid}")
        ax[2].plot(t.time_s, t.n_atoms_raw, ".", alpha=0.4, color=ax[2].lines[-1].get_color())
    ax[2].set_xlabel("time (s)")
    ax[2].set_ylabel("atoms in column")
    ax[2].legend(fontsize=7)
    ax[2].set_title("depth traces (line: denoised, dots: single frames)", fontsize=9)
    files = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fig.savefig(out / "quickstart.png", dpi=120)
        files = [out / "quickstart.png", *hrtem3d.write_model(atoms, out / "particle")]
        print("wrote " + ", ".join(str(f) for f in files))
    return {"real_columns": len(real), "recall": recall, "exact": exact, "columns": cols, "truth": p.truth,
            "track": result, "movie": movie, "changes_found": int((truth.found_row >= 0).sum()), "atoms": atoms,
            "files": files}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the figure and the 3D model")
    main(parser.parse_args().out)
