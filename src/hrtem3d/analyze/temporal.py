"""Denoise column depths in time: a hidden-Markov model of each linked column's atom count.

A column's atom count changes only when the data say so. Every frame gives, for each
linked column, the network's pooled class probabilities (or nothing, when the column
was not detected). The hidden state is the atom count n = 0 (no column) .. n_max; it
stays the same from frame to frame except for a rare jump (probability `switch_prob`
per frame, to any other count). Viterbi gives the most likely depth history, and
forward-backward the posterior probability of each frame's depth (the confidence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hrtem3d.labels.scheme import ClassScheme


@dataclass
class TemporalModel:
    """Settings of the depth HMM.

    Attributes:
        switch_prob: probability per frame that a column's atom count changes.
        floor: weight of a uniform distribution mixed into each frame's class
            probabilities, so that one confidently wrong frame cannot outvote many.
        p_present_missed: chance that a present column goes undetected in a frame.
        p_absent_detected: chance that an empty site is detected as a column in a frame.
        edge_margin_A: where a column's expected position lies closer than this to the
            frame edge (Å), a missed detection says nothing (it may have drifted out).
    """

    switch_prob: float = 1e-3
    floor: float = 0.1
    p_present_missed: float = 0.3
    p_absent_detected: float = 0.03
    edge_margin_A: float = 1.0


def probability_columns(scheme: ClassScheme) -> dict[str, tuple[str, int]]:
    """Names of the per-class probability fields: {"p_Ce1": ("Ce", 1), ...}."""
    return {f"p_{s}{n}": (s, n) for s, m in zip(scheme.species, scheme.max_atoms) for n in range(1, m + 1)}


def name_probabilities(cols: pd.DataFrame, scheme: ClassScheme) -> pd.DataFrame:
    """Rename the analysis's `p_<class index>` fields to `p_<species><n_atoms>` (e.g. p_Ce3)."""
    ren = {}
    for name, (s, n) in probability_columns(scheme).items():
        ren[f"p_{int(scheme.class_of(s, n))}"] = name
    return cols.rename(columns=ren)


def emissions(columns: pd.DataFrame, tracks: pd.DataFrame, frames: np.ndarray, drift_A: np.ndarray,
              field_A: tuple[float, float], scheme: ClassScheme, model: TemporalModel) -> np.ndarray:
    """Likelihood of each atom count, per frame and track: float64 `[n_frames, n_tracks, 1 + n_max]`.

    Args:
        columns: linked per-frame table (frame, column_id, p_<species><n> fields).
        tracks: `linking.track_table` output (column_id, species, xc_A, yc_A), in row order.
        frames: the processed frame indices (sorted), the HMM's time axis.
        drift_A: `[len(frames), 2]` drift (dx, dy) of each frame, Å.
        field_A: (width, height) of a frame in Å.
    """
    n_max = max(scheme.max_atoms)
    nt, nf = len(tracks), len(frames)
    miss = np.full(1 + n_max, model.p_present_missed / n_max)
    miss[0] = 1 - model.p_absent_detected
    e = np.broadcast_to(miss, (nf, nt, 1 + n_max)).copy()
    # where the expected position is outside the frame, a missed detection says nothing
    x = tracks["xc_A"].to_numpy()[None] + drift_A[:, :1]
    y = tracks["yc_A"].to_numpy()[None] + drift_A[:, 1:]
    m = model.edge_margin_A
    outside = (x < m) | (y < m) | (x > field_A[0] - m) | (y > field_A[1] - m)
    e[outside] = 1.0
    # detected frames: the network's probabilities within the track's species
    row = pd.Series(np.arange(nt), index=tracks["column_id"].to_numpy())
    ti = row.loc[columns["column_id"].to_numpy()].to_numpy()
    fi = np.searchsorted(frames, columns["frame"].to_numpy())
    names = probability_columns(scheme)
    spec = tracks["species"].to_numpy()[ti]
    q = np.zeros((len(columns), n_max))
    for s in scheme.species:
        sel = spec == s
        fields = [k for k, (sp, _) in names.items() if sp == s]
        p = columns.loc[sel, fields].to_numpy(np.float64) if sel.any() else np.zeros((0, len(fields)))
        p = p / p.sum(1, keepdims=True).clip(1e-12)
        q[sel, :len(fields)] = (1 - model.floor) * p + model.floor / len(fields)
    det = np.zeros((len(columns), 1 + n_max))
    det[:, 0] = model.p_absent_detected
    det[:, 1:] = (1 - model.p_present_missed) * q
    e[fi, ti] = det  # trackpy links at most one detection per track and frame
    return e


