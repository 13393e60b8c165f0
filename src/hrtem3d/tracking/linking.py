"""Link columns through the frames of a movie (trackpy): a DataFrame in, a DataFrame out.

Positions are drift-corrected first (`drift_x_A`, `drift_y_A` of each frame, Å, relative
to the reference frame), so a column that stays put keeps one position and one
`column_id` for the whole movie.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import trackpy
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from hrtem3d.contracts import TRACK_FIELDS


def link_columns(columns: pd.DataFrame, search_range_A: float = 0.6, memory: int = 5,
                 merge_A: float = 0.5) -> pd.DataFrame:
    """Give every row a `column_id` that is stable across frames.

    Args:
        columns: per-frame column table with frame, x_A, y_A and optionally drift_x_A,
            drift_y_A (the frame's drift relative to the reference, Å).
        search_range_A: largest move of a column between frames after drift correction (Å).
            Keep it below half the closest column spacing (1.35 Å O-Ce in CeO2 [110]).
        memory: frames a column may go undetected and keep its id.
        merge_A: after linking, tracks of one species closer than this (mean drift-corrected
            positions, Å) that never share a frame are one column and are merged (long gaps).

    Returns:
        A copy of `columns` with `column_id` (0..n-1, ordered by first appearance and
        position) and the drift-corrected `xc_A`, `yc_A`.
    """
    df = columns.copy()
    if df.empty:
        return df.assign(column_id=pd.Series(dtype=int), xc_A=pd.Series(dtype=float), yc_A=pd.Series(dtype=float))
    dx = df["drift_x_A"].to_numpy() if "drift_x_A" in df else 0.0
    dy = df["drift_y_A"].to_numpy() if "drift_y_A" in df else 0.0
    df["xc_A"] = df["x_A"].to_numpy() - dx
    df["yc_A"] = df["y_A"].to_numpy() - dy
    feats = pd.DataFrame({"x": df["xc_A"].to_numpy(), "y": df["yc_A"].to_numpy(), "frame": df["frame"].to_numpy()},
                         index=np.arange(len(df)))
    trackpy.quiet()
    with warnings.catch_warnings():  # trackpy 0.7 calls a pandas API that pandas 3.x deprecates
        warnings.filterwarnings("ignore", message=".*inplace keyword.*")
        linked = trackpy.link(feats, search_range=search_range_A, memory=memory, link_strategy="auto")
    pid = linked.sort_index()["particle"].to_numpy()
    pid = _merge_gapped(df.assign(_pid=pid), merge_A)
    df["column_id"] = _renumber(df.assign(_pid=pid))
    return df


def _merge_gapped(df: pd.DataFrame, merge_A: float) -> np.ndarray:
    """Merge tracks that sit at one place and never overlap in time (a column lost for long)."""
    g = df.groupby("_pid")
    summary = g.agg(x=("xc_A", "mean"), y=("yc_A", "mean"), first=("frame", "min"), last=("frame", "max"))
    summary["species"] = g["species"].agg(lambda s: s.mode().iat[0]) if "species" in df else ""
    ids = summary.index.to_numpy()
    pairs = cKDTree(summary[["x", "y"]].to_numpy()).query_pairs(merge_A, output_type="ndarray")
    if len(pairs) == 0:
        return df["_pid"].to_numpy()
    a, b = summary.iloc[pairs[:, 0]], summary.iloc[pairs[:, 1]]
    apart = (a["last"].to_numpy() < b["first"].to_numpy()) | (b["last"].to_numpy() < a["first"].to_numpy())
    same = a["species"].to_numpy() == b["species"].to_numpy()
    keep = pairs[apart & same]
    n = len(ids)
    graph = coo_matrix((np.ones(len(keep)), (keep[:, 0], keep[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    lookup = dict(zip(ids, comp))
    return df["_pid"].map(lookup).to_numpy()


def _renumber(df: pd.DataFrame) -> np.ndarray:
    """Track ids 0..n-1 ordered by first frame, then y, then x (reproducible)."""
    order = (df.groupby("_pid").agg(first=("frame", "min"), y=("yc_A", "mean"), x=("xc_A", "mean"))
             .sort_values(["first", "y", "x"]))
    lookup = dict(zip(order.index, range(len(order))))
    return df["_pid"].map(lookup).to_numpy().astype(np.int64)


def track_table(columns: pd.DataFrame) -> pd.DataFrame:
    """One row per linked column: column_id, species, mean position (drift-corrected and in
    the input's pixels), first_frame, last_frame, n_frames."""
    if columns.empty:
        return pd.DataFrame(columns=TRACK_FIELDS)
    g = columns.groupby("column_id")
    out = g.agg(x_px=("x_px", "mean"), y_px=("y_px", "mean"), xc_A=("xc_A", "mean"), yc_A=("yc_A", "mean"),
                first_frame=("frame", "min"), last_frame=("frame", "max"), n_frames=("frame", "nunique"))
    out.insert(0, "species", track_species(columns))
    return out.reset_index()


def track_species(columns: pd.DataFrame) -> pd.Series:
    """Species of each track: the one with more summed probability over its frames (majority vote
    of per-frame species when the class probabilities are not in the table)."""
    ce = [c for c in columns.columns if c.startswith("p_Ce")]
    o = [c for c in columns.columns if c.startswith("p_O")]
    if ce and o:
        both = columns.assign(_ce=columns[ce].sum(axis=1), _o=columns[o].sum(axis=1))
        s = both.groupby("column_id")[["_ce", "_o"]].sum()
        return pd.Series(np.where(s["_ce"] >= s["_o"], "Ce", "O"), index=s.index)
    return columns.groupby("column_id")["species"].agg(lambda s: s.mode().iat[0])
