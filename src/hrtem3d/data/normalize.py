"""Intensity normalisation shared by training and inference.

Two schemes, named in the model file's metadata (`normalization`):

- ``"relative"`` (models from 2026-11-30 on): the image divided by its mean intensity, minus one,
  so that vacuum is about 0 and a column's contrast is a fraction of the incident beam, the same at
  every dose and any gain. The mean of an HRTEM image is the incident flux less what the objective
  aperture stops, so the whole frame's mean is a robust stand-in for the vacuum level, and absolute
  contrast, which carries the column's thickness, survives normalisation. It needs intensities
  proportional to electron counts (no offset); images that cannot be (mean <= 0, many negative
  pixels) fall back to the median/MAD scheme scaled to a typical relative contrast, with a warning.
- ``"median/MAD"`` (the first shipped model): zero median, unit robust scale. Throws away the
  vacuum level, so the scale of column contrast depends on dose and on how much vacuum is in view.
"""

from __future__ import annotations

import warnings

import numpy as np

RELATIVE = "relative"
MEDIAN_MAD = "median/MAD"
STANDARD = "mean/std"  # per-image standardisation: the robustness benchmark's plain baseline
NORMALIZATIONS = (RELATIVE, MEDIAN_MAD, STANDARD)
# MAD of the relative contrast of a typical test image at 1000 e/Å² (0.16 Å/px): the scale the
# fallback gives images that are not intensities
TYPICAL_RELATIVE_MAD = 0.14


def normalize_image(image: np.ndarray, subsample: int = 3) -> np.ndarray:
    """Zero median, unit robust scale (1.4826 x median absolute deviation).

    Works for raw counts or any intensity scale. `subsample` takes every n-th pixel
    along each axis to estimate the statistics (faster, same result to a percent).
    Falls back to the standard deviation, then to 1, for flat images.

    Example:
        >>> x = normalize_image(np.random.default_rng(0).poisson(50, (64, 64)).astype(float))
        >>> abs(float(np.median(x))) < 0.2
        True
    """
    image = np.asarray(image, dtype=np.float32)
    sample = _sample(image, subsample)
    med = np.median(sample)
    mad = 1.4826 * np.median(np.abs(sample - med))
    if not np.isfinite(mad) or mad <= 1e-12 * max(abs(float(med)), 1.0):
        mad = float(np.std(sample)) or 1.0
    return (image - med) / mad


def standardize_image(image: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the whole image; a flat image gets std 1.

    Example:
        >>> x = standardize_image(np.arange(16.0).reshape(4, 4))
        >>> round(float(x.mean()), 6), round(float(x.std()), 6)
        (0.0, 1.0)
    """
    image = np.asarray(image, dtype=np.float32)
    sd = float(image.std())
    return (image - np.float32(image.mean())) / np.float32(sd if np.isfinite(sd) and sd > 0 else 1.0)


def mean_intensity(image: np.ndarray, subsample: int = 3) -> float | None:
    """Mean intensity (values above the 99.9th percentile capped, against hot pixels), or None if `image` does not
    look like intensities: mean <= 0, or its 1st percentile below minus half the mean."""
    sample = _sample(np.asarray(image, dtype=np.float32), subsample)
    lo, hi = np.percentile(sample, [1.0, 99.9])
    mean = float(np.mean(np.minimum(sample, hi)))
    if not np.isfinite(mean) or mean <= 0 or lo < -0.5 * mean:
        return None
    return mean


def relative_contrast(image: np.ndarray, subsample: int = 3, mean: float | None = None) -> np.ndarray:
    """Image over its mean intensity, minus one (vacuum about 0, dimensionless).

    Args:
        image: intensities proportional to electron counts (raw counts, or counts times any gain).
        subsample: every n-th pixel along each axis estimates the mean.
        mean: the flux to divide by, if known (e.g. counts per pixel in vacuum); default: the image's mean.

    Images that are not intensities (see `mean_intensity`) get the median/MAD scheme scaled to
    `TYPICAL_RELATIVE_MAD`, with a warning.

    Example:
        >>> x = relative_contrast(np.random.default_rng(0).poisson(400, (64, 64)).astype(float))
        >>> abs(float(x.mean())) < 0.01 and 0.03 < float(x.std()) < 0.07
        True
    """
    image = np.asarray(image, dtype=np.float32)
    mean = mean if mean is not None else mean_intensity(image, subsample)
    if mean is None:
        warnings.warn("the image has no positive mean intensity (an offset, or already normalised): "
                      "its contrast scale is guessed, so depths are less reliable; pass raw counts if you can",
                      stacklevel=2)
        return normalize_image(image, subsample) * np.float32(TYPICAL_RELATIVE_MAD)
    return image / np.float32(mean) - np.float32(1.0)


def noise_level(image: np.ndarray) -> float:
    """Pixel noise of an image (its own units) from 2x2 checkerboard differences, robust (MAD).

    The difference a - b - c + d of each 2x2 block cancels smooth signal to second order and has
    twice the standard deviation of white pixel noise. On a relative-contrast image it measures the
    dose: about 1 / sqrt(electrons per pixel).

    Example:
        >>> img = np.random.default_rng(0).normal(0, 0.1, (128, 128))
        >>> round(noise_level(img), 2)
        0.1
    """
    d = checkerboard(image)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / 2)


def checkerboard(image: np.ndarray) -> np.ndarray:
    """The difference a - b - c + d of each 2x2 block of `image` (float32, odd last row/column dropped):
    smooth signal cancels, white pixel noise of standard deviation s gives 2 s."""
    a = np.asarray(image, dtype=np.float32)
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]
    return a[0::2, 0::2] - a[1::2, 0::2] - a[0::2, 1::2] + a[1::2, 1::2]


def normalizer(name: str):
    """The normalisation function a model's metadata names."""
    if name == RELATIVE:
        return relative_contrast
    if name in (MEDIAN_MAD, "", None):
        return normalize_image
    if name == STANDARD:
        return standardize_image
    raise ValueError(f"unknown normalization {name!r}")


def _sample(image: np.ndarray, subsample: int) -> np.ndarray:
    return image[..., ::subsample, ::subsample] if min(image.shape[-2:]) >= 8 * subsample else image
