"""The column confidence's calibration map (fitted by `evaluate.calibrate`, applied by `segment`).

The map is logistic: sigma(a logit(p) + b + c . f), with p the column's pooled class probability and
f per-image features. Two features are known:

- `log_noise`: the log of the working image's relative pixel noise (`noise_level`): the dose.
- `image_logit`: the mean logit of the raw confidences of every column found in the image: how sure
  the network is of this image as a whole. Under a shift that lowers the lattice contrast (thermal
  diffuse scattering, a diffuse background, vibration) the network is less sure of every column at
  once, and what it claims for one column is then worth less; this feature carries that.
- `log_ratio` and `abs_log_ratio`: log of the particle's `count_size_ratio` (the mean cation count over
  what its projected size implies) over the training particles' typical 0.70, signed and unsigned,
  clipped to +-1 (0 when the particle is too small to judge). A shift that the network does not see as
  doubt, but that moves every count one way (thermal diffuse scattering or a diffuse background: too
  thin; residual astigmatism: too thick), moves the ratio away from typical; a map fitted on images
  drawn through the microscope envelope learns what that is worth (`hrtem3d calibrate --through-scope
  --shift-features`).
- per column, `log_n` (log of its atom count) and `is_cation`, and the products of `log_n` with the
  three image features above (`*_x_log_n`): a shift that takes contrast away costs thick columns more
  than thin ones, so what the image features say is worth more or less with the column's length.

Model files calibrated before the second feature store `c` as a number (the noise feature alone); a
map names the features it was fitted with (`features`), so older maps keep their meaning.

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.confidence import apply_calibration
    >>> float(apply_calibration(np.array([0.5]), a=1.0, b=0.0)[0])
    0.5
    >>> p = np.array([0.9, 0.6])
    >>> feats = image_features(p, noise=0.1, ratio=0.35)
    >>> sorted(feats)
    ['abs_log_ratio', 'image_logit', 'log_noise', 'log_ratio']
    >>> round(feats["log_ratio"], 2)  # half the typical ratio: log(0.5)
    -0.69
    >>> f = column_features(p, noise=0.1, ratio=0.35, n_atoms=np.array([1, 4]), cation=np.array([True, False]))
    >>> f.shape == (2, len(ALL_FEATURES))
    True
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from hrtem3d.segmentation.envelope_check import TYPICAL_RATIO

# The features `evaluate.calibrate` fits by default, and the shift features it can add (`shift_features`); a
# map names its own (`features`). The shift features lower the ECE under a diffuse background or astigmatism
# but raise it on ideal images (docs/benchmarks.md, "Thirteenth look"), so they are opt-in.
FEATURES = ("log_noise", "image_logit")
SHIFT_FEATURES = ("log_ratio", "abs_log_ratio", "log_n", "is_cation", "image_logit_x_log_n", "log_ratio_x_log_n",
                  "abs_log_ratio_x_log_n")
ALL_FEATURES = FEATURES + SHIFT_FEATURES
LEGACY_FEATURES = ("log_noise", "image_logit")  # a list `c` stored without `features` (2026-12-03 maps)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def image_features(raw_confidence: np.ndarray, noise: float, ratio: float = float("nan")) -> dict[str, float]:
    """The per-image features of the map: `log_noise` (log of the relative pixel noise `noise`),
    `image_logit` (mean logit of the raw column confidences `raw_confidence` of the image; 0 without columns),
    and `log_ratio` / `abs_log_ratio` (log of the particle's `count_size_ratio` `ratio` over the typical
    0.70, clipped to +-1; 0 when `ratio` is NaN, a particle too small to judge)."""
    raw = np.asarray(raw_confidence, float)
    r = float(np.clip(np.log(ratio / TYPICAL_RATIO), -1.0, 1.0)) if np.isfinite(ratio) and ratio > 0 else 0.0
    return {"log_noise": float(np.log(max(noise, 1e-6))),
            "image_logit": float(logit(raw).mean()) if raw.size else 0.0,
            "log_ratio": r, "abs_log_ratio": abs(r)}


def column_features(raw_confidence: np.ndarray, noise: float, ratio: float = float("nan"), *,
                    n_atoms: np.ndarray | None = None, cation: np.ndarray | None = None,
                    names: tuple[str, ...] | list[str] = ALL_FEATURES) -> np.ndarray:
    """The map's features `names` for each of an image's columns, `[n_columns, len(names)]`: the image
    features (`image_features`) on every row, and the column's own (`log_n` from `n_atoms`, at least 1;
    `is_cation` from the boolean `cation`; their products with the image features)."""
    raw = np.asarray(raw_confidence, float)
    img = image_features(raw, noise, ratio)
    log_n = np.log(np.maximum(np.asarray(n_atoms if n_atoms is not None else np.ones(raw.size), float), 1.0))
    cols = {**{k: np.full(raw.size, v) for k, v in img.items()}, "log_n": log_n,
            "is_cation": np.asarray(cation if cation is not None else np.ones(raw.size), float)}
    for k in ("image_logit", "log_ratio", "abs_log_ratio"):
        cols[f"{k}_x_log_n"] = img[k] * log_n
    return np.stack([cols[k] for k in names], axis=1).reshape(raw.size, len(names))


def uses_ratio(names: tuple[str, ...] | list[str]) -> bool:
    """Whether a map with these features needs the particle's `count_size_ratio` (only maps fitted with the
    shift features do; the ratio is not worth computing otherwise)."""
    return any("ratio" in name for name in names)


def apply_calibration(conf: np.ndarray, a: float, b: float, c: float | list[float] = 0.0,
                      feature: float | np.ndarray = 0.0) -> np.ndarray:
    """Calibrated confidence sigma(a * logit(conf) + b + c . feature).

    `c` is a number with one feature (a number or one value per column), or a list of k coefficients with
    `feature` of shape `[k]` (one image) or `[n, k]` (one row per column).
    """
    z = a * logit(np.asarray(conf, float)) + b
    if np.ndim(c) == 0:
        z = z + float(c) * np.asarray(feature, float)
    else:
        z = z + np.asarray(feature, float) @ np.asarray(c, float)
    return expit(z)


def map_terms(calibration: dict) -> tuple[list[float], list[str]]:
    """(coefficients, feature names) of a model file's `column_calibration`, whichever its form: a scalar
    `c` is the noise-only map of older files (`log_noise`), a list goes with the stored `features`."""
    c = calibration.get("c", 0.0)
    if np.ndim(c) == 0:
        return [float(c)], ["log_noise"]
    return [float(v) for v in c], list(calibration.get("features", LEGACY_FEATURES))


def calibrate_columns(raw: np.ndarray, calibration: dict, noise: float, ratio: float = float("nan"), *,
                      n_atoms: np.ndarray | None = None, cation: np.ndarray | None = None) -> np.ndarray:
    """Apply a model file's `column_calibration` to the raw confidences `raw` of one image's columns.

    `noise` is the working image's relative pixel noise, `ratio` the particle's `count_size_ratio` (NaN:
    unknown), `n_atoms` and `cation` the columns' counts and whether each is a cation column (needed by
    maps with column features). Handles every form of the map (see the module doc).
    """
    raw = np.asarray(raw, float)
    coefs, names = map_terms(calibration)
    feats = column_features(raw, noise, ratio, n_atoms=n_atoms, cation=cation, names=names)
    return apply_calibration(raw, calibration["a"], calibration["b"], coefs, feats)


# The gates' map (fitted by `benchmarks/gate_confidence.py`, stored in the contrast gate's file): applied after
# the reader's map to every column of an image the contrast gate read and that was counted at gain 1 (counts at
# a raised gain keep their flat cap), with the gate's reading g and its spread sigma of log g. Each feature is
# 0 on an image the gate reads as ideal, and each is also taken times log n (a contrast lost and not put back
# costs a thick column more).
GATE_FEATURES = ("unread", "spread", "unread_x_log_n", "spread_x_log_n")
RAISED_FEATURES = ("raised", "raised_x_log_n")  # measured, not shipped: counts at a raised gain keep the cap
VIBRATION_FEATURES = ("other_reading", "other_reading_x_log_n")  # measured, not shipped (in-domain ECE)
# What the contrast gate reads on ideal images like the training images (at the store's sampling, no effects:
# g 1.00-1.05 and a spread of 0.02-0.08 on the threshold store's fields): a reading within these is no
# evidence, so an ideal image keeps the reader's own calibration exactly.
IDEAL_LOSS = 1.1  # g read at most this much above the gain used: nothing unread
IDEAL_SPREAD = 0.1  # sigma of log g up to this: a sure reading


def gate_features(g_read: np.ndarray, g_spread: np.ndarray, g_used: np.ndarray, n_atoms: np.ndarray,
                  p_other: np.ndarray | float = 0.0, names: tuple[str, ...] | list[str] = GATE_FEATURES
                  ) -> np.ndarray:
    """`[n, len(names)]` per column: `unread`, the loss the gate reads beyond the gain the counts were made at
    (log g_read - log g_used - log `IDEAL_LOSS`, at least 0: a reading under the threshold, or a lattice the
    guard did not accept); `spread`, the gate's sigma of log g beyond `IDEAL_SPREAD` (at least 0); `raised`,
    log g_used (counts at a raised gain);
    `other_reading`, the vibration gate's probability of the reading not used (`p_other`: p(vibrating) for a
    static reading, 1 - p for a vibrating one, 0 where the user chose the reading); and each times log of the
    column's count (at least 1). Arguments are per column or numbers (broadcast).

    >>> f = gate_features(np.array([1.4]), np.array([0.2]), np.array([1.0]), np.array([5]))
    >>> [round(float(v), 3) for v in f[0, :2]]  # log(1.4 / 1.1), 0.2 - 0.1
    [0.241, 0.1]
    """
    n = np.broadcast(g_read, g_spread, g_used, n_atoms, p_other).shape
    b = lambda v: np.broadcast_to(np.asarray(v, float), n)  # noqa: E731
    used = np.log(b(g_used))
    f = {"unread": np.maximum(np.log(b(g_read)) - used - np.log(IDEAL_LOSS), 0.0),
         "spread": np.maximum(b(g_spread) - IDEAL_SPREAD, 0.0), "raised": used,
         "other_reading": b(p_other)}
    log_n = np.log(np.maximum(b(n_atoms), 1.0))
    f.update({f"{k}_x_log_n": v * log_n for k, v in list(f.items())})
    return np.stack([f[k] for k in names], axis=-1).reshape(-1, len(names))


def apply_gates_map(columns, cmap: dict, g_read: float, g_spread: float, g_used: float, p_other: float = 0.0):
    """The column table with its `confidence` through the gates' map `cmap` (a, b, c over `features`) for an
    image the contrast gate read as (`g_read`, `g_spread`), counted at gain `g_used`, read the way the
    vibration gate gave probability 1 - `p_other` (see `gate_features`)."""
    names = list(cmap.get("features", GATE_FEATURES))
    unknown = set(names) - set(GATE_FEATURES + RAISED_FEATURES + VIBRATION_FEATURES)
    if unknown:
        raise ValueError(f"a gates' map with features {sorted(unknown)} this version does not know")
    f = gate_features(g_read, g_spread, g_used, columns["n_atoms"].to_numpy(float), p_other, names)
    conf = apply_calibration(columns["confidence"].to_numpy(float), cmap["a"], cmap["b"], list(cmap["c"]), f)
    return columns.assign(confidence=conf)
