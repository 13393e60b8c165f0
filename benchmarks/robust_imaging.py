"""Image formation for the robustness sets, by code paths unlike hrtem3d's training simulator.

Everything is done with abTEM at a fine grid (potential sampling 0.05 Å or finer): the multislice exit
wave is never resampled; abTEM's own `CTF` (aberrations in Å, aperture in mrad, focal spread as a 1/e
width in Å) is applied to it, and the intensity is brought to the image's native pixel size by an exact
Fourier crop of the band-limited intensity (point samples at x = j x pixel size, no aliasing while the
aperture's intensity band 2 alpha / lambda lies below the native Nyquist frequency). Incoherent blurs
(vibration, drift) multiply the intensity spectrum; a diffuse background is added to the intensity;
shot noise is exactly Poisson at the dose; a detector MTF then blurs the noisy counts, on the periodic
simulation cell so that no edge wraps into the image. Arrays returned here are `[y, x]`; abTEM's are `[x, y]`.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft

ENERGY_EV = 300e3
WAVELENGTH_A = 0.019687  # at 300 kV
PHONON_SIGMAS_A = {"Ce": 0.06, "O": 0.09, "C": 0.08}  # frozen-phonon displacement per direction (Å)
ADU_PER_E_BLURRED = 8  # uint16 gain when an MTF makes the counts fractional (ADU per electron)


def configure_abtem(threads: int = 1) -> None:
    """Eager abTEM evaluation, `threads` FFTW threads."""
    import abtem

    abtem.config.set({"dask.lazy": False, "fftw.threads": int(threads), "device": "cpu"})


def exit_waves(atoms, sampling_A: float, slice_A: float = 2.0, parametrization: str = "lobato",
               phonons: dict | None = None):
    """abTEM multislice exit wave(s) of `atoms` (an ase.Atoms whose cell is the simulation box, Å).

    Args:
        sampling_A: potential and wave sampling (Å); <= 0.05 recommended.
        slice_A: slice thickness (Å).
        parametrization: "lobato" or "kirkland".
        phonons: {"num_configs": n, "seed": s} for abtem.FrozenPhonons (sigmas `PHONON_SIGMAS_A`), or None.

    Returns:
        abtem.Waves, `[configs, x, y]` with phonons, else `[x, y]`; vacuum intensity 1.
    """
    import abtem

    model = atoms
    if phonons:
        present = set(atoms.get_chemical_symbols())
        model = abtem.FrozenPhonons(atoms, num_configs=int(phonons["num_configs"]),
                                    sigmas={k: v for k, v in PHONON_SIGMAS_A.items() if k in present},
                                    seed=int(phonons["seed"]))
    potential = abtem.Potential(model, sampling=sampling_A, slice_thickness=slice_A,
                                parametrization=parametrization)
    waves = abtem.PlaneWave(energy=ENERGY_EV).multislice(potential)
    return waves.compute() if hasattr(waves, "compute") and waves.is_lazy else waves


def waves_from_array(array: np.ndarray, sampling_A: float):
    """Rebuild an abtem.Waves from a stored `[x, y]` array."""
    import abtem

    return abtem.Waves(np.asarray(array, np.complex64), energy=ENERGY_EV, sampling=sampling_A)


def abtem_ctf(optics: dict):
    """abtem.CTF from an optics dict: C10, C12, phi12, C21, phi21, C23, phi23, C30, C50 (Å, rad),
    focal_spread (Å, 1/e), aperture (mrad)."""
    import abtem

    coeffs = {k: float(optics.get(k, 0.0)) for k in ("C10", "C12", "phi12", "C21", "phi21", "C23", "phi23",
                                                     "C30", "C50")}
    return abtem.CTF(semiangle_cutoff=float(optics["aperture"]), focal_spread=float(optics["focal_spread"]),
                     aberration_coefficients=coeffs, energy=ENERGY_EV)


def image_intensity(waves, optics: dict) -> np.ndarray:
    """Image intensity `[y, x]` (vacuum 1) through abTEM's CTF; frozen-phonon configurations averaged."""
    inten = waves.apply_ctf(abtem_ctf(optics)).intensity()
    if hasattr(inten, "compute") and inten.is_lazy:
        inten = inten.compute()
    a = np.asarray(inten.array, np.float64)
    if a.ndim == 3:
        a = a.mean(0)
    return a.T


def intensity_transfer(m: int, pixel_A: float, vibration: dict | None = None, drift: dict | None = None):
    """Incoherent transfer `[y, x]` (unshifted FFT layout, m x m, pixel `pixel_A` Å) of specimen vibration
    (anisotropic Gaussian: {"sigma_A", "ratio", "angle"}) and linear drift ({"length_A", "angle"}); angles rad."""
    ky = sfft.fftfreq(m, pixel_A)[:, None]
    kx = sfft.fftfreq(m, pixel_A)[None, :]
    t = np.ones((m, m))
    if vibration:
        c, s = np.cos(vibration["angle"]), np.sin(vibration["angle"])
        k1, k2 = kx * c + ky * s, -kx * s + ky * c
        s1, s2 = vibration["sigma_A"], vibration["sigma_A"] * vibration["ratio"]
        t = t * np.exp(-2 * np.pi**2 * (s1**2 * k1**2 + s2**2 * k2**2))
    if drift:
        t = t * np.sinc(drift["length_A"] * (kx * np.cos(drift["angle"]) + ky * np.sin(drift["angle"])))
    return t


