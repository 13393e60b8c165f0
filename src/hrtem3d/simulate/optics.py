"""Electron optics, detector and shot noise applied to a stored exit wave, per sample.

The transfer function follows abTEM's conventions exactly (tested against
`abtem.CTF`): chi(k) = 2 pi / lambda * (C10 a^2/2 + C12 a^2/2 cos 2(phi - phi12)
+ C21 a^3/3 cos(phi - phi21) + C23 a^3/3 cos 3(phi - phi23) + C30 a^4/4 + C50 a^6/6),
a = lambda k; positive C10 is overfocus. C21 (axial coma) and C23 (three-fold astigmatism)
are the residual aberrations a real, imperfectly tuned corrector leaves. The temporal
envelope uses the focal spread as a 1/e width, the spatial envelope the angular
spread (mrad), the objective aperture is hard-edged. Arrays are `[y, x]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength (Å) at `energy_eV` (0.019687 Å at 300 kV)."""
    m0c2 = 510998.95
    hc = 12398.419843320026  # eV Å
    return hc / np.sqrt(energy_eV * (2 * m0c2 + energy_eV))


@dataclass
class Optics:
    """Objective-lens state. Lengths in Å, angles in mrad / degrees.

    Attributes:
        c1_A: C10 (defocus with abTEM's sign: positive = overfocus), Å.
        c3_A: spherical aberration C30, Å (negative for NCSI).
        c5_A: fifth-order spherical aberration C50, Å.
        c12_A: two-fold astigmatism magnitude, Å; phi12_deg its azimuth, degrees.
        c21_A: axial coma magnitude, Å; phi21_deg its azimuth, degrees.
        c23_A: three-fold astigmatism magnitude, Å; phi23_deg its azimuth, degrees.
        focal_spread_A: 1/e width of the defocus spread (abTEM's convention), Å.
        angular_spread_mrad: beam convergence (spatial coherence), mrad.
        aperture_mrad: objective aperture semi-angle, mrad.
        energy_eV: beam energy, eV.
    """

    c1_A: float = 50.0
    c3_A: float = -1e5
    c5_A: float = 0.0
    c12_A: float = 0.0
    phi12_deg: float = 0.0
    c21_A: float = 0.0
    phi21_deg: float = 0.0
    c23_A: float = 0.0
    phi23_deg: float = 0.0
    focal_spread_A: float = 30.0
    angular_spread_mrad: float = 0.0
    aperture_mrad: float = 25.0
    energy_eV: float = 300e3

    def to_dict(self) -> dict:
        return asdict(self)

    def to_abtem(self):
        """The same optics as an `abtem.CTF` (for cross-checks and users who want abTEM)."""
        import abtem

        return abtem.CTF(
            energy=self.energy_eV, semiangle_cutoff=self.aperture_mrad, soft=False,
            focal_spread=self.focal_spread_A, angular_spread=self.angular_spread_mrad,
            aberration_coefficients={"C10": self.c1_A, "C30": self.c3_A, "C50": self.c5_A,
                                     "C12": self.c12_A, "phi12": np.deg2rad(self.phi12_deg),
                                     "C21": self.c21_A, "phi21": np.deg2rad(self.phi21_deg),
                                     "C23": self.c23_A, "phi23": np.deg2rad(self.phi23_deg)})


@lru_cache(maxsize=16)
def angular_grid(shape: tuple[int, int], sampling_A: float, wavelength: float):
    """(alpha^2, cos 2 phi, sin 2 phi, phi) on the unshifted FFT grid `[ky, kx]`; alpha and phi in rad."""
    ky = sfft.fftfreq(shape[0], sampling_A)[:, None]
    kx = sfft.fftfreq(shape[1], sampling_A)[None, :]
    alpha2 = (kx**2 + ky**2) * wavelength**2
    phi = np.arctan2(ky, kx)
    return alpha2, np.cos(2 * phi), np.sin(2 * phi), phi


def transfer_function(optics: Optics, shape: tuple[int, int], sampling_A: float) -> np.ndarray:
    """Coherent transfer function with envelopes, unshifted FFT layout, `[ky, kx]`, complex64."""
    grid = angular_grid(tuple(shape), float(sampling_A), wavelength_A(optics.energy_eV))
    return transfer_at(optics, *grid)


