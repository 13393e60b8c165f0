"""Event detection of `track` on simulated in-situ movies, against the known truth.

Each movie: the issue's 24 frames at 1000 e/Å² per frame, drift, three events (Ce loss, two O lost
from one column, Ce migration). For each seed the movie is simulated, segmented once (parts are
kept in --work), then linked, denoised and searched for events at every --threshold. A true
change is found when an event of the same species and sign lies within 2 frames and 0.7 Å.
Baseline in the same run: the expected depth alone (no intensity series) at threshold 40.

    .venv/bin/python benchmarks/bench_events.py --seeds 20-29 --thresholds 40 50 60 [--model M.safetensors]
        [--frozen-phonons 4 --work /tmp/bench_events_tds]   # movies with thermal diffuse scattering
        [--lattice auto]                                     # the shipped pair, routed once per movie
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd


def seeds_of(text: str) -> list[int]:
    a, _, b = text.partition("-")
    return list(range(int(a), int(b) + 1)) if b else [int(v) for v in text.split(",")]


def main() -> None:
    from hrtem3d.io import open_image
    from hrtem3d.jobs.track_movie import TrackSettings, gather_parts, model_scheme, track_movie
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie, write_movie
    from hrtem3d.simulate.multislice import MultisliceConfig
    from hrtem3d.tracking.analysis import analyze_movie
    from hrtem3d.tracking.changepoint import ChangeModel
    from hrtem3d.tracking.events import match_events
    from hrtem3d.tracking.temporal import TemporalModel

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="20-29")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[40.0, 50.0, 60.0])
    ap.add_argument("--work", default="/tmp/bench_events")
    ap.add_argument("--model", default=None, help="model file (default: the shipped model)")
    ap.add_argument("--frozen-phonons", type=int, default=0,
                    help="frozen-phonon configurations of the simulated movies (0 = static lattice; use a new --work)")
    ap.add_argument("--lattice", default=None, help="the reading (static, vibrating, auto: routed once per movie by "
                                                    "the shipped gate; default: the model's own)")
    a = ap.parse_args()
    scheme = model_scheme(a.model)
    settings = TrackSettings(model=a.model, lattice=a.lattice)
    tag = ("track" if a.model is None else "track_" + Path(a.model).stem) + (f"_{a.lattice}" if a.lattice else "")
    movies = []
    for seed in seeds_of(a.seeds):
        out = Path(a.work) / f"seed{seed}"
        if not (out / "truth_events.csv").exists():
            config = MovieConfig(multislice=MultisliceConfig(frozen_phonons=a.frozen_phonons))
            write_movie(simulate_movie(config, seed=seed), out)
        shutil.rmtree(out / tag, ignore_errors=True)  # movies are cached, tracking never: it is what is measured
        track_movie(out / "movie.tif", out / tag, settings, progress=False, figures=False)
        src = open_image(out / "movie.tif")
        cols, frames, drift, _ = gather_parts(out / tag, 0, src.n_frames, settings.chunk)
        movies.append((seed, src, cols, frames, drift, pd.read_csv(out / "truth_events.csv")))
        trust = json.loads((out / tag / "trust.json").read_text())
        if "p_vibrating" in trust or "contrast_loss_read" in trust:
            print(f"seed {seed}: read as {trust.get('lattice_reading')} (p_vibrating {trust.get('p_vibrating')}), "
                  f"contrast gain {trust['contrast_gain']} (the contrast gate read {trust.get('contrast_loss_read')})")
    runs = [("expected depth alone (baseline)", 40.0, False)] + [("depth + intensity", t, True)
                                                                  for t in a.thresholds]
    print(f"{len(movies)} movies (seeds {a.seeds}), {sum(len(m[5]) for m in movies)} true column changes")
    print("| series | threshold | changes found | false events | false per movie | movies meeting the target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, thr, inten in runs:
        found = n = false = passed = 0
        for _, src, cols, frames, drift, truth in movies:
            temporal = TemporalModel(change=ChangeModel(threshold=thr), use_intensity=inten)
            ny, nx = src.shape[1:]
            field = (nx * src.pixel_size_A, ny * src.pixel_size_A)
            _, _, ev = analyze_movie(cols, frames=frames, drift_A=drift, field_A=field,
                                     times_s=frames * src.frame_interval_s, pixel_size_A=src.pixel_size_A,
                                     scheme=scheme, temporal=temporal)
            t, f = match_events(ev, truth, src.pixel_size_A)
            hit, fp = int((t.found_row >= 0).sum()), int((f.truth_row < 0).sum())
            found, n, false = found + hit, n + len(t), false + fp
            passed += int(hit == len(t) and fp <= 1)
        print(f"| {name} | {thr:g} | {found} of {n} | {false} | {false / len(movies):.1f} | "
              f"{passed} of {len(movies)} |")


if __name__ == "__main__":
    main()