def fourier_resample(image: np.ndarray, m: int, transfer: np.ndarray | None = None) -> np.ndarray:
    """Band-limited resampling of a periodic `[y, x]` image (n x n) to m x m by cropping its spectrum;
    sample j lands at j x n / m input pixels (the first samples coincide). `transfer` (m x m, unshifted)
    multiplies the cropped spectrum. The mean is kept."""
    n = image.shape[0]
    if image.shape != (n, n) or m > n:
        raise ValueError(f"need a square image at least {m} pixels wide, got {image.shape}")
    spec = sfft.fftshift(sfft.fft2(image))
    lo = n // 2 - m // 2
    crop = sfft.ifftshift(spec[lo:lo + m, lo:lo + m])
    if transfer is not None:
        crop = crop * transfer
    return sfft.ifft2(crop).real * (m * m) / (n * n)


def smooth_field(rng: np.random.Generator, m: int, pixel_A: float, min_period_A: float = 15.0) -> np.ndarray:
    """Random smooth periodic field `[y, x]` (periods >= `min_period_A`, Å), zero mean, max |value| 1."""
    ky = sfft.fftfreq(m, pixel_A)[:, None]
    kx = sfft.fftfreq(m, pixel_A)[None, :]
    low = (kx**2 + ky**2 <= min_period_A**-2) & (kx**2 + ky**2 > 0)
    spec = np.zeros((m, m), complex)
    spec[low] = rng.normal(size=low.sum()) + 1j * rng.normal(size=low.sum())
    f = sfft.ifft2(spec).real
    f -= f.mean()
    return f / max(np.abs(f).max(), 1e-12)


def add_background(image: np.ndarray, rng: np.random.Generator, pixel_A: float, contrast: float = 0.5,
                   variation: float = 0.2) -> tuple[np.ndarray, dict]:
    """Diffuse incoherent background: I' = (I + b (1 + variation x s(r))) / (1 + b), b = 1 / contrast - 1,
    so that every deviation of I from its mean (the lattice contrast of the particle region) scales by
    `contrast`; s is a smooth field (`smooth_field`) added on top (it raises the particle region's total
    std from 0.5 to about 0.6 of the original at contrast 0.5). The vacuum level stays about 1."""
    b = 1.0 / contrast - 1.0
    s = smooth_field(rng, image.shape[0], pixel_A)
    return (image + b * (1 + variation * s)) / (1 + b), {"b": b, "contrast": contrast, "variation": variation}


def detector_mtf(m: int, kind: str = "lorentz", q_half: float = 1.0) -> np.ndarray | None:
    """Detector MTF `[y, x]` (rfft layout, m x m image) in units q of the native Nyquist frequency.

    kind: "none" (None), "lorentz" (1 / (1 + (q / q_half)^2), the training family) or "strong"
    (sinc(pi qx / 2) sinc(pi qy / 2) / (1 + (q / 0.5)^2): a square pixel's area and strong charge spreading).
    """
    if kind == "none":
        return None
    qy = sfft.fftfreq(m)[:, None] * 2
    qx = sfft.rfftfreq(m)[None, :] * 2
    q2 = qx**2 + qy**2
    if kind == "lorentz":
        return 1 / (1 + q2 / q_half**2)
    if kind == "strong":
        return np.sinc(qx / 2) * np.sinc(qy / 2) / (1 + q2 / 0.25)
    raise ValueError(f"unknown MTF {kind!r}; use none, lorentz or strong")


def detect(intensity: np.ndarray, dose_e_per_A2: float, pixel_A: float, rng: np.random.Generator,
           mtf: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Noisy uint16 image of a periodic intensity `[y, x]` (vacuum 1) and its gain (ADU per electron).

    Counts per pixel are Poisson with mean intensity x dose (e/Å²) x pixel area (Å²); an MTF (rfft layout)
    then blurs the counts as an integrating detector does, and they are stored at `ADU_PER_E_BLURRED` ADU
    per electron so that rounding to integers loses nothing (gain 1, exact counts, without an MTF).
    """
    lam = np.clip(intensity, 0, None) * (dose_e_per_A2 * pixel_A**2)
    counts = rng.poisson(lam).astype(np.float64)
    if mtf is None:
        return np.clip(counts, 0, 65535).astype(np.uint16), 1
    blurred = sfft.irfft2(sfft.rfft2(counts) * mtf, s=counts.shape)
    adu = np.rint(blurred * ADU_PER_E_BLURRED)
    if adu.max() > 65535:
        raise ValueError("counts overflow uint16 at this dose and pixel size; lower the dose")
    return np.clip(adu, 0, 65535).astype(np.uint16), ADU_PER_E_BLURRED
