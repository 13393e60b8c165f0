"""From per-pixel class probabilities to the column table (DESIGN.md contract)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max

from hrtem3d.labels.scheme import ClassScheme


def disc_offsets(radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dy, dx) offsets within a disc of `radius_px`."""
    r = int(np.ceil(radius_px))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = dy**2 + dx**2 <= radius_px**2 + 1e-9
    return dy[keep], dx[keep]


def find_columns(probs: np.ndarray, scheme: ClassScheme, pixel_size_A: float, threshold: float = 0.3,
                 min_separation_A: float = 0.9, pool_radius_A: float = 0.35,
                 class_weights: np.ndarray | None = None) -> pd.DataFrame:
    """Detect columns and read their species and depth from class probabilities.

    Args:
        probs: softmax probabilities `[n_classes, ny, nx]` (class 0 background).
        scheme: the model's class scheme.
        pixel_size_A: pixel size of `probs` (Å).
        threshold: minimum column probability (1 - p_background) at a centre.
        min_separation_A: closest two columns may be (Å); CeO2 [110] has 1.35 Å O-Ce.
        pool_radius_A: radius (Å) over which class probabilities are pooled.
        class_weights: per-class loss weights the network was trained with (length n_classes), or None.
            A class-weighted cross-entropy inflates each class's probability by its weight; the pooled
            probabilities are divided by the weights (and renormalised) to undo that bias before the
            depth is read.

    Returns:
        DataFrame with x_px, y_px (sub-pixel, in `probs` pixels), species, n_atoms,
        confidence (pooled probability of the reported class), p_column and one
        `p_<class>` column per foreground class.
    """
    fg = 1.0 - probs[0]
    smooth = ndimage.gaussian_filter(fg, 0.7)
    min_dist = max(1, int(round(min_separation_A / pixel_size_A / 2)))
    peaks = peak_local_max(smooth, min_distance=min_dist, threshold_abs=threshold, exclude_border=False)
    cols = [f"p_{c}" for c in range(1, scheme.n_classes)]
    if len(peaks) == 0:
        return pd.DataFrame(columns=["x_px", "y_px", "species", "n_atoms", "confidence", "p_column", *cols])
    ny, nx = fg.shape
    # sub-pixel centre: Gaussian (log-parabola) fit through the peak and its neighbours
    y_c = peaks[:, 0] + _log_parabola(smooth, peaks, axis=0)
    x_c = peaks[:, 1] + _log_parabola(smooth, peaks, axis=1)
    # pooled class probabilities, weighted by the column probability, over a larger disc
    dy, dx = disc_offsets(max(1.0, pool_radius_A / pixel_size_A))
    yy = np.clip(np.rint(y_c)[:, None].astype(int) + dy[None], 0, ny - 1)
    xx = np.clip(np.rint(x_c)[:, None].astype(int) + dx[None], 0, nx - 1)
    w = fg[yy, xx]
    p = probs[1:, yy, xx]                                    # [C-1, n, k]
    pooled = (p * w[None]).sum(2) / (w.sum(1)[None].clip(1e-9))
    if class_weights is not None:
        pooled = pooled / np.asarray(class_weights, np.float32)[1:, None]
    pooled = pooled / pooled.sum(0, keepdims=True).clip(1e-9)  # over foreground classes
    best = pooled.argmax(0) + 1
    species_idx, n_atoms = scheme.decode(best)
    out = pd.DataFrame({"x_px": x_c, "y_px": y_c,
                        "species": np.asarray(scheme.species, dtype=object)[species_idx],
                        "n_atoms": n_atoms.astype(int), "confidence": pooled.max(0),
                        "p_column": smooth[peaks[:, 0], peaks[:, 1]]})
    out[cols] = pooled.T
    return out


def _log_parabola(f: np.ndarray, peaks: np.ndarray, axis: int) -> np.ndarray:
    """Sub-pixel offset (px) of each peak along `axis` from a parabola through log f at -1, 0, +1.

    A peak on the first or last pixel along `axis` has no neighbour on one side: its offset is 0
    there (a fit with the missing neighbour replaced by the peak itself is biased by up to 0.5 px).
    """
    n = f.shape[axis]
    i = peaks[:, axis]
    lo, hi = np.clip(i - 1, 0, n - 1), np.clip(i + 1, 0, n - 1)
    other = peaks[:, 1 - axis]
    get = (lambda k: f[k, other]) if axis == 0 else (lambda k: f[other, k])
    a, b, c = (np.log(np.clip(get(k), 1e-6, None)) for k in (lo, i, hi))
    denom = a - 2 * b + c
    off = np.where(denom < -1e-9, 0.5 * (a - c) / np.where(denom < -1e-9, denom, -1), 0.0)
    off = np.where((i == 0) | (i == n - 1), 0.0, off)
    return np.clip(off, -0.75, 0.75)
