"""The power spectrum of an image and the spots in it: what `segmentation.lattice` indexes.

A Hann-windowed power spectrum (averaged over half-overlapping tiles for large images) is divided by
its azimuthal median at the same spatial frequency, so that lattice spots stand out of the CTF's
rings (`Spectrum.q`, "how many times the median"). Spots are local maxima of that ratio, placed to
a sub-pixel position by a parabola through the log power. Frequencies are in cycles per pixel, the
arrays in the fftshift layout (zero frequency at `(ny // 2, nx // 2)`).

`image_spectrum` is computed once per image and shared by every lattice fitted to it.

Example:
    >>> import numpy as np
    >>> yy, xx = np.mgrid[0:128, 0:128]
    >>> img = np.cos(2 * np.pi * 0.125 * xx) + 0.1 * np.random.default_rng(0).normal(size=(128, 128))
    >>> spec = image_spectrum(img)
    >>> [round(float(v), 3) for v in find_peaks(spec.q, spec.logp)[0]]  # (fx, fy) in cycles/px
    [0.125, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy import ndimage

from hrtem3d.errors import HrtemError

DETECT_Q = 8.0               # peaks that propose lattices stand this many times above the azimuthal median
SPOT_Q = 5.0                 # a predicted spot counts as detected above this
MAX_PEAKS = 40
TILE = 1024                  # larger images are cut into tiles of this side (pixels)


def power_spectrum(image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """Hann-windowed power spectrum `[ky, kx]`, zero frequency at `(ny // 2, nx // 2)` (fftshift layout).

    Images larger than `tile` pixels are cut into half-overlapping square tiles whose spectra are averaged.
    """
    img = np.asarray(image, np.float64)
    ny, nx = img.shape
    ty, tx = min(ny, tile), min(nx, tile)
    wy, wx = np.hanning(ty), np.hanning(tx)
    win = wy[:, None] * wx[None, :]
    total = np.zeros((ty, tx))
    starts_y = sorted({*range(0, ny - ty + 1, max(1, ty // 2)), ny - ty})
    starts_x = sorted({*range(0, nx - tx + 1, max(1, tx // 2)), nx - tx})
    for y0, x0 in product(starts_y, starts_x):
        t = img[y0:y0 + ty, x0:x0 + tx]
        t = (t - t.mean()) * win
        total += np.abs(np.fft.fft2(t)) ** 2
    return np.fft.fftshift(total / (len(starts_y) * len(starts_x)))


@dataclass(frozen=True)
class Spectrum:
    """An image's power spectrum as the lattice search reads it (fftshift layout, `[ky, kx]`).

    Computed once per image by `image_spectrum` and shared by every lattice fitted to it
    (`measure_lattice`, `check_pixel_size`, the rival patterns of `envelope_check`).

    Attributes:
        q: power over its azimuthal median at the same |f| (spots stand out of the CTF rings).
        logp: log of the power (for sub-pixel spot positions).
        q_max3: the 3 x 3 maximum of `q` (whether a spot is seen within one bin of a predicted one).
    """

    q: np.ndarray
    logp: np.ndarray
    q_max3: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape


def image_spectrum(image: np.ndarray) -> Spectrum:
    """The `Spectrum` of `image` `[y, x]` (at least 32 x 32 pixels), to share among lattice fits.

    Example:
        >>> import numpy as np
        >>> xx = np.mgrid[0:128, 0:160][1]
        >>> spec = image_spectrum(np.cos(2 * np.pi * 0.25 * xx))  # a spot at fx = 0.25 cycles/px
        >>> spec.shape, [int(i) for i in np.unravel_index(np.argmax(spec.q), spec.shape)]  # zero at (64, 80)
        ((128, 160), [64, 40])
    """
    image = np.asarray(image, np.float64)
    if image.ndim != 2 or min(image.shape) < 32:
        raise HrtemError(f"the lattice needs a 2D image of at least 32 x 32 pixels, got shape {image.shape}")
    p = power_spectrum(image)
    q = ratio_map(p)
    return Spectrum(q, np.log(np.maximum(p, 1e-30)), ndimage.maximum_filter(q, 3))


def ratio_map(power: np.ndarray) -> np.ndarray:
    """Power over its azimuthal median at the same |f| (cycles/px), so spots stand above CTF rings."""
    ny, nx = power.shape
    fy = (np.arange(ny) - ny // 2) / ny
    fx = (np.arange(nx) - nx // 2) / nx
    r = np.hypot(fy[:, None], fx[None, :])
    step = 1.0 / min(ny, nx)
    b = np.minimum((r / step).astype(int), int(0.75 / step))
    med = np.zeros(b.max() + 1)
    order = np.argsort(b, axis=None)
    bs, ps = b.ravel()[order], power.ravel()[order]
    edges = np.searchsorted(bs, np.arange(b.max() + 2))
    for k in range(b.max() + 1):
        if edges[k + 1] > edges[k]:
            med[k] = np.median(ps[edges[k]:edges[k + 1]])
    med = np.maximum(ndimage.uniform_filter1d(med, 3), 1e-30)
    q = power / med[b]
    q[r < 3 * step] = 0  # the image's own envelope and the window's leak
    return q


def find_peaks(q: np.ndarray, logp: np.ndarray, band: tuple[float, float] = (0.0, 1.0),
               n: int = MAX_PEAKS) -> np.ndarray:
    """Strongest local maxima in one half plane with |f| in `band` (cycles/px), as sub-pixel (fx, fy),
    strongest first."""
    ny, nx = q.shape
    fr = np.hypot(((np.arange(ny) - ny // 2) / ny)[:, None], ((np.arange(nx) - nx // 2) / nx)[None, :])
    m = (q == ndimage.maximum_filter(q, 5)) & (q > DETECT_Q) & (fr >= band[0]) & (fr <= band[1])
    m[:1], m[-1:], m[:, :1], m[:, -1:] = False, False, False, False
    iy, ix = np.nonzero(m)
    keep = (iy > ny // 2) | ((iy == ny // 2) & (ix > nx // 2))
    iy, ix = iy[keep], ix[keep]
    order = np.argsort(-q[iy, ix])[:n]
    iy, ix = iy[order], ix[order]
    dy = _vertex(logp[iy - 1, ix], logp[iy, ix], logp[iy + 1, ix])
    dx = _vertex(logp[iy, ix - 1], logp[iy, ix], logp[iy, ix + 1])
    return np.stack([(ix + dx - nx // 2) / nx, (iy + dy - ny // 2) / ny], 1)


def _vertex(lm, l0, lp):
    """Offset of a parabola's vertex through three equally spaced samples (clipped to +-0.5)."""
    lm, l0, lp = np.asarray(lm, float), np.asarray(l0, float), np.asarray(lp, float)
    d = lm - 2 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(d < 0, 0.5 * (lm - lp) / d, 0.0)
    return np.clip(np.nan_to_num(v), -0.5, 0.5)


