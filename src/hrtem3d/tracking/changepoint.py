"""Change points of a column's depth through a movie.

The network's class probabilities carry two kinds of uncertainty: what one frame cannot
tell (shot noise, which varies from frame to frame) and what no frame can tell (the
optics, the column's surroundings, which stay the same through a movie). Only the first
matters for finding *changes*. So each linked column is summarised per frame by its
expected atom count under the network's probabilities, and that series is cut into
segments of constant mean (binary segmentation; the frame-to-frame noise of each column is
measured from its own series). Each segment's depth is then read from the class
probabilities pooled over all its frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ChangeModel:
    """Settings of the change-point search.

    Attributes:
        threshold: a split must reduce the squared error by this many noise variances
            (a likelihood-ratio statistic; about z**2 of the step).
        min_segment: fewest frames on each side of a change.
        trend_threshold: the step must also fit better than a straight line through the
            same frames by this many noise variances: a slow drift of the network's output
            (the specimen moving under a changing blur, say) is not an event.
        min_step: smallest change of the mean expected depth (atoms) reported.
        noise_floor: smallest frame-to-frame noise assumed (atoms), so a column whose
            network output never varies does not make every tiny step significant.
    """

    threshold: float = 50.0
    trend_threshold: float = 9.0
    min_segment: int = 3
    min_step: float = 0.25
    noise_floor: float = 0.05


def noise_sigma(y: np.ndarray, floor: float = 0.05, drop: float = 0.1) -> float:
    """Frame-to-frame noise of a piecewise-constant series: RMS of successive differences / sqrt(2),
    leaving out the largest `drop` fraction (the steps themselves). Not the median: the network's
    output is often flat with rare outlying frames, and those must count as noise."""
    if len(y) < 3:
        return floor
    d = np.sort(np.abs(np.diff(y)))
    keep = d[:max(1, int(np.ceil(len(d) * (1 - drop))))]
    return max(floor, float(np.sqrt(np.mean(keep**2) / 2)))


def segments(y: np.ndarray, model: ChangeModel | None = None, floors: tuple[float, ...] | None = None) -> list[int]:
    """Change points of `y` (indices where a new segment starts).

    `y` is one series `[n]` or several measured on the same frames `[n, d]` (say, a column's
    expected depth and its intensity); each is divided by its own frame-to-frame noise and
    the squared errors add up. Binary segmentation proposes the cuts: a split is kept when the
    drop in squared error, in units of the noise variance, exceeds `model.threshold`, both
    sides hold `model.min_segment` values or more and the means of the first series differ by
    `model.min_step` or more. Then each cut must beat a straight line through the frames
    between its neighbouring cuts by `model.trend_threshold` noise variances; the weakest cut
    that does not is dropped until all do (a ramp is not a staircase).

    Args:
        floors: smallest noise assumed for each series (default: `model.noise_floor` for the
            first, 1e-3 of its spread for the others).
    """
    model = model or ChangeModel()
    z, sigma = standardize(y, model, floors)
    cuts: list[int] = []
    stack = [(0, len(z))]
    while stack:
        a, b = stack.pop()
        k, gain, step = _best_split(z[a:b], model.min_segment)
        if k and gain > model.threshold and abs(step) * sigma[0] >= model.min_step:
            cuts.append(a + k)
            stack += [(a, a + k), (a + k, b)]
    cuts.sort()
    while cuts:
        bounds = [0, *cuts, len(z)]
        margin = [_line_sse(z[bounds[i]:bounds[i + 2]]) - _step_sse(z[bounds[i]:bounds[i + 2]], c - bounds[i])
                  for i, c in enumerate(cuts)]
        worst = int(np.argmin(margin))
        if margin[worst] > model.trend_threshold:
            break
        cuts.pop(worst)
    return cuts


def standardize(y: np.ndarray, model: ChangeModel, floors: tuple[float, ...] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """`y` `[n]` or `[n, d]` divided by each series' frame-to-frame noise: (z `[n, d]`, sigma `[d]`)."""
    y = np.asarray(y, float)
    y = y[:, None] if y.ndim == 1 else y
    if floors is None:
        floors = (model.noise_floor,) + tuple(1e-3 * (np.ptp(c) + 1e-12) for c in y.T[1:])
    sigma = np.array([noise_sigma(c, f) for c, f in zip(y.T, floors)])
    return y / sigma, sigma


def split_gain(z: np.ndarray, k: int) -> tuple[float, float]:
    """(drop in squared error, mean difference of the first series) of splitting z `[n, d]` at k."""
    n = len(z)
    left, right = z[:k].mean(0), z[k:].mean(0)
    return float(k * (n - k) / n * ((left - right) ** 2).sum()), float(right[0] - left[0])


def _step_sse(y: np.ndarray, k: int) -> float:
    """Squared error of the two-level fit y[:k] | y[k:] (summed over series)."""
    return float(((y[:k] - y[:k].mean(0)) ** 2).sum() + ((y[k:] - y[k:].mean(0)) ** 2).sum())


def _line_sse(y: np.ndarray) -> float:
    """Squared error of the least-squares straight line through y (per series, summed)."""
    t = np.arange(len(y), dtype=float) - (len(y) - 1) / 2
    r = y - y.mean(0)
    slope = (t @ r) / max(t @ t, 1e-12)
    return float(((r - np.outer(t, slope)) ** 2).sum())


def _best_split(y: np.ndarray, min_seg: int) -> tuple[int, float, float]:
    """(k, drop in squared error, mean difference of the first series) of the best split y[:k] | y[k:]."""
    n = len(y)
    if n < 2 * min_seg:
        return 0, 0.0, 0.0
    c = np.cumsum(y, 0)
    k = np.arange(min_seg, n - min_seg + 1)
    left = c[k - 1] / k[:, None]
    right = (c[-1] - c[k - 1]) / (n - k)[:, None]
    gain = (k * (n - k) / n) * ((left - right) ** 2).sum(1)
    i = int(np.argmax(gain))
    return int(k[i]), float(gain[i]), float(right[i, 0] - left[i, 0])
