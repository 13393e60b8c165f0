"""Input normalisation: relative contrast keeps the vacuum level, median/MAD does not."""

import numpy as np
import pytest

from hrtem3d.data.normalize import (
    MEDIAN_MAD,
    RELATIVE,
    TYPICAL_RELATIVE_MAD,
    mean_intensity,
    normalize_image,
    normalizer,
    relative_contrast,
)


def _frame(dose_per_px: float, rng: np.random.Generator) -> np.ndarray:
    """Vacuum at 1 with a 16x16 square of 30 % brighter 'column' in the middle, Poisson counts."""
    clean = np.ones((96, 96))
    clean[40:56, 40:56] = 1.3
    return rng.poisson(clean * dose_per_px).astype(np.float32)


def test_relative_contrast_is_the_same_at_any_dose_and_gain():
    rng = np.random.default_rng(0)
    for dose, gain in ((200.0, 1.0), (5000.0, 1.0), (5000.0, 37.5)):
        x = relative_contrast(_frame(dose, rng) * gain)
        contrast = x[42:54, 42:54].mean() - x[:30, :30].mean()
        assert contrast == pytest.approx(0.3, abs=0.03), (dose, gain)


def test_median_mad_contrast_depends_on_dose():
    rng = np.random.default_rng(1)
    lo, hi = (normalize_image(_frame(d, rng)) for d in (200.0, 5000.0))
    c_lo = lo[42:54, 42:54].mean() - lo[:30, :30].mean()
    c_hi = hi[42:54, 42:54].mean() - hi[:30, :30].mean()
    assert c_hi > 3 * c_lo   # the scale follows the vacuum noise, so contrast grows with sqrt(dose)


def test_hot_pixels_barely_move_the_mean():
    rng = np.random.default_rng(2)
    img = _frame(1000.0, rng)
    hot = img.copy()
    hot[[5, 17, 60, 77, 90], [3, 70, 12, 50, 88]] = 1e7  # 0.05 % of the pixels
    assert mean_intensity(hot, subsample=1) == pytest.approx(mean_intensity(img, subsample=1), rel=0.05)


def test_images_that_are_not_intensities_fall_back_with_a_warning():
    rng = np.random.default_rng(3)
    img = _frame(1000.0, rng)
    standardised = (img - img.mean()) / img.std()
    assert mean_intensity(standardised) is None
    with pytest.warns(UserWarning, match="no positive mean"):
        x = relative_contrast(standardised)
    mad = 1.4826 * np.median(np.abs(x - np.median(x)))
    assert mad == pytest.approx(TYPICAL_RELATIVE_MAD, rel=0.05)


def test_normalizer_names():
    assert normalizer(RELATIVE) is relative_contrast
    assert normalizer(MEDIAN_MAD) is normalize_image
    with pytest.raises(ValueError):
        normalizer("zscore")


def test_standardisation_is_named_and_scale_free():
    from hrtem3d.data.normalize import STANDARD, normalizer

    rng = np.random.default_rng(0)
    img = rng.poisson(300, (64, 64)).astype(np.float32)
    f = normalizer(STANDARD)
    a, b = f(img), f(7.0 * img + 100.0)  # any gain and offset give the same input
    assert np.allclose(a, b, atol=1e-4)
    assert abs(float(a.mean())) < 1e-5 and float(a.std()) == pytest.approx(1.0, rel=1e-5)


def test_relative_contrast_is_zero_at_the_mean_and_linear():
    """Analytic: x = I / mean - 1; a flat image is 0 everywhere, twice the mean is 1, a given flux divides."""
    flat = np.full((60, 60), 37.0, np.float32)
    assert np.abs(relative_contrast(flat)).max() < 1e-6
    img = flat.copy()
    img[:30] = 74.0  # half at twice the other half: the mean is 55.5
    x = relative_contrast(img, subsample=1)
    assert x[0, 0] == pytest.approx(74 / 55.5 - 1, abs=1e-5) and x[-1, 0] == pytest.approx(37 / 55.5 - 1, abs=1e-5)
    assert relative_contrast(img, mean=37.0)[-1, 0] == pytest.approx(0.0, abs=1e-6)


def test_noise_level_ignores_smooth_signal():
    """White noise of 0.1 on a smooth bright blob (peak 100): the checkerboard difference cancels the blob."""
    from hrtem3d.data.normalize import noise_level

    yy, xx = np.mgrid[:128, :128]
    blob = 100 * np.exp(-((xx - 64.0) ** 2 + (yy - 60.0) ** 2) / (2 * 20.0**2))
    noisy = blob + np.random.default_rng(3).normal(0, 0.1, blob.shape)
    assert noise_level(noisy) == pytest.approx(0.1, rel=0.1)
    assert noise_level(blob) < 0.02  # curvature residual only


def test_mean_intensity_of_small_offset_and_odd_images():
    """Small images use every pixel; counts with a small dark offset are still intensities; odd,
    non-square images have a noise level."""
    from hrtem3d.data.normalize import noise_level

    small = np.ones((12, 12), np.float32)
    small[:, 1] = 5.0  # one bright column: only a full read sees it
    assert mean_intensity(small) == pytest.approx((11 + 5) / 12, rel=1e-6)
    offset = np.random.default_rng(4).poisson(2.0, (96, 96)).astype(np.float32) - 0.5  # 1st percentile -0.5
    assert mean_intensity(offset) == pytest.approx(1.5, abs=0.05)
    assert mean_intensity(np.random.default_rng(5).normal(1.0, 3.0, (96, 96))) is None  # not intensities
    odd = np.random.default_rng(6).normal(0, 0.2, (41, 64))
    assert noise_level(odd) == pytest.approx(0.2, rel=0.15)
