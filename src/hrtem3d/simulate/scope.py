"""What a real microscope adds to an image, drawn per training sample.

Simulated HRTEM images have 2 to 3 times the lattice contrast of experiments (the Stobbs
factor: thermal diffuse and inelastic scattering, detector MTF, vibration) and come at the
simulator's own pixel size. `ScopeEnvelope` draws, for each training image, what the user does
not control: the camera's native pixel size and the error of its calibration, residual
aberrations (two-fold and three-fold astigmatism, axial coma), vibration, a diffuse background,
the detector MTF, and an amorphous support film. The functions here apply them to intensities
`[y, x]` (vacuum 1); `hrtem3d.data.dataset` then forms the image through the inference path.

Example:
    >>> import numpy as np
    >>> env = ScopeEnvelope()
    >>> acq = env.sample(np.random.default_rng(0))
    >>> env.pixel_size_A[0] <= acq.native_pixel_A <= env.pixel_size_A[1]
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft as sfft

from hrtem3d.simulate.optics import Detector, Optics


@dataclass
class Acquisition:
    """One drawn acquisition: how the camera sampled the image and what blurred it.

    Attributes:
        native_pixel_A: true pixel size of the camera at the specimen (Å).
        stated_pixel_A: the pixel size the file claims (Å): the true one times a calibration error.
        film_layers: amorphous carbon support film, in 1 nm layers (0 = none).
        vibration_A: r.m.s. specimen vibration along its major axis (Å, Gaussian blur of the intensity).
        vibration_ratio: minor / major axis of the vibration (0..1).
        vibration_angle_deg: direction of the major axis (degrees from x).
        background: diffuse incoherent background as a fraction b of the mean intensity; the lattice
            contrast is divided by 1 + b.
        background_ripple: relative amplitude of the background's slow variation across the field.
        background_period_A: the shortest period of that variation (Å; 0: one cycle across the field).
    """

    native_pixel_A: float = 0.16
    stated_pixel_A: float = 0.16
    film_layers: int = 0
    vibration_A: float = 0.0
    vibration_ratio: float = 1.0
    vibration_angle_deg: float = 0.0
    background: float = 0.0
    background_ripple: float = 0.0
    background_period_A: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScopeEnvelope:
    """Ranges of what the microscope adds (training draws each effect with probability `p_effect`).

    With probability `p_clean` a sample gets none of the effects (only the native pixel size, its
    calibration error and the resampling `segment` applies), so the ideal-image case keeps its share
    of the training signal instead of 1 in 2^7.

    Units: pixel sizes in Å, calibration_error relative (1 sigma), film in nm, aberrations in nm,
    vibration in Å (sigma), background as a fraction of the mean intensity, mtf_half as a fraction
    of the native Nyquist frequency (MTF 0.5 there).
    """

    pixel_size_A: tuple[float, float] = (0.045, 0.16)
    calibration_error: float = 0.03
    film_nm: tuple[int, int] = (1, 4)
    c12_nm: tuple[float, float] = (0.0, 4.0)
    c21_nm: tuple[float, float] = (0.0, 180.0)
    c23_nm: tuple[float, float] = (0.0, 120.0)
    vibration_A: tuple[float, float] = (0.02, 0.3)
    background: tuple[float, float] = (0.1, 1.5)
    background_ripple: tuple[float, float] = (0.0, 0.4)
    background_period_A: tuple[float, float] = (12.0, 60.0)
    p_ripple: float = 1.0
    mtf_half: tuple[float, float] = (0.25, 1.5)
    p_effect: float = 0.5
    p_pixel_sinc: float = 0.5
    p_clean: float = 0.25

    def validate(self) -> None:
        """Raise ValueError for impossible ranges."""
        for k, v in asdict(self).items():
            if isinstance(v, tuple) and not 0 <= v[0] <= v[1]:
                raise ValueError(f"{k}: need 0 <= min <= max, got {v}")
        if self.pixel_size_A[0] <= 0 or self.mtf_half[0] <= 0:
            raise ValueError("pixel sizes and mtf_half must be positive")
        probs = (self.p_effect, self.p_pixel_sinc, self.p_clean, self.p_ripple)
        if not all(0 <= q <= 1 for q in probs) or self.calibration_error < 0:
            raise ValueError("probabilities must lie in 0..1 and the calibration error be >= 0")

    def sample(self, rng: np.random.Generator, optics: Optics | None = None,
               detector: Detector | None = None) -> Acquisition:
        """Draw one acquisition; residual aberrations go into `optics` and the MTF into `detector` (in place)."""
        u = rng.uniform
        on = lambda: rng.random() < self.p_effect  # noqa: E731
        p = float(u(*self.pixel_size_A))
        acq = Acquisition(native_pixel_A=p, stated_pixel_A=p * float(np.exp(rng.normal(0, self.calibration_error))))
        if rng.random() < self.p_clean:
            return acq
        if on():
            acq.film_layers = int(rng.integers(self.film_nm[0], self.film_nm[1] + 1))
        if on():
            acq.vibration_A = float(u(*self.vibration_A))
            acq.vibration_ratio, acq.vibration_angle_deg = float(u(0.3, 1.0)), float(u(0, 180))
        if on():
            acq.background, acq.background_ripple = float(u(*self.background)), self.draw_ripple(rng)
            acq.background_period_A = float(u(*self.background_period_A))
        if optics is not None:
            optics.c12_A = float(u(*self.c12_nm)) * 10 if on() else optics.c12_A
            optics.phi12_deg = float(u(0, 180))
            if on():
                optics.c21_A, optics.phi21_deg = float(u(*self.c21_nm)) * 10, float(u(0, 360))
            if on():
                optics.c23_A, optics.phi23_deg = float(u(*self.c23_nm)) * 10, float(u(0, 120))
        if detector is not None:
            detector.mtf_half = float(u(*self.mtf_half))
            detector.pixel_sinc = bool(rng.random() < self.p_pixel_sinc)
        return acq

    def draw_ripple(self, rng: np.random.Generator) -> float:
        """A background's relative variation: none on a share 1 - `p_ripple`, else uniform in `background_ripple`
        (at `p_ripple` 1 no extra number is drawn, so the draws are those of an envelope without the share)."""
        if self.p_ripple < 1 and rng.random() >= self.p_ripple:
            return 0.0
        return float(rng.uniform(*self.background_ripple))

    def to_dict(self) -> dict:
        return asdict(self)


def vibrate(intensity: np.ndarray, acq: Acquisition, sampling_A: float) -> np.ndarray:
    """Anisotropic Gaussian blur of the intensity by the specimen's vibration (mean kept)."""
    if acq.vibration_A <= 0:
        return intensity
    ky = sfft.fftfreq(intensity.shape[0], sampling_A)[:, None]
    kx = sfft.rfftfreq(intensity.shape[1], sampling_A)[None, :]
    t = np.deg2rad(acq.vibration_angle_deg)
    ku, kv = np.cos(t) * kx + np.sin(t) * ky, -np.sin(t) * kx + np.cos(t) * ky
    s1, s2 = acq.vibration_A, acq.vibration_A * acq.vibration_ratio
    f = np.exp(-2 * np.pi**2 * ((s1 * ku) ** 2 + (s2 * kv) ** 2)).astype(np.float32)
    return sfft.irfft2(sfft.rfft2(intensity, workers=1) * f, s=intensity.shape, workers=1).astype(np.float32)


