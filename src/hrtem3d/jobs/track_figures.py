"""Figures of a tracked movie: overlay GIF, Figure-2 panel, depth traces, event map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hrtem3d.fsutil import save_figure
from hrtem3d.viz.movie import write_overlay_movie
from hrtem3d.viz.movie_figures import depth_traces, event_map, figure2_panel

MAX_GIF_FRAMES = 240


def _read_frame(src, i: int) -> np.ndarray:
    (_, block), = list(src.frames(i, i + 1, chunk=1))
    return block[0]


def _gif_frames(src, frames: np.ndarray, max_frames: int):
    """(index, image) of at most `max_frames` processed frames, evenly spread, read lazily."""
    pick = set(frames[np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).astype(int))].tolist())
    for first, block in src.frames(int(frames[0]), int(frames[-1]) + 1, chunk=8):
        for k in range(len(block)):
            if first + k in pick:
                yield first + k, block[k]


def movie_figures(src, dest: Path, *, cols: pd.DataFrame, tracks: pd.DataFrame, events: pd.DataFrame,
                  frames: np.ndarray, drift_A: np.ndarray, seg, fps: float | None,
                  lattice: str | None = None) -> list[str]:
    """Write overlay.gif, figure2.png, depth_traces.png and event_map.png into `dest`; returns the paths.

    `seg` is the run's `Segmenter`, its contrast set to the run's (the network is not loaded again);
    `lattice` the run's reading of a routed segmenter.
    """
    files = []
    gif_fps = min(fps or 7.5, 25.0)
    files.append(write_overlay_movie(_gif_frames(src, frames, MAX_GIF_FRAMES), cols, events, dest / "overlay.gif",
                                     fps=gif_fps))
    show = int(events["frame"].iat[0]) if len(events) else int(frames[0])
    image = _read_frame(src, show)
    s = seg.segment(image, src.pixel_size_A, frame=show, lattice=lattice)
    here = cols[cols["frame"] == show]
    fig = figure2_panel(image, s.labels, here, seg.scheme, src.pixel_size_A,
                        title=f"frame {show}: input and network output ({len(here)} columns)")
    files.append(save_figure(fig, dest / "figure2.png"))
    files.append(save_figure(depth_traces(cols, events), dest / "depth_traces.png"))
    ref = _read_frame(src, int(frames[0]))
    d = drift_A[np.searchsorted(frames, events["frame"].to_numpy())].reshape(-1, 2) / src.pixel_size_A
    at_ref = events.assign(x_px=events["x_px"] - d[:, 0], y_px=events["y_px"] - d[:, 1])  # on the first frame
    files.append(save_figure(event_map(ref, tracks, at_ref, src.pixel_size_A), dest / "event_map.png"))
    return [str(f) for f in files]
