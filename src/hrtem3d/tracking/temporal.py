"""Denoise column depths in time: change points of each linked column's depth.

A column's atom count changes only when the data say so. For every linked column the
network's class probabilities are pooled along time: its series of expected atom counts,
together with its image intensity, is cut into segments of constant level
(`changepoint.segments`), and each segment's depth is the most probable count of the
probabilities pooled over all its frames. A
column that appears or vanishes for good (and was seen reliably while present) counts as
a change from or to 0 atoms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.tracking.changepoint import ChangeModel, noise_sigma, segments, split_gain, standardize

CHANGE_FIELDS = ["track", "t", "n_before", "n_after", "confidence"]


@dataclass
class TemporalModel:
    """Settings of the temporal denoising.

    Attributes:
        change: the change-point search on each column's expected depth.
        min_detection: a column detected in fewer than this fraction of the frames between
            its first and last detection is unreliable (often an empty site seen now and
            then): its depth is denoised but its changes are not reported.
        min_frames: fewest frames a column must be seen, and be absent, to report its
            appearance or loss.
        edge_margin_A: a column closer than this to the frame edge (Å) when it appears or
            vanishes may have drifted in or out: no event.
        use_intensity: search the changes in the column's image intensity together with its
            expected depth (two series, each in units of its own noise).
        pair_threshold: a Ce atom that arrives at a column came from a nearby one (and the
            reverse): for every Ce gain or loss found, the Ce columns `pair_distance_A` (Å) away
            are tested for the opposite step at the same frame. That test is at a known frame
            among a few columns, not a scan of the movie, so it needs less evidence (this many
            noise variances; 0 switches it off).
    """

    change: ChangeModel = field(default_factory=ChangeModel)
    min_detection: float = 0.8
    min_frames: int = 3
    edge_margin_A: float = 1.0
    use_intensity: bool = True
    pair_threshold: float = 16.0
    pair_distance_A: tuple[float, float] = (2.5, 8.0)


def probability_columns(scheme: ClassScheme) -> dict[str, tuple[str, int]]:
    """Names of the per-class probability fields: {"p_Ce1": ("Ce", 1), ...}."""
    return {f"p_{s}{n}": (s, n) for s, m in zip(scheme.species, scheme.max_atoms) for n in range(1, m + 1)}


def name_probabilities(cols: pd.DataFrame, scheme: ClassScheme) -> pd.DataFrame:
    """Rename the analysis's `p_<class index>` fields to `p_<species><n_atoms>` (e.g. p_Ce3)."""
    ren = {f"p_{int(scheme.class_of(s, n))}": name for name, (s, n) in probability_columns(scheme).items()}
    return cols.rename(columns=ren)


def species_probabilities(rows: pd.DataFrame, species: str, scheme: ClassScheme) -> np.ndarray:
    """`[n, max_atoms]` class probabilities of `species`, renormalised within the species."""
    fields = [k for k, (s, _) in probability_columns(scheme).items() if s == species]
    p = rows[fields].to_numpy(np.float64)
    return p / p.sum(1, keepdims=True).clip(1e-12)


