"""Where in a frame is there anything to segment? Vacuum found by a cheap statistic, so the network skips it.

In vacuum an HRTEM image holds shot noise and nothing else; a particle (or a support film) adds contrast
at lattice spatial frequencies. The statistic is the local energy of the image band-passed to those
frequencies (a difference of Gaussians, 0.25 to 1.2 Å), smoothed over `SMOOTH_A`, divided by what white
shot noise alone would put there (its variance from 2 x 2 checkerboard differences, clipped at 4 sigma,
times the filter's noise gain). Vacuum reads about 1; anything else reads more.

The statistic only ever saves time: it is computed on the image binned by a whole factor (binning keeps
white noise white), and anything that breaks its assumptions (noise coloured by a detector MTF or by
interpolation, a carbon film, a gradient) makes vacuum read high, so nothing is skipped. Regions are
the particle's boxes grown by a margin the network's output does not see past (see `VACUUM_MARGIN_A`)
and put on the network's pooling grid; when nothing reads above the threshold the whole frame is kept.

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.lattice import lattice_image
    >>> rng = np.random.default_rng(0)
    >>> img = rng.poisson(100, (512, 512)).astype(np.float32)
    >>> img[200:300, 200:300] = 100 * (1 + 0.2 * lattice_image((100, 100), 0.1, rng=rng))
    >>> img[200:300, 200:300] = rng.poisson(img[200:300, 200:300])
    >>> (y0, y1, x0, x1), = particle_regions(img, 0.1, margin_px=32, multiple=16)
    >>> y0 <= 200 - 32 and y1 >= 300 + 32, (y1 - y0) * (x1 - x0) < 0.6 * img.size
    (True, True)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from hrtem3d.data.normalize import checkerboard, noise_level
from hrtem3d.data.resample import block_mean

BAND_A = (0.25, 1.2)   # difference-of-Gaussians sigmas (Å): passes lattice fringes of about 1 to 5 Å
SMOOTH_A = 4.0         # local energy averaged over a Gaussian of this sigma (Å) to find what is not vacuum
THRESHOLD = 2.0        # excess band energy over white shot noise that marks "not vacuum"
EXTENT_SMOOTH_A = 2.0  # a finer smoothing that bounds what was found (less reach into the vacuum around)
EXTENT_THRESHOLD = 2.0  # its threshold, looked at only inside what the coarse map found (at 3, a faint
# particle's thin edges at 300 e/Å² fell outside: its box shrank by 3 Å and more, eating the margin)
VACUUM_MARGIN_A = 10.0  # context kept around what is found (Å); measured in docs/benchmarks.md
GRID_A = 0.3           # the statistic is computed on a grid about this coarse (Å per pixel), binned


def excess_energy(image: np.ndarray, pixel_size_A: float, smooth_A: float = SMOOTH_A) -> tuple[np.ndarray, int]:
    """Band energy over white-noise expectation, smoothed over `smooth_A` (Å), on a grid coarser than the
    image's by a whole factor `k`. Returns `(excess [y // k, x // k], k)`; vacuum reads about 1.

    Example:
        >>> ex, k = excess_energy(np.random.default_rng(0).poisson(20, (256, 256)), 0.1)
        >>> k, round(float(np.median(ex)), 1)
        (18, 1.0)
    """
    (ex,), k = _excess_maps(image, pixel_size_A, (smooth_A,))
    return ex, k


def _excess_maps(image: np.ndarray, pixel_size_A: float, smooth_A: tuple[float, ...]) -> tuple[list, int]:
    """`excess_energy` at several smoothings, sharing the band-pass; the maps and their common factor `k`."""
    k = max(1, int(round(GRID_A / pixel_size_A)))
    a = block_mean(image, k)
    p = pixel_size_A * k
    s1, s2 = (s / p for s in BAND_A)
    band = ndimage.gaussian_filter(a, s1, truncate=3) - ndimage.gaussian_filter(a, s2, truncate=3)
    b = max(1, int(min(smooth_A) / 2 / p))  # block-average the energy first: the smoothing is then cheap
    e = block_mean(band * band, b)
    sigma = _noise_sigma(a)
    norm = max(sigma * sigma * _noise_gain(s1, s2), 1e-30)
    return [ndimage.gaussian_filter(e, sm / (p * b), truncate=3) / norm for sm in smooth_A], k * b


def _noise_sigma(a: np.ndarray) -> float:
    """White pixel noise from 2 x 2 checkerboard differences: their standard deviation, clipped at 4 sigma
    about the median (robust to edges, and unbiased on the few discrete values of low-count shot noise,
    where the median absolute deviation of `noise_level` is not)."""
    d = checkerboard(a).ravel()
    s = noise_level(a) * 2 or float(d.std())
    for _ in range(2):
        s = float(d[np.abs(d - np.median(d)) <= 4 * s].std()) if s > 0 else 0.0
    return s / 2


def _noise_gain(s1: float, s2: float) -> float:
    """Variance of the difference-of-Gaussians output for unit white noise (sum of squared weights)."""
    n = int(8 * s2) | 1
    d = np.zeros((n, n), np.float32)
    d[n // 2, n // 2] = 1
    h = ndimage.gaussian_filter(d, s1) - ndimage.gaussian_filter(d, s2)
    return float((h.astype(np.float64) ** 2).sum())


def particle_mask(image: np.ndarray, pixel_size_A: float, threshold: float = THRESHOLD) -> np.ndarray:
    """Boolean `[y, x]` on the input grid: True where the image is not vacuum (`excess_energy > threshold`)."""
    ex, k = excess_energy(image, pixel_size_A)
    m = ex > threshold
    if k > 1:
        m = np.repeat(np.repeat(m, k, 0), k, 1)
        pad = ((0, image.shape[0] - m.shape[0]), (0, image.shape[1] - m.shape[1]))
        m = np.pad(m, pad, mode="edge")
    return m


def particle_regions(image: np.ndarray, pixel_size_A: float, *, margin_px: int, multiple: int = 1,
                     factors: tuple[float, float] = (1.0, 1.0), shape: tuple[int, int] | None = None,
                     threshold: float = THRESHOLD, keep_all_above: float = 0.7) -> list[tuple[int, int, int, int]]:
    """Boxes `(y0, y1, x0, x1)` (end exclusive) that hold everything in `image` that is not vacuum.

    The statistic runs on `image` (the file's own grid, where shot noise is white); the boxes are given
    on a grid whose pixels are `factors` `(fy, fx)` input pixels each and whose size is `shape` (the
    working grid of `data.resample.to_working_grid`; default: the input grid). Each connected non-vacuum
    area's bounding box is grown by `margin_px` (pixels of that grid), its corners put on multiples of
    `multiple` (the network's pooling grid, so a box gives the same output as the whole frame there),
    clipped, and boxes that touch are merged. The whole grid is one box when nothing reads above
    `threshold`, or when the boxes would cover more than `keep_all_above` of it.
    """
    fy, fx = factors
    ny, nx = shape or image.shape
    whole = [(0, ny, 0, nx)]
    (coarse, fine), k = _excess_maps(image, pixel_size_A, (SMOOTH_A, EXTENT_SMOOTH_A))
    labels, n = ndimage.label(coarse > threshold)
    if n == 0:
        return whole
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        # the found area's extent from the finer map (the coarse one reaches ~10 Å past a thick particle);
        # the coarse area itself when nothing in it clears the finer threshold (a faint particle)
        inside = (labels[sl] == i) & (fine[sl] > EXTENT_THRESHOLD)
        if inside.any():
            ys, xs = np.nonzero(inside)
            sl = (slice(sl[0].start + ys.min(), sl[0].start + ys.max() + 1),
                  slice(sl[1].start + xs.min(), sl[1].start + xs.max() + 1))
        # coarse cells -> input pixels -> the output grid
        y0, y1 = int(sl[0].start * k / fy) - margin_px, int(np.ceil(sl[0].stop * k / fy)) + margin_px
        x0, x1 = int(sl[1].start * k / fx) - margin_px, int(np.ceil(sl[1].stop * k / fx)) + margin_px
        boxes.append([max(0, y0 // multiple * multiple), min(ny, -(-y1 // multiple) * multiple),
                      max(0, x0 // multiple * multiple), min(nx, -(-x1 // multiple) * multiple)])
    boxes = _merge(boxes)
    if sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes) > keep_all_above * ny * nx:
        return whole
    return [tuple(b) for b in boxes]


def _merge(boxes: list[list[int]]) -> list[list[int]]:
    """Merge boxes that overlap or touch until none do."""
    merged = True
    while merged:
        merged = False
        out: list[list[int]] = []
        for b in boxes:
            for o in out:
                if b[0] <= o[1] and o[0] <= b[1] and b[2] <= o[3] and o[2] <= b[3]:
                    o[:] = [min(o[0], b[0]), max(o[1], b[1]), min(o[2], b[2]), max(o[3], b[3])]
                    merged = True
                    break
            else:
                out.append(list(b))
        boxes = out
    return sorted(boxes)


__all__ = ["VACUUM_MARGIN_A", "excess_energy", "particle_mask", "particle_regions"]