def transfer_at(optics: Optics, alpha2: np.ndarray, cos2phi: np.ndarray, sin2phi: np.ndarray,
                phi: np.ndarray | None = None) -> np.ndarray:
    """Transfer function at given scattering angles (alpha^2 in rad^2, cos/sin of 2 phi, phi in rad), complex64.

    Evaluating it only where the aperture is open saves most of the work per image. `phi` is
    needed only for the odd aberrations (C21, C23).
    """
    lam = wavelength_A(optics.energy_eV)
    a2 = alpha2
    f = np.float32 if alpha2.dtype == np.float32 else float
    phi12 = np.deg2rad(optics.phi12_deg)
    c, s = f(np.cos(2 * phi12)), f(np.sin(2 * phi12))
    c1 = f(optics.c1_A) + f(optics.c12_A) * (cos2phi * c + sin2phi * s)  # C10 + C12 cos 2(phi - phi12)
    a4 = a2 * a2
    k = f(2 * np.pi / lam)
    chi = k * (a2 * (c1 / 2) + a4 * f(optics.c3_A / 4) + a4 * a2 * f(optics.c5_A / 6))
    if optics.c21_A or optics.c23_A:
        if phi is None:
            raise ValueError("coma (C21) and three-fold astigmatism (C23) need the azimuth phi")
        a3 = a2 * np.sqrt(a2)
        odd = (f(optics.c21_A) * np.cos(phi - f(np.deg2rad(optics.phi21_deg)))
               + f(optics.c23_A) * np.cos(3 * (phi - f(np.deg2rad(optics.phi23_deg)))))
        chi = chi + k * a3 * odd / f(3)
    env = np.exp(-((f(0.5 * np.pi / lam * optics.focal_spread_A) * a2) ** 2))
    if optics.angular_spread_mrad:
        a = np.sqrt(a2)
        dchi_dk = k * (c1 * a + optics.c3_A * a2 * a + optics.c5_A * a4 * a)
        dchi_dphi = -k * optics.c12_A * (sin2phi * c - cos2phi * s) * a
        env = env * np.exp(-((optics.angular_spread_mrad / 2e3) ** 2) * (dchi_dk**2 + dchi_dphi**2))
    env = env * (a2 <= f((optics.aperture_mrad / 1e3) ** 2))
    out = np.empty(chi.shape, np.complex64)
    out.real = env * np.cos(chi)
    out.imag = -env * np.sin(chi)
    return out


def image_intensity(wave: np.ndarray, optics: Optics, sampling_A: float) -> np.ndarray:
    """Image intensity (vacuum = 1) of exit wave(s) `[..., y, x]`; frozen-phonon axis averaged."""
    wave = np.asarray(wave, dtype=np.complex64)
    h = transfer_function(optics, wave.shape[-2:], sampling_A)
    psi = sfft.ifft2(sfft.fft2(wave, workers=1) * h, workers=1)
    inten = psi.real**2 + psi.imag**2
    if inten.ndim == 3:
        inten = inten.mean(0)
    return inten.astype(np.float32)


@dataclass
class Detector:
    """Detection: dose, detector blur, drift.

    Attributes:
        dose_e_per_A2: electron dose (e/Å²).
        mtf_half: spatial frequency where the detector MTF falls to 0.5, as a
            fraction of the image Nyquist frequency (MTF(q) = 1 / (1 + (q / mtf_half)^2)).
        drift_A: length of linear drift blur during the exposure (Å).
        drift_angle_deg: direction of the drift (degrees from x).
        pixel_sinc: also the transfer of a square pixel's area, sinc(q / 2) along x and y (a
            counting detector's MTF, before charge sharing).
    """

    dose_e_per_A2: float = 1000.0
    mtf_half: float = 1.0
    drift_A: float = 0.0
    drift_angle_deg: float = 0.0
    pixel_sinc: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def detect(intensity: np.ndarray, detector: Detector, sampling_A: float,
           rng: np.random.Generator) -> np.ndarray:
    """Counts per pixel: Poisson shot noise at the dose, then detector MTF and drift blur.

    The expected count in vacuum is dose x pixel area (e/Å² x Å²); blurs keep the mean.
    """
    lam = np.clip(intensity, 0, None) * (detector.dose_e_per_A2 * sampling_A**2)
    return blur(shot_noise(lam, rng), detector, sampling_A)


def shot_noise(lam: np.ndarray, rng: np.random.Generator, exact_below: float = 50.0) -> np.ndarray:
    """Poisson counts with mean `lam` (electrons per pixel), float32.

    Pixels with a mean below `exact_below` are drawn from the Poisson distribution itself;
    brighter ones from its normal limit N(lam, lam), rounded and clipped at 0 (skewness
    below 0.14 there), which is about eight times faster.
    """
    lam = np.asarray(lam, np.float32)
    high = lam >= exact_below
    if not high.any():
        return rng.poisson(lam).astype(np.float32)
    out = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32))
    np.maximum(out, 0, out=out)
    if not high.all():
        low = ~high
        out[low] = rng.poisson(lam[low])
    return out.astype(np.float32)