def segment_depths(p: np.ndarray, model: ChangeModel, intensity: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Depth per frame of one column from its per-frame probabilities `p` `[n, max_atoms]`.

    Returns (depth per frame, confidence per frame = pooled probability of that depth,
    changes as (index, n_before, n_after, confidence)). Adjacent segments whose pooled
    depth comes out equal although their means differ significantly are set one atom
    (or the rounded step) apart, anchored on the longest segment.
    """
    n_atoms = np.arange(1, p.shape[1] + 1)
    y = p @ n_atoms
    cuts = segments(y if intensity is None else np.column_stack([y, intensity]), model)
    bounds = [0, *cuts, len(y)]
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    pooled = [p[a:b].mean(0) for a, b in segs]
    level = [int(q.argmax()) + 1 for q in pooled]
    means = [float(y[a:b].mean()) for a, b in segs]
    anchor = int(np.argmax([b - a for a, b in segs]))
    for order in (range(anchor + 1, len(segs)), range(anchor - 1, -1, -1)):
        for j in order:
            ref = j - 1 if j > anchor else j + 1
            step = means[j] - means[ref]
            if np.sign(level[j] - level[ref]) != np.sign(step):
                level[j] = int(np.clip(level[ref] + np.sign(step) * max(1, round(abs(step))), 1, p.shape[1]))
    depth = np.zeros(len(y), int)
    conf = np.zeros(len(y))
    sigma2 = noise_sigma(y, model.noise_floor) ** 2
    changes = []
    for j, (a, b) in enumerate(segs):
        depth[a:b] = level[j]
        conf[a:b] = pooled[j][level[j] - 1]
        if j:
            a0 = segs[j - 1][0]
            n1, n2 = a - a0, b - a
            g = n1 * n2 / (n1 + n2) * (means[j] - means[j - 1]) ** 2 / sigma2
            conf_change = float(max(0.0, 1.0 - len(y) * np.exp(-g / 2)))  # 1 - scan p-value
            changes.append((a, level[j - 1], level[j], conf_change))
    return depth, conf, changes


def denoise_depths(columns: pd.DataFrame, tracks: pd.DataFrame, frames: np.ndarray, drift_A: np.ndarray,
                   field_A: tuple[float, float], scheme: ClassScheme,
                   model: TemporalModel | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Denoised depth of every track in every frame, and the changes.

    Args:
        columns: linked per-frame table (frame, column_id, p_<species><n> fields).
        tracks: `linking.track_table` output (column_id, species, xc_A, yc_A, first_frame, last_frame, n_frames).
        frames: the processed frame indices (sorted): the time axis.
        drift_A: `[len(frames), 2]` drift (dx, dy) of each frame (Å).
        field_A: (width, height) of a frame (Å).

    Returns:
        depth `[n_frames, n_tracks]` (0 where the column is absent), confidence of that depth
        (same shape), and the changes (CHANGE_FIELDS; `track` is the row in `tracks`, `t` the
        index in `frames` of the first frame with the new count).
    """
    model = model or TemporalModel()
    nf, nt = len(frames), len(tracks)
    depth = np.zeros((nf, nt), int)
    conf = np.zeros((nf, nt))
    changes = []
    groups = columns.groupby("column_id").indices
    series = {}
    for k, tr in enumerate(tracks.itertuples(index=False)):
        rows = columns.iloc[groups[tr.column_id]].sort_values("frame")
        t = np.searchsorted(frames, rows["frame"].to_numpy())
        inten = rows["intensity"].to_numpy(float) if model.use_intensity and "intensity" in rows else None
        p = species_probabilities(rows, tr.species, scheme)
        d, c, ch = segment_depths(p, model.change, inten)
        y = p @ np.arange(1, p.shape[1] + 1)
        series[k] = (t, standardize(y if inten is None else np.column_stack([y, inten]), model.change), d,
                     [i for i, *_ in ch])
        # frames without a detection inside the track's life take the value of the previous detection
        span = np.arange(t[0], t[-1] + 1)
        idx = np.searchsorted(t, span, side="right") - 1
        depth[span, k], conf[span, k] = d[idx], c[idx]
        life = t[-1] - t[0] + 1
        if len(t) < model.min_detection * life:
            continue
        changes += [(k, int(t[i]), nb, na, cc) for i, nb, na, cc in ch if nb != na]
        if len(t) < model.min_frames:
            continue
        rate = len(t) / life
        m = model.min_frames
        for ti, nb, na in ((t[0], 0, d[0]), (t[-1] + 1, d[-1], 0)):
            if m <= ti <= nf - m and _inside(tr, drift_A[min(ti, nf - 1)], field_A, model.edge_margin_A):
                changes.append((k, int(ti), int(nb), int(na), float(rate)))
    if model.pair_threshold > 0:
        changes += paired_changes(changes, tracks, series, depth, model)
    return depth, conf, pd.DataFrame(changes, columns=CHANGE_FIELDS)


def paired_changes(changes: list[tuple], tracks: pd.DataFrame, series: dict, depth: np.ndarray,
                   model: TemporalModel) -> list[tuple]:
    """For each Ce gain (loss) found, the opposite step at the same frame in a nearby Ce column.

    Updates `depth` for the columns it adds a change to; returns the added changes.
    """
    ce = np.nonzero(tracks["species"].to_numpy() == "Ce")[0]
    if len(ce) < 2:
        return []
    xy = tracks[["xc_A", "yc_A"]].to_numpy()[ce]
    tree = cKDTree(xy)
    lo, hi = model.pair_distance_A
    m = model.change.min_segment
    has = {}
    for k, t, *_ in changes:
        has.setdefault(k, []).append(t)
    added = []
    for k, t, nb, na, _ in list(changes):
        if tracks["species"].iat[k] != "Ce" or nb == 0 or na == 0:
            continue
        sign = np.sign(na - nb)
        best, tested = None, 0
        for j in ce[tree.query_ball_point(xy[np.searchsorted(ce, k)], hi)]:
            if j == k or np.hypot(*(xy[np.searchsorted(ce, j)] - xy[np.searchsorted(ce, k)])) < lo:
                continue
            if any(abs(t - u) <= 2 for u in has.get(j, [])):
                continue  # already changes there: `events.classify` pairs them
            tj, (z, sigma), dj, cuts = series[j]
            i = int(np.searchsorted(tj, t))
            bounds = [0, *cuts, len(tj)]
            s = int(np.searchsorted(bounds, i, side="right")) - 1
            a, b = bounds[s], bounds[min(s + 1, len(bounds) - 1)]
            if i - a < m or b - i < m:
                continue
            g, step = split_gain(z[a:b], i - a)
            tested += 1
            if np.sign(step) == -sign and abs(step) * sigma[0] >= model.change.min_step and g > model.pair_threshold:
                if best is None or g > best[0]:
                    best = (g, j, i, b)
        if best is None:
            continue
        g, j, i, b = best
        tj, _, dj, _ = series[j]
        before = int(dj[i - 1])
        after = max(1, int(before - sign))
        depth[tj[i]:tj[b - 1] + 1, j] = after  # to the segment's last detection
        added.append((int(j), int(tj[i]), before, after, float(max(0.0, 1 - tested * np.exp(-g / 2)))))
        has.setdefault(j, []).append(int(tj[i]))
    return added


def _inside(tr, drift: np.ndarray, field_A: tuple[float, float], margin: float) -> bool:
    x, y = tr.xc_A + drift[0], tr.yc_A + drift[1]
    return margin <= x <= field_A[0] - margin and margin <= y <= field_A[1] - margin