def refine_spot(q: np.ndarray, logp: np.ndarray, fx: float, fy: float) -> tuple[float, float, float] | None:
    """Sub-pixel position (cycles/px) and strength of the spot nearest the prediction, or None."""
    ny, nx = q.shape
    cy, cx = fy * ny + ny // 2, fx * nx + nx // 2
    w = max(2, int(np.ceil(0.04 * np.hypot(fy * ny, fx * nx))))
    y0, y1 = int(round(cy)) - w, int(round(cy)) + w + 1
    x0, x1 = int(round(cx)) - w, int(round(cx)) + w + 1
    if y0 < 1 or x0 < 1 or y1 > ny - 1 or x1 > nx - 1:
        return None
    win = q[y0:y1, x0:x1]
    iy, ix = np.unravel_index(np.argmax(win), win.shape)
    py, px = y0 + iy, x0 + ix
    if q[py, px] < SPOT_Q:
        return None

    dy = float(_vertex(logp[py - 1, px], logp[py, px], logp[py + 1, px]))
    dx = float(_vertex(logp[py, px - 1], logp[py, px], logp[py, px + 1]))
    return (px + dx - nx // 2) / nx, (py + dy - ny // 2) / ny, float(q[py, px])


__all__ = ["DETECT_Q", "SPOT_Q", "Spectrum", "find_peaks", "image_spectrum", "power_spectrum",
           "ratio_map", "refine_spot"]
