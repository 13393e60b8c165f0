"""Events: lasting changes of a tracked column's atom count, and what kind they are.

A Ce loss paired with a nearby Ce gain in the same frames (within `pair_frames`) is a
`migration` (both rows get that kind); any other O loss is an `o_vacancy`; the rest are
`ce_loss`, `ce_gain` and `o_gain`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hrtem3d.contracts import EVENT_FIELDS


def find_events(changes: pd.DataFrame, frames: np.ndarray, tracks: pd.DataFrame, columns: pd.DataFrame,
                times_s: np.ndarray, pixel_size_A: float, pair_frames: int = 2,
                pair_distance_A: float = 8.0) -> pd.DataFrame:
    """One row per lasting change of a tracked column's depth (EVENT_FIELDS).

    Args:
        changes: `temporal.denoise_depths` changes (track row, time index t, n_before, n_after, confidence).
        frames, times_s: frame indices of the time axis and their times (s).
        tracks: track table (the rows `changes` refers to).
        columns: linked per-frame table (frame, column_id, x_px, y_px).
        pixel_size_A: input pixel size (Å).
        pair_frames, pair_distance_A: a Ce loss and a Ce gain this close in frames and Å
            are one migration.

    Returns:
        events sorted by frame; `frame` is the first frame with the new count.
    """
    rows = []
    pos = columns.set_index(["column_id", "frame"])[["x_px", "y_px"]]
    for ch in changes.itertuples(index=False):
        tr = tracks.iloc[int(ch.track)]
        ti = min(int(ch.t), len(frames) - 1)
        x, y = _position(pos, columns, tr, frames[ti])
        rows.append({"frame": int(frames[ti]), "time_s": float(times_s[ti]), "column_id": int(tr["column_id"]),
                     "species": tr["species"], "x_px": x, "y_px": y, "n_before": int(ch.n_before),
                     "n_after": int(ch.n_after), "confidence": float(ch.confidence)})
    ev = pd.DataFrame(rows, columns=EVENT_FIELDS[:-1])
    ev["kind"] = classify(ev, pixel_size_A, pair_frames, pair_distance_A)
    return ev.sort_values(["frame", "column_id"]).reset_index(drop=True)[EVENT_FIELDS]


def _position(pos: pd.DataFrame, columns: pd.DataFrame, tr: pd.Series, frame: int) -> tuple[float, float]:
    """The column's position in the input's pixels at the change (nearest detected frame)."""
    cid = int(tr["column_id"])
    mine = columns.loc[columns["column_id"] == cid, "frame"].to_numpy()
    if len(mine) == 0:
        return float(tr["x_px"]), float(tr["y_px"])
    nearest = mine[np.argmin(np.abs(mine - frame))]
    x, y = pos.loc[(cid, nearest)].to_numpy(float).reshape(-1, 2)[0]
    return float(x), float(y)


def classify(ev: pd.DataFrame, pixel_size_A: float, pair_frames: int = 2, pair_distance_A: float = 8.0) -> list[str]:
    """Kind of each event row: migration, o_vacancy, ce_loss, ce_gain, o_gain."""
    if ev.empty:
        return []
    loss = (ev["n_after"] < ev["n_before"]).to_numpy()
    kind = np.where(ev["species"] == "O", np.where(loss, "o_vacancy", "o_gain"),
                    np.where(loss, "ce_loss", "ce_gain")).astype(object)
    ce = ev["species"].to_numpy() == "Ce"
    losses, gains = np.nonzero(ce & loss)[0], np.nonzero(ce & ~loss)[0]
    pairs = []
    for i in losses:
        for j in gains:
            df = abs(int(ev["frame"].iat[i]) - int(ev["frame"].iat[j]))
            d = np.hypot(ev["x_px"].iat[i] - ev["x_px"].iat[j], ev["y_px"].iat[i] - ev["y_px"].iat[j]) * pixel_size_A
            if df <= pair_frames and d <= pair_distance_A and ev["column_id"].iat[i] != ev["column_id"].iat[j]:
                pairs.append((df, d, i, j))
    used: set[int] = set()
    for _, _, i, j in sorted(pairs):
        if i not in used and j not in used:
            kind[i] = kind[j] = "migration"
            used.update((i, j))
    return list(kind)


def match_events(found: pd.DataFrame, truth: pd.DataFrame, pixel_size_A: float, max_frames: int = 2,
                 max_distance_A: float = 0.7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match found events to true column changes (same species, same sign of change, within
    `max_frames` frames and `max_distance_A` Å; closest first, one to one).

    Returns:
        (truth with `found_row` (-1 if missed), `d_frames`, `d_A`, `same_counts`, `found_kind`;
        found with `truth_row` (-1 for a false event)).
    """
    truth = truth.reset_index(drop=True).assign(found_row=-1, d_frames=np.nan, d_A=np.nan, same_counts=False,
                                                found_kind="")
    found = found.reset_index(drop=True).assign(truth_row=-1)
    cands = []
    for i, t in truth.iterrows():
        for j, f in found.iterrows():
            df = abs(int(f["frame"]) - int(t["frame"]))
            d = float(np.hypot(f["x_px"] - t["x_px"], f["y_px"] - t["y_px"]) * pixel_size_A)
            same_sign = np.sign(f["n_after"] - f["n_before"]) == np.sign(t["n_after"] - t["n_before"])
            if f["species"] == t["species"] and same_sign and df <= max_frames and d <= max_distance_A:
                cands.append((df + d / max_distance_A, i, j, df, d))
    for _, i, j, df, d in sorted(cands):
        if truth.at[i, "found_row"] < 0 and found.at[j, "truth_row"] < 0:
            f = found.loc[j]
            same = int(f["n_before"]) == int(truth.at[i, "n_before"]) and int(f["n_after"]) == int(
                truth.at[i, "n_after"])
            truth.loc[i, ["found_row", "d_frames", "d_A", "same_counts", "found_kind"]] = [j, df, d, same, f["kind"]]
            found.at[j, "truth_row"] = i
    return truth, found
