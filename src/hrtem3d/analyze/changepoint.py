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

    threshold: float = 40.0
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


def segments(y: np.ndarray, model: ChangeModel | None = None) -> list[int]:
    """Change points of `y` (indices where a new segment starts).

    Binary segmentation proposes the cuts: a split is kept when the drop in squared error,
    in units of the noise variance, exceeds `model.threshold`, both sides hold
    `model.min_segment` values or more and the means differ by `model.min_step` or more.
    Then each cut must beat a straight line through the frames between its neighbouring
    cuts by `model.trend_threshold` noise variances; the weakest cut that does not is
    dropped until all do (a ramp is not a staircase).
    """
    model = model or ChangeModel()
    y = np.asarray(y, float)
    sigma2 = noise_sigma(y, model.noise_floor) ** 2
    cuts: list[int] = []
    stack = [(0, len(y))]
    while stack:
        a, b = stack.pop()
        k, gain, step = _best_split(y[a:b], model.min_segment)
        if k and gain / sigma2 > model.threshold and abs(step) >= model.min_step:
            cuts.append(a + k)
            stack += [(a, a + k), (a + k, b)]
    cuts.sort()
    while cuts:
        bounds = [0, *cuts, len(y)]
        margin = [(_line_sse(y[bounds[i]:bounds[i + 2]]) - _step_sse(y[bounds[i]:bounds[i + 2]], c - bounds[i]))
                  / sigma2 for i, c in enumerate(cuts)]
        worst = int(np.argmin(margin))
        if margin[worst] > model.trend_threshold:
            break
        cuts.pop(worst)
    return cuts


def _step_sse(y: np.ndarray, k: int) -> float:
    """Squared error of the two-level fit y[:k] | y[k:]."""
    return float(((y[:k] - y[:k].mean()) ** 2).sum() + ((y[k:] - y[k:].mean()) ** 2).sum())


def _line_sse(y: np.ndarray) -> float:
    """Squared error of the least-squares straight line through y."""
    t = np.arange(len(y), dtype=float) - (len(y) - 1) / 2
    r = y - y.mean()
    slope = (t @ r) / max(t @ t, 1e-12)
    return float(((r - slope * t) ** 2).sum())


def _best_split(y: np.ndarray, min_seg: int) -> tuple[int, float, float]:
    """(k, drop in squared error, mean difference) of the best single split y[:k] | y[k:]."""
    n = len(y)
    if n < 2 * min_seg:
        return 0, 0.0, 0.0
    c = np.cumsum(y)
    k = np.arange(min_seg, n - min_seg + 1)
    left, right = c[k - 1] / k, (c[-1] - c[k - 1]) / (n - k)
    gain = k * (n - k) / n * (left - right) ** 2
    i = int(np.argmax(gain))
    return int(k[i]), float(gain[i]), float(right[i] - left[i])
