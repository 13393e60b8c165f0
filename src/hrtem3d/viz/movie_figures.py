"""Figures of in-situ movie results: the Figure-2 panel, per-column depth traces and the event map.

Inputs are the tables of the tracking stage, as described in :mod:`hrtem3d.viz.movie` (this module never
imports that stage); colours, markers and event styles are those of the overlay movie.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.viz.colors import render_classes
from hrtem3d.viz.movie import (
    SPECIES_MARKERS,
    depth_cmap,
    event_style,
    robust_limits,
    species_color,
    species_scheme,
)


def _nice_length_nm(fov_nm: float) -> float:
    """The largest of 0.1, 0.2, 0.5, 1, 2, 5, ... nm that is at most a quarter of the field of view."""
    nice = [m * 10.0**e for e in range(-1, 4) for m in (1, 2, 5)]
    ok = [n for n in nice if n <= 0.25 * fov_nm]
    return ok[-1] if ok else nice[0]


def _scale_bar(ax, data_per_A: float) -> None:
    """A white scale bar (length in nm) at the lower left of an image axes (y pointing down)."""
    x0, x1 = sorted(ax.get_xlim())
    y0, y1 = sorted(ax.get_ylim())
    w, h = x1 - x0, y1 - y0
    nm = _nice_length_nm(w / data_per_A / 10)
    n = nm * 10 * data_per_A
    y = y1 - 0.06 * h
    ax.plot([x0 + 0.05 * w, x0 + 0.05 * w + n], [y, y], color="white", lw=3, solid_capstyle="butt")
    ax.text(x0 + 0.05 * w + n / 2, y - 0.025 * h, f"{nm:g} nm", color="white", ha="center", va="bottom",
            fontsize=8)


def figure2_panel(image: np.ndarray, labels: np.ndarray, cols: pd.DataFrame, scheme: ClassScheme,
                  pixel_size_A: float, title: str = "") -> Figure:
    """The input frame beside the network output, as in Figure 2 of the column-depth HRTEM papers.

    Left: the frame in grey. Right: the class map (background black, each species' depths on its own colour
    scale, `viz.colors`) with the detected columns marked (Ce circles, O squares); a scale bar in nm on both
    and one discrete depth colour bar per species. Both panels are drawn in Å, so a label image at another
    pixel size than the frame (e.g. the model's) is stretched to the same field of view.

    Args:
        image: input frame `[y, x]`.
        labels: class map `[y', x']` (ints of `scheme`).
        cols: columns of this frame (`x_px`, `y_px` in frame pixels, `species`).
        scheme: the class scheme of `labels`.
        pixel_size_A: frame pixel size, Å.
        title: figure title.
    """
    ny, nx = image.shape
    p = float(pixel_size_A)
    fig = Figure(figsize=(11.5, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    lo, hi = robust_limits(np.asarray(image, float))
    ext = (-0.5 * p, (nx - 0.5) * p, (ny - 0.5) * p, -0.5 * p)
    axes[0].imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=ext)
    axes[0].set_title("(a) input frame")
    pl = p * nx / labels.shape[1], p * ny / labels.shape[0]
    axes[1].imshow(render_classes(np.clip(labels, 0, scheme.n_classes - 1), scheme), interpolation="nearest",
                   extent=(-0.5 * pl[0], (labels.shape[1] - 0.5) * pl[0], (labels.shape[0] - 0.5) * pl[1],
                           -0.5 * pl[1]))
    axes[1].set_title(f"(b) network output, {len(cols)} columns")
    for i, sp in enumerate(scheme.species):
        c = cols[cols.species == sp] if len(cols) else cols
        if len(c):
            axes[1].scatter(c.x_px * p, c.y_px * p, marker=SPECIES_MARKERS[i % len(SPECIES_MARKERS)],
                            s=14 if i == 0 else 7, facecolors="none", edgecolors="white", linewidths=0.5,
                            alpha=0.8)
    for ax in axes:
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_axis_off()
        _scale_bar(ax, 1.0)
    for sp in reversed(scheme.species):  # constrained layout puts the last colour bar nearest the axes
        cmap, norm = depth_cmap(scheme, sp)
        n = cmap.N
        cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], shrink=0.8, pad=0.02, aspect=30,
                          label=f"{sp} atoms in column")
        cb.set_ticks(sorted({1, *range(2, n + 1, max(1, n // 6)), n}))
    if title:
        fig.suptitle(title)
    return fig


def select_trace_columns(columns: pd.DataFrame, events: pd.DataFrame, max_columns: int = 12) -> list[int]:
    """Track ids to plot: columns with events first (most events, then earliest), then the longest tracks."""
    ids = columns.column_id[columns.column_id >= 0] if len(columns) else pd.Series([], dtype=int)
    known = set(ids.astype(int))
    chosen: list[int] = []
    if events is not None and len(events):
        ev = events[events.column_id.isin(known)]
        if len(ev):
            order = ev.groupby("column_id").agg(n=("frame", "size"), first=("frame", "min"))
            order = order.sort_values(["n", "first"], ascending=[False, True], kind="stable")
            chosen = [int(c) for c in order.index]
    if len(chosen) < max_columns and len(ids):
        length = ids.value_counts().sort_index()
        length = length.sort_values(ascending=False, kind="stable")
        chosen += [int(c) for c in length.index if int(c) not in set(chosen)]
    return chosen[:max_columns]


def depth_traces(columns: pd.DataFrame, events: pd.DataFrame, column_ids: list[int] | None = None,
                 max_columns: int = 12) -> Figure:
    """Atoms per column against time (s), one small panel per tracked column.

    The temporally denoised `n_atoms` is a step line, the single-frame `n_atoms_raw` faint dots, and each of
    the column's events a dashed vertical line in its kind's colour (kind in the legend). Without
    `column_ids`, `select_trace_columns` picks the columns with events first, then the longest tracks.
    The figure has one axes per column shown (one with a note when there is nothing to show).
    """
    ids = list(column_ids) if column_ids is not None else select_trace_columns(columns, events, max_columns)
    if not ids:
        fig = Figure(figsize=(4, 2.5), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no tracked columns", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    ncols = min(4, len(ids))
    nrows = math.ceil(len(ids) / ncols)
    fig = Figure(figsize=(3.3 * ncols, 2.3 * nrows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, squeeze=False)).ravel()
    scheme = species_scheme(set(columns.species) if len(columns) else set(), 12)
    has_events = events is not None and len(events) > 0
    for k, ax in enumerate(axes):
        if k >= len(ids):
            ax.remove()
            continue
        cid = ids[k]
        g = columns[columns.column_id == cid].sort_values("frame")
        sp = str(g.species.iloc[0]) if len(g) else "?"
        color = species_color(scheme, sp)
        if len(g):
            if "n_atoms_raw" in g:
                ax.plot(g.time_s, g.n_atoms_raw, ".", color=color, alpha=0.45, ms=4, label="single frame")
            ax.step(g.time_s, g.n_atoms, where="mid", color=color, lw=1.5, label="denoised")
        seen: set[str] = set()
        if has_events:
            for _, e in events[events.column_id == cid].iterrows():
                kind = str(e.kind)
                ax.axvline(e.time_s, color=event_style(kind)[1], ls="--", lw=1.1,
                           label=None if kind in seen else kind)
                seen.add(kind)
        ax.set_title(f"column {cid} ({sp})", fontsize=9)
        if len(g):
            lo = min(g.n_atoms.min(), g.n_atoms_raw.min() if "n_atoms_raw" in g else g.n_atoms.min())
            hi = max(g.n_atoms.max(), g.n_atoms_raw.max() if "n_atoms_raw" in g else g.n_atoms.max())
            ax.set_ylim(lo - 0.6, hi + 0.6)
            ax.set_yticks(range(int(lo), int(hi) + 1) if hi - lo < 8 else MaxNLocator(integer=True).tick_values(lo, hi))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if k % ncols == 0:
            ax.set_ylabel("atoms")
        if k >= len(ids) - ncols:
            ax.set_xlabel("time (s)")
            ax.xaxis.set_tick_params(labelbottom=True)
        if seen:
            ax.legend(fontsize=6, loc="best", framealpha=0.6)
    return fig


def event_map(image: np.ndarray, tracks: pd.DataFrame, events: pd.DataFrame, pixel_size_A: float) -> Figure:
    """A reference frame with every tracked column (small dots, coloured by species) and every event.

    Events are markers with the symbol and colour of their kind (`event_style`), each labelled with its frame
    number (up to 150 labels); the legend counts the events of each kind. A scale bar in nm.

    Args:
        image: reference frame `[y, x]` (pixel coordinates of the tables).
        tracks: the track table (`x_px`, `y_px` mean position, `species`).
        events: the event table (may be empty).
        pixel_size_A: pixel size, Å.
    """
    ny, nx = image.shape
    fig = Figure(figsize=(7.5, 6.8 * ny / max(nx, 1) + 0.6), layout="constrained")
    ax = fig.subplots()
    lo, hi = robust_limits(np.asarray(image, float))
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    scheme = species_scheme(set(tracks.species) if len(tracks) else set(), 12)
    handles = []
    for sp in scheme.species:
        t = tracks[tracks.species == sp] if len(tracks) else tracks
        if len(t):
            color = species_color(scheme, sp)
            ax.scatter(t.x_px, t.y_px, s=7 if sp == scheme.species[0] else 4, color=color, alpha=0.8,
                       edgecolors="none")
            handles.append(Line2D([], [], ls="", marker="o", ms=3, color=color, label=f"{sp} columns ({len(t)})"))
    n_events = 0 if events is None else len(events)
    if n_events:
        for kind, g in events.groupby("kind", sort=True):
            marker, color = event_style(str(kind))
            ax.scatter(g.x_px, g.y_px, marker=marker, s=55, color=color, edgecolors="black", linewidths=0.6,
                       zorder=4)
            handles.append(Line2D([], [], ls="", marker=marker, ms=7, color=color, markeredgecolor="black",
                                  label=f"{kind} ({len(g)})"))
        if n_events <= 150:
            for _, e in events.iterrows():
                ax.annotate(str(int(e.frame)), (e.x_px, e.y_px), xytext=(4, 4), textcoords="offset points",
                            color=event_style(str(e.kind))[1], fontsize=6, zorder=5)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(ny - 0.5, -0.5)
    ax.set_axis_off()
    _scale_bar(ax, 1.0 / pixel_size_A)
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.7)
    ax.set_title(f"{len(tracks)} tracked columns, {n_events} events (labels: frame)")
    return fig
