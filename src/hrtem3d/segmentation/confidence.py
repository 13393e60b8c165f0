"""The column confidence's calibration map (fitted by `evaluate.calibrate`, applied by `segment`).

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.confidence import apply_calibration
    >>> float(apply_calibration(np.array([0.5]), a=1.0, b=0.0)[0])
    0.5
"""

from __future__ import annotations

import numpy as np


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def apply_calibration(conf: np.ndarray, a: float, b: float, c: float = 0.0, feature: float | np.ndarray = 0.0
                      ) -> np.ndarray:
    """Calibrated confidence sigma(a * logit(conf) + b + c * feature)."""
    return 1 / (1 + np.exp(-(a * logit(np.asarray(conf, float)) + b + c * np.asarray(feature, float))))
