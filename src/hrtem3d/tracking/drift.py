"""Specimen drift between movie frames, from phase correlation of whole frames."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft
from skimage.filters import window


@dataclass(frozen=True)
class DriftReference:
    """A movie's reference frame and its windowed spectrum, transformed once for all the frames compared
    with it (`drift_reference`)."""

    image: np.ndarray
    spectrum: np.ndarray


def drift_reference(image: np.ndarray) -> DriftReference:
    """`image` `[y, x]` as the reference of `frame_shift`, its spectrum computed once."""
    return DriftReference(image, _spectrum(image))


def frame_shift(reference: np.ndarray | DriftReference, image: np.ndarray, upsample: int = 20,
                bin: int = 1) -> tuple[float, float]:
    """Shift (dx, dy) in pixels of `image` relative to `reference`: image(r) ≈ reference(r - shift).

    Both images are Hann-windowed so the frame edges do not dominate; a particle in
    vacuum registers on its outline and lattice together. The lattice alone repeats
    every few Å, so shifts of a lattice period are ambiguous when a crystal fills the
    whole frame; drift within a movie is far smaller than the field of view, and frames
    are compared with one fixed reference.

    Args:
        reference, image: 2D arrays of one shape (any intensity scale); `reference` may be a
            `DriftReference`, which saves transforming it again for every frame.
        upsample: sub-pixel precision 1/upsample pixel (of these images).
        bin: correlate only the lowest 1/bin of the spatial frequencies along each axis (the spectra
            cropped, so the shift theorem still holds exactly; the search and its refinement then run
            on bin² times fewer points). What is left out is the band above 1/(2 bin) cycles per pixel,
            which phase correlation would weigh as much as the rest although in a movie of a particle
            in vacuum it is mostly shot noise.

    Returns:
        (dx, dy) in pixels of these images.

    Example:
        >>> from scipy.ndimage import fourier_shift, gaussian_filter
        >>> img = gaussian_filter(np.random.default_rng(0).normal(size=(128, 128)), 1)
        >>> moved = np.fft.ifft2(fourier_shift(np.fft.fft2(img), (-1.5, 2.25))).real  # (y, x) for scipy
        >>> [round(v, 2) for v in frame_shift(img, moved, bin=2)]
        [2.25, -1.5]
    """
    ref = reference if isinstance(reference, DriftReference) else drift_reference(reference)
    if ref.image.shape != image.shape:
        raise ValueError(f"frames differ in shape: {ref.image.shape} vs {image.shape}")
    spectra = [ref.spectrum, _spectrum(image)]
    if bin > 1:
        spectra = [_low_band(f, bin) for f in spectra]
    dy, dx = _phase_peak(spectra[1] * spectra[0].conj(), upsample * bin)
    return dx * bin, dy * bin


def _phase_peak(cross: np.ndarray, upsample: int) -> tuple[float, float]:
    """Where the phase correlation of a cross-power spectrum `[ky, kx]` (unshifted) peaks, (dy, dx) pixels to
    1/upsample: the integer peak of its inverse FFT, then a matrix DFT on a 1.5-pixel square about it
    (Guizar-Sicairos et al. 2008, as skimage's `phase_cross_correlation`; two small matrix products)."""
    cross = cross / np.maximum(np.abs(cross), 1e-300)
    corr = np.abs(sfft.ifft2(cross, workers=-1))
    ny, nx = cross.shape
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    peak = np.array([iy - ny if iy > ny // 2 else iy, ix - nx if ix > nx // 2 else ix], float)
    n_up = int(np.ceil(1.5 * upsample))
    off = (np.arange(n_up) - n_up // 2) / upsample
    ky = np.exp(2j * np.pi * np.outer(peak[0] + off, sfft.fftfreq(ny)))
    kx = np.exp(2j * np.pi * np.outer(sfft.fftfreq(nx), peak[1] + off))
    with _blas().limit(limits=1, user_api="blas"):  # small products; BLAS threads would busy-wait after
        up = np.abs(ky @ cross @ kx)  # them and slow the network that runs next (track: 10-30 %)
    jy, jx = np.unravel_index(int(np.argmax(up)), up.shape)
    return float(peak[0] + off[jy]), float(peak[1] + off[jx])


def _spectrum(a: np.ndarray) -> np.ndarray:
    """FFT of `a` minus its mean, Hann-windowed."""
    return sfft.fft2((a - a.mean()) * _hann(a.shape), workers=-1)


@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@lru_cache(maxsize=4)
def _hann(shape: tuple[int, int]) -> np.ndarray:
    return window("hann", shape)


def _low_band(spectrum: np.ndarray, bin: int) -> np.ndarray:
    """The lowest `1 / bin` of an unshifted 2D spectrum's frequencies along each axis, unshifted layout: the
    spectrum of the image band-limited and sampled `bin` times coarser (a shift keeps its meaning)."""
    ny, nx = spectrum.shape
    my, mx = ny // bin, nx // bin
    iy = np.r_[0:(my + 1) // 2, ny - my // 2:ny]
    ix = np.r_[0:(mx + 1) // 2, nx - mx // 2:nx]
    return spectrum[np.ix_(iy, ix)]