def add_background(intensity: np.ndarray, acq: Acquisition, rng: np.random.Generator,
                   sampling_A: float | None = None) -> np.ndarray:
    """Diffuse incoherent background: (I + b <I> s) / (1 + b), s a smooth field of mean 1 (mean kept).

    The ripple of s is three plane waves of whole cycles across the cell (so the cell stays periodic), of
    periods down to `acq.background_period_A` when `sampling_A` (Å per pixel) is given, else one cycle
    across the cell; |s - 1| <= `acq.background_ripple`.
    """
    if acq.background <= 0:
        return intensity
    n = intensity.shape
    s = np.ones(n, np.float32)
    if acq.background_ripple > 0:  # a few slow waves across the field, whole cycles so the cell stays periodic
        yy, xx = np.mgrid[0:n[0], 0:n[1]].astype(np.float32)
        yy, xx = yy / n[0], xx / n[1]
        top = 1
        if sampling_A and acq.background_period_A > 0:  # cycles across the cell of the shortest period
            top = max(1, int(min(n) * sampling_A / acq.background_period_A))
        for _ in range(3):
            m = np.zeros(2)
            while not m.any() or m @ m > top * top:
                m = rng.integers(-top, top + 1, 2)
            k = 2 * np.pi * m
            s += np.float32(acq.background_ripple / 3) * np.cos(k[0] * yy + k[1] * xx + rng.uniform(0, 2 * np.pi))
    b = np.float32(acq.background)
    return ((intensity + b * float(intensity.mean()) * s) / (1 + b)).astype(np.float32)


def fourier_resample(image: np.ndarray, n: int) -> np.ndarray:
    """Periodic square band-limited `image` resampled to `n x n` pixels (zero-padding its spectrum), float32.

    Sample 0 stays at 0 Å and the mean is kept; exact for an intensity band-limited below both grids'
    Nyquist frequency (an image through an objective aperture, sampled finely enough).
    """
    m = image.shape[-1]
    if n == m:
        return image.astype(np.float32)
    f = sfft.rfft2(image, workers=1)
    g = np.zeros((n, n // 2 + 1), np.complex64)
    h = min(m, n) // 2
    c = min(m // 2 + 1, n // 2 + 1)
    g[:h, :c] = f[:h, :c]
    g[-h:, :c] = f[-h:, :c]
    return (sfft.irfft2(g, s=(n, n), workers=1) * np.float32((n * n) / (m * m))).astype(np.float32)