def blur(image: np.ndarray, detector: Detector, sampling_A: float) -> np.ndarray:
    """Detector MTF and linear drift blur in Fourier space (mean preserved)."""
    if detector.mtf_half <= 0 and detector.drift_A <= 0 and not detector.pixel_sinc:
        return image
    qx, qy, q2 = _blur_grid(image.shape)
    f = np.ones(q2.shape, np.float32)
    if detector.mtf_half > 0:
        f = f / (1 + q2 / np.float32(detector.mtf_half**2))
    if detector.pixel_sinc:
        f = f * (np.sinc(qx / 2) * np.sinc(qy / 2)).astype(np.float32)
    if detector.drift_A > 0:
        t = np.deg2rad(detector.drift_angle_deg)
        length_px = detector.drift_A / sampling_A
        proj = (np.cos(t) * qx + np.sin(t) * qy) / 2 * length_px  # cycles over the drift
        f = f * np.sinc(proj).astype(np.float32)
    return sfft.irfft2(sfft.rfft2(image, workers=1) * f, s=image.shape, workers=1).astype(np.float32)


@lru_cache(maxsize=8)
def _blur_grid(shape: tuple[int, int]):
    qy = (sfft.fftfreq(shape[0])[:, None] * 2).astype(np.float32)  # fraction of Nyquist
    qx = (sfft.rfftfreq(shape[1])[None, :] * 2).astype(np.float32)
    return qx, qy, qx**2 + qy**2


@dataclass
class OpticsEnvelope:
    """Ranges the training images are drawn from (DESIGN.md operating envelope).

    Units: c1_nm (nm, + = overfocus), c3_um (µm), c5_mm (mm), focal_spread_A (Å, 1/e),
    angular_spread_mrad, c12_nm (nm), aperture_mrad, dose (e/Å², drawn log-uniformly),
    mtf_half (fraction of Nyquist), drift_A (Å).
    """

    c1_nm: tuple[float, float] = (0.0, 10.0)
    c3_um: tuple[float, float] = (-15.0, -5.0)
    c5_mm: tuple[float, float] = (0.0, 10.0)
    focal_spread_A: tuple[float, float] = (20.0, 50.0)
    angular_spread_mrad: tuple[float, float] = (0.0, 0.3)
    c12_nm: tuple[float, float] = (0.0, 1.0)
    aperture_mrad: tuple[float, float] = (20.0, 30.0)
    dose: tuple[float, float] = (100.0, 10000.0)
    mtf_half: tuple[float, float] = (0.6, 1.5)
    drift_A: tuple[float, float] = (0.0, 0.3)
    energy_eV: float = 300e3

    def validate(self) -> None:
        """Raise ValueError for impossible ranges."""
        for name, (lo, hi) in self._ranges():
            if not lo <= hi:
                raise ValueError(f"{name}: min {lo} is above max {hi}")
        if self.dose[0] <= 0:
            raise ValueError(f"dose must be positive, got {self.dose}")
        if self.aperture_mrad[0] <= 0 or self.focal_spread_A[0] < 0 or self.c12_nm[0] < 0:
            raise ValueError("aperture must be positive; focal spread and astigmatism non-negative")
        if self.mtf_half[0] <= 0 or self.drift_A[0] < 0 or self.angular_spread_mrad[0] < 0:
            raise ValueError("mtf_half must be positive; drift and angular spread non-negative")

    def _ranges(self):
        return [(k, v) for k, v in asdict(self).items() if isinstance(v, tuple)]

    def sample(self, rng: np.random.Generator, dose: float | None = None) -> tuple[Optics, Detector]:
        """Draw one optics state and one detector state (dose log-uniform unless given)."""
        u = rng.uniform
        optics = Optics(
            c1_A=u(*self.c1_nm) * 10, c3_A=u(*self.c3_um) * 1e4, c5_A=u(*self.c5_mm) * 1e7,
            c12_A=u(*self.c12_nm) * 10, phi12_deg=u(0, 180),
            focal_spread_A=u(*self.focal_spread_A), angular_spread_mrad=u(*self.angular_spread_mrad),
            aperture_mrad=u(*self.aperture_mrad), energy_eV=self.energy_eV)
        if dose is None:
            dose = float(np.exp(u(np.log(self.dose[0]), np.log(self.dose[1]))))
        det = Detector(dose_e_per_A2=dose, mtf_half=u(*self.mtf_half), drift_A=u(*self.drift_A),
                       drift_angle_deg=u(0, 360))
        return optics, det

    def to_dict(self) -> dict:
        return asdict(self)