def viterbi(e: np.ndarray, switch_prob: float) -> np.ndarray:
    """Most likely state path, `[n_frames, n_tracks]` int, for emissions `[n_frames, n_tracks, K]`."""
    nf, nt, k = e.shape
    stay, jump = np.log1p(-switch_prob), np.log(switch_prob / (k - 1))
    le = np.log(np.clip(e, 1e-300, None))
    delta = le[0] - np.log(k)
    back = np.zeros((nf, nt, k), np.int16)
    for t in range(1, nf):
        best = delta.argmax(1)
        from_best = delta.max(1, keepdims=True) + jump
        from_self = delta + stay
        use_self = from_self >= from_best
        back[t] = np.where(use_self, np.arange(k)[None], best[:, None])
        delta = np.where(use_self, from_self, from_best) + le[t]
    path = np.zeros((nf, nt), np.int64)
    path[-1] = delta.argmax(1)
    for t in range(nf - 1, 0, -1):
        path[t - 1] = back[t, np.arange(nt), path[t]]
    return path


def posteriors(e: np.ndarray, switch_prob: float) -> np.ndarray:
    """Posterior probability of each state per frame and track (forward-backward), `[n_frames, n_tracks, K]`."""
    nf, nt, k = e.shape
    jump = switch_prob / (k - 1)
    stay = 1 - switch_prob - jump

    def step(a):  # transition applied to a normalised distribution [nt, k]
        return stay * a + jump * a.sum(1, keepdims=True)

    alpha = np.empty_like(e)
    a = e[0] / k
    alpha[0] = a / a.sum(1, keepdims=True)
    for t in range(1, nf):
        a = step(alpha[t - 1]) * e[t]
        alpha[t] = a / a.sum(1, keepdims=True).clip(1e-300)
    beta = np.ones((nt, k))
    post = np.empty_like(e)
    post[-1] = alpha[-1]
    for t in range(nf - 2, -1, -1):
        b = step(beta * e[t + 1])
        beta = b / b.sum(1, keepdims=True).clip(1e-300)
        g = alpha[t] * beta
        post[t] = g / g.sum(1, keepdims=True).clip(1e-300)
    return post


def denoise_depths(columns: pd.DataFrame, tracks: pd.DataFrame, frames: np.ndarray, drift_A: np.ndarray,
                   field_A: tuple[float, float], scheme: ClassScheme, model: TemporalModel | None = None,
                   batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Viterbi depth path and its posteriors for every track.

    Returns:
        path `[n_frames, n_tracks]` (atom count, 0 = no column) and post
        `[n_frames, n_tracks, 1 + n_max]` (float32), tracks in `tracks` row order.
    """
    model = model or TemporalModel()
    n_max = max(scheme.max_atoms)
    path = np.zeros((len(frames), len(tracks)), np.int64)
    post = np.zeros((len(frames), len(tracks), 1 + n_max), np.float32)
    for i in range(0, len(tracks), batch):
        sub = tracks.iloc[i:i + batch]
        rows = columns[columns["column_id"].isin(sub["column_id"])]
        e = emissions(rows, sub, frames, drift_A, field_A, scheme, model)
        path[:, i:i + batch] = viterbi(e, model.switch_prob)
        post[:, i:i + batch] = posteriors(e, model.switch_prob)
    return path, post
