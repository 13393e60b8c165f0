"""A movie's column tables to tracks, depths in time and events: the in-memory half of `track`.

A table in, tables out (trackpy's style): `analyze_movie` links the single-frame detections,
denoises each column's depth through time with the HMM of `tracking.temporal`, and finds the
events. Files, chunking and figures are the job's (`hrtem3d.jobs.track_movie`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hrtem3d.contracts import COLUMN_FIELDS
from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.tracking.events import find_events
from hrtem3d.tracking.linking import link_columns, track_table
from hrtem3d.tracking.temporal import TemporalModel, denoise_depths


def analyze_movie(cols: pd.DataFrame, *, frames: np.ndarray, drift_A: np.ndarray, field_A: tuple[float, float],
                  times_s: np.ndarray, pixel_size_A: float, scheme: ClassScheme, search_range_A: float = 0.6,
                  memory: int = 5, temporal: TemporalModel | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Link, denoise depths in time and find events: (columns, tracks, events).

    Args:
        cols: the single-frame column tables of every processed frame (COLUMN_FIELDS, plus the
            per-class probabilities `p_*`, `p_column`, `intensity` and the frame's drift
            `drift_x_A`, `drift_y_A`, and `xc_A`, `yc_A`: positions with the drift removed, Å).
        frames: the processed frame indices, sorted.
        drift_A: `[len(frames), 2]` drift (x, y) of each frame against the reference, Å.
        field_A: (width, height) of the field of view, Å.
        times_s: time of each processed frame, s.
        pixel_size_A: the input's pixel size, Å.
        scheme: the model's class scheme.
        search_range_A, memory: linking (see `tracking.linking.link_columns`).
        temporal: the depth HMM settings (default `TemporalModel()`).

    Returns:
        (columns, tracks, events): the three, see `hrtem3d.contracts`.

    Detections linked into fewer than `temporal.min_frames` frames (noise seen once, an
    empty site now and then) keep their single-frame values and get `column_id` -1; they
    are not tracks.
    """
    t = temporal or TemporalModel()
    cols = link_columns(cols, search_range_A, memory)
    cols = cols.rename(columns={"n_atoms": "n_atoms_raw", "confidence": "confidence_raw", "species": "species_raw"})
    seen = cols.groupby("column_id")["frame"].transform("nunique").to_numpy()
    short = seen < min(t.min_frames, len(frames))
    linked = cols[~short].copy()
    tracks = track_table(linked.rename(columns={"species_raw": "species"}))
    path, conf, changes = denoise_depths(linked, tracks, frames, drift_A, field_A, scheme, t)
    fi = np.searchsorted(frames, linked["frame"].to_numpy())
    ti = pd.Series(np.arange(len(tracks)), index=tracks["column_id"]).loc[linked["column_id"]].to_numpy()
    linked["species"] = tracks["species"].to_numpy()[ti]
    linked["n_atoms"] = path[fi, ti]
    linked["confidence"] = conf[fi, ti]
    lone = cols[short].assign(column_id=-1, species=lambda d: d["species_raw"], n_atoms=lambda d: d["n_atoms_raw"],
                              confidence=lambda d: d["confidence_raw"])
    cols = pd.concat([linked, lone], ignore_index=True)
    cols["time_s"] = times_s[np.searchsorted(frames, cols["frame"].to_numpy())]
    events = find_events(changes, frames, tracks, linked, times_s, pixel_size_A)
    first = np.searchsorted(frames, tracks["first_frame"].to_numpy())
    last = np.searchsorted(frames, tracks["last_frame"].to_numpy())
    tracks["n_atoms_first"] = path[first, np.arange(len(tracks))]
    tracks["n_atoms_last"] = path[last, np.arange(len(tracks))]
    tracks["n_events"] = tracks["column_id"].map(events["column_id"].value_counts()).fillna(0).astype(int)
    # a track's position: drift-corrected, in the pixels of the reference (first processed) frame
    tracks["x_px"], tracks["y_px"] = tracks["xc_A"] / pixel_size_A, tracks["yc_A"] / pixel_size_A
    keep = COLUMN_FIELDS + ["time_s", "n_atoms_raw", "confidence_raw", "species_raw", "p_column", "intensity",
                           "drift_x_A",
                           "drift_y_A", "xc_A", "yc_A"]
    return cols[[c for c in keep if c in cols]].sort_values(["frame", "column_id"]), tracks, events
