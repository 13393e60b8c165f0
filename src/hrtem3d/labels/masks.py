"""Per-pixel targets from a column table: soft discs with a class per (species, depth).

Each column paints a disc: full weight out to `core_A`, then a Gaussian fall-off of
width `soft_A` towards background, cut at `radius_A`. A pixel belongs to its nearest
column. The target of a pixel is the mixture
`alpha * onehot(class) + (1 - alpha) * onehot(background)`, stored as the class map
and `alpha`; pixel weights emphasise column centres.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from hrtem3d.labels.scheme import DEFAULT_SCHEME, ClassScheme


@dataclass
class LabelConfig:
    """Disc geometry (Å) and centre emphasis of the pixel weights."""

    core_A: float = 0.25
    soft_A: float = 0.15
    radius_A: float = 0.55
    centre_weight: float = 4.0

    def to_dict(self) -> dict:
        return asdict(self)


def make_targets(columns: pd.DataFrame, shape: tuple[int, int], sampling_A: float,
                 scheme: ClassScheme = DEFAULT_SCHEME, config: LabelConfig | None = None,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Class map and softness of every pixel.

    Args:
        columns: column table with `species`, `x_A`, `y_A`, `n_atoms` (Å, cell frame).
        shape: image shape `(ny, nx)`.
        sampling_A: pixel size (Å); pixel (i, j) centre is at (x, y) = (j, i) * sampling_A.
        scheme: class scheme.
        config: disc geometry.

    Returns:
        `cls` uint8 `[ny, nx]` (0 = background) and `alpha` float32 `[ny, nx]`, the
        probability of `cls` in the soft target (0 on background).
    """
    config = config or LabelConfig()
    ny, nx = shape
    cls = np.zeros(shape, np.uint8)
    alpha = np.zeros(shape, np.float32)
    cols = columns[columns["species"].isin(scheme.species) & (columns["n_atoms"] > 0)]
    if len(cols) == 0:
        return cls, alpha
    xy = cols[["x_A", "y_A"]].to_numpy() / sampling_A
    classes = np.array([scheme.class_of(s, n) for s, n in zip(cols["species"], cols["n_atoms"])])
    r_px = config.radius_A / sampling_A
    yy, xx = np.mgrid[0:ny, 0:nx]
    best = np.full(shape, np.inf, np.float32)
    for c, (x0, y0) in enumerate(xy):
        x_lo, x_hi = max(int(np.floor(x0 - r_px)), 0), min(int(np.ceil(x0 + r_px)), nx - 1)
        y_lo, y_hi = max(int(np.floor(y0 - r_px)), 0), min(int(np.ceil(y0 + r_px)), ny - 1)
        if x_lo > x_hi or y_lo > y_hi:
            continue
        sy, sx = slice(y_lo, y_hi + 1), slice(x_lo, x_hi + 1)
        d = np.hypot(xx[sy, sx] - x0, yy[sy, sx] - y0) * sampling_A
        closer = (d < best[sy, sx]) & (d <= config.radius_A)
        best[sy, sx] = np.where(closer, d, best[sy, sx])
        a = np.where(d <= config.core_A, 1.0,
                     np.exp(-((d - config.core_A) ** 2) / (2 * config.soft_A**2)))
        cls[sy, sx] = np.where(closer, classes[c], cls[sy, sx])
        alpha[sy, sx] = np.where(closer, a, alpha[sy, sx])
    return cls, alpha


def weight_map(alpha: np.ndarray, cls: np.ndarray, class_weights: np.ndarray | None = None,
               centre_weight: float = 4.0) -> np.ndarray:
    """Pixel weights: 1 on background, up to `1 + centre_weight` at column centres,
    times the weight of the pixel's class (rare depths weigh more)."""
    w = 1.0 + centre_weight * alpha
    if class_weights is not None:
        w = w * np.asarray(class_weights, np.float32)[cls]
    return w.astype(np.float32)


def class_weights_from_counts(counts: np.ndarray, power: float = 0.5, cap: float = 5.0) -> np.ndarray:
    """Per-class weights ~ (median count / count) ** power, capped, background 1."""
    counts = np.asarray(counts, float)
    w = np.ones_like(counts)
    fg = counts[1:]
    med = np.median(fg[fg > 0]) if (fg > 0).any() else 1.0
    w[1:] = np.where(fg > 0, np.clip((med / np.maximum(fg, 1)) ** power, 1 / cap, cap), 1.0)
    return w.astype(np.float32)
