"""The column confidence's calibration map (fitted by `evaluate.calibrate`, applied by `segment`).

The map is logistic: sigma(a logit(p) + b + c . f), with p the column's pooled class probability and
f per-image features. Two features are known:

- `log_noise`: the log of the working image's relative pixel noise (`noise_level`): the dose.
- `image_logit`: the mean logit of the raw confidences of every column found in the image: how sure
  the network is of this image as a whole. Under a shift that lowers the lattice contrast (thermal
  diffuse scattering, a diffuse background, vibration) the network is less sure of every column at
  once, and what it claims for one column is then worth less; this feature carries that.

Model files calibrated before the second feature store `c` as a number (the noise feature alone).

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.confidence import apply_calibration
    >>> float(apply_calibration(np.array([0.5]), a=1.0, b=0.0)[0])
    0.5
    >>> p = np.array([0.9, 0.6])
    >>> feats = image_features(p, noise=0.1)
    >>> sorted(feats)
    ['image_logit', 'log_noise']
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

FEATURES = ("log_noise", "image_logit")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def image_features(raw_confidence: np.ndarray, noise: float) -> dict[str, float]:
    """The per-image features of the map: `log_noise` (log of the relative pixel noise `noise`) and
    `image_logit` (mean logit of the raw column confidences `raw_confidence` of the image; 0 without columns)."""
    raw = np.asarray(raw_confidence, float)
    return {"log_noise": float(np.log(max(noise, 1e-6))),
            "image_logit": float(logit(raw).mean()) if raw.size else 0.0}


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
    return [float(v) for v in c], list(calibration.get("features", FEATURES))


def calibrate_columns(raw: np.ndarray, calibration: dict, noise: float) -> np.ndarray:
    """Apply a model file's `column_calibration` to the raw confidences `raw` of one image's columns.

    `noise` is the working image's relative pixel noise. Handles both forms of the map (see the module doc).
    """
    raw = np.asarray(raw, float)
    feats = image_features(raw, noise)
    coefs, names = map_terms(calibration)
    return apply_calibration(raw, calibration["a"], calibration["b"], coefs, np.array([feats[k] for k in names]))
