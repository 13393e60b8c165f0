"""PyTorch Dataset: a fresh noisy image per sample from stored exit waves.

For each sample: draw optics and a dose from the envelope, form the image of one
stored exit wave, pick a crop (usually around the particle), add shot noise and
detector blur, normalise, and apply one of the eight flips/rotations alike to image,
target and weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.fft as sfft
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from hrtem3d.data import store
from hrtem3d.data.dihedral import dihedral
from hrtem3d.data.normalize import NORMALIZATIONS, RELATIVE, normalizer, relative_contrast
from hrtem3d.data.resample import to_working_grid
from hrtem3d.errors import HrtemError
from hrtem3d.labels import weight_map
from hrtem3d.simulate.film import film_transmission
from hrtem3d.simulate.optics import Optics, OpticsEnvelope, angular_grid, blur, shot_noise, transfer_at, wavelength_A
from hrtem3d.simulate.scope import ScopeEnvelope, add_background, fourier_resample, vibrate

# working pixels kept around a crop while it is resampled and blurred, then cut away
MARGIN_PX = 8


class ExitWaveBank:
    """Stored exit waves held in Fourier space, cut to the largest aperture of the envelope.

    Keeping only the frequencies inside the aperture makes each image one inverse FFT.
    """

    def __init__(self, waves: list[np.ndarray], sampling_A: float, max_aperture_mrad: float,
                 energy_eV: float):
        self.shape = tuple(waves[0].shape[-2:])
        self.sampling_A = sampling_A
        lam = wavelength_A(energy_eV)
        ky = sfft.fftfreq(self.shape[0], sampling_A)[:, None]
        kx = sfft.fftfreq(self.shape[1], sampling_A)[None, :]
        self.inside = np.flatnonzero(((kx**2 + ky**2) * lam**2 <= (max_aperture_mrad * 1.001e-3) ** 2).ravel())
        # float32 is plenty here (phase error < 1e-5 rad) and twice as fast
        self.angles = [g.ravel()[self.inside].astype(np.float32) for g in angular_grid(self.shape, sampling_A, lam)]
        self.spectra = [sfft.fft2(w, workers=1).reshape(w.shape[0], -1)[:, self.inside].astype(np.complex64)
                        for w in waves]

    def intensity(self, spectrum: np.ndarray, optics: Optics) -> np.ndarray:
        """Image intensity (vacuum 1) of one stored spectrum `[n_configs, n_inside]`."""
        psi = self._wave(spectrum * transfer_at(optics, *self.angles))
        return (psi.real**2 + psi.imag**2).mean(0).astype(np.float32)

    def with_film(self, spectrum: np.ndarray, film: np.ndarray) -> np.ndarray:
        """The spectrum of the exit wave(s) times a support film's transmission `[ny, nx]` (real space)."""
        psi = self._wave(spectrum) * film
        return sfft.fft2(psi, workers=1).reshape(psi.shape[0], -1)[:, self.inside].astype(np.complex64)

    def _wave(self, spectrum: np.ndarray) -> np.ndarray:
        """Real-space wave(s) `[n_configs, ny, nx]` of a spectrum kept inside the aperture."""
        full = np.zeros((spectrum.shape[0], self.shape[0] * self.shape[1]), np.complex64)
        full[:, self.inside] = spectrum
        return sfft.ifft2(full.reshape((-1,) + tuple(self.shape)), workers=1, overwrite_x=True)


class HrtemDataset(Dataset):
    """Training samples `(image, target, weights)` drawn from a dataset store.

    Args:
        path: dataset store made by `hrtem3d simulate`.
        indices: structure indices to use (e.g. the training split); default all.
        crop: side of the square crop (pixels at the store's sampling).
        samples_per_epoch: length of the dataset (samples are random draws).
        envelope: optics/dose ranges; `dose` fixes the dose (e/Å²) instead.
        seed: base seed; sample `i` of epoch `e` is reproducible from (seed, e, i).
        augment: apply a random one of the eight flips/rotations.
        class_weights: per-class weight multipliers for the weight map.
        normalization: "relative" (counts over the mean counts of the whole simulated field, minus 1,
            with a 3 % log-normal jitter of that mean standing for its uncertainty in real frames)
            or "median/MAD" (see `hrtem3d.data.normalize`).
        scope: what the microscope adds (`hrtem3d.simulate.scope.ScopeEnvelope`). With it, each image
            is formed at a native pixel size drawn from the envelope, with a support film, residual
            aberrations, vibration, background and detector MTF drawn per sample, and goes through
            `segment`'s own steps (resampling from the stated pixel size to the working grid, then
            normalisation) before the crop; the targets are resampled to the same grid. Without it,
            images are formed on the store's grid (the in-domain test images).
        lattice_label: also return whether the structure's lattice vibrates (1.0: its exit wave holds
            several frozen-phonon configurations, 0.0: one static wave), for `lattice_heads` networks.

    Returns per item:
        image `[1, crop, crop]` float32 (normalised counts), target `[2, crop, crop]`
        float32 (channel 0 the class index, channel 1 its soft-target probability),
        weights `[crop, crop]` float32; with `lattice_label`, also the label (a float32 scalar).
    """

    def __init__(self, path: str | Path, indices: list[int] | None = None, crop: int = 256,
                 samples_per_epoch: int = 1024, envelope: OpticsEnvelope | None = None,
                 dose: float | None = None, seed: int = 0, augment: bool = True,
                 class_weights: np.ndarray | None = None, centre_weight: float = 4.0,
                 normalization: str = RELATIVE, scope: ScopeEnvelope | None = None,
                 lattice_label: bool = False):
        if normalization not in NORMALIZATIONS:
            raise HrtemError(f"unknown normalization {normalization!r}; use one of {NORMALIZATIONS}")
        self.normalization = normalization
        root = store.open_store(path)
        settings = store.settings_of(root)
        ms = settings["multislice"]
        self.sampling_A = float(ms["store_sampling_A"])
        groups = store.structure_groups(root)
        if indices is not None:
            by_index = {int(g.attrs["index"]): g for g in groups}
            missing = [i for i in indices if i not in by_index]
            if missing:
                raise HrtemError(f"{path} lacks structures {missing[:5]}...; finish it with `hrtem3d simulate`")
            groups = [by_index[i] for i in indices]
        if not groups:
            raise HrtemError(f"{path} holds no finished structures; run `hrtem3d simulate` first")
        if crop > int(ms["store_gpts"]) or crop < 16:
            raise HrtemError(f"crop {crop} must lie in 16..{ms['store_gpts']} pixels")
        from hrtem3d.simulate.envelope_file import envelope_of

        stored = envelope_of(settings)  # the store's own envelope (simulate --envelope), else the default
        self.envelope = envelope or (stored.optics if stored else OpticsEnvelope())
        try:
            self.envelope.validate()
        except ValueError as e:
            raise HrtemError(f"impossible optics envelope: {e}") from None
        self.indices = [int(g.attrs["index"]) for g in groups]
        self.bank = ExitWaveBank([g["exit_wave"][:] for g in groups], self.sampling_A,
                                 self.envelope.aperture_mrad[1], self.envelope.energy_eV)
        self.cls = [g["cls"][:] for g in groups]
        self.alpha = [g["alpha"][:] for g in groups]
        self.centres = [np.argwhere(c > 0) for c in self.cls]
        self.scope = scope
        if scope is not None:
            try:
                scope.validate()
            except ValueError as e:
                raise HrtemError(f"impossible microscope envelope: {e}") from None
        self.films = store.read_films(root)[0] if scope is not None else np.zeros((0, 1, 1), np.complex64)
        self.crop, self.length, self.dose, self.seed = crop, samples_per_epoch, dose, seed
        self.augment, self.class_weights, self.centre_weight = augment, class_weights, centre_weight
        self.epoch = 0
        self.lattice_label = lattice_label
        self.vibrating = {i: s.shape[0] > 1 for i, s in zip(self.indices, self.bank.spectra, strict=True)}

    def set_epoch(self, epoch: int) -> None:
        """Draw different samples in each epoch (reproducibly)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def draw(self, i: int, structure: int | None = None) -> dict:
        """Sample `i` with everything drawn (numpy arrays and the optics), for inspection.

        `structure` fixes the position (0..len(indices)-1) of the structure to image instead of drawing it.
        """
        rng = np.random.default_rng([self.seed, self.epoch, i])
        k = int(rng.integers(len(self.cls)))
        if structure is not None:
            k = structure
        optics, det = self.envelope.sample(rng, self.dose)
        if self.scope is not None:
            return self._draw_through_scope(rng, k, optics, det)
        clean = self.bank.intensity(self.bank.spectra[k], optics)
        # mean counts per pixel over the whole field (what the mean of a full frame measures)
        flux = float(clean.mean()) * det.dose_e_per_A2 * self.sampling_A**2 * float(np.exp(rng.normal(0, 0.03)))
        y0, x0 = self._crop_origin(rng, k)
        sl = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
        clean = clean[sl]
        lam = np.clip(clean, 0, None) * np.float32(det.dose_e_per_A2 * self.sampling_A**2)
        counts = blur(shot_noise(lam, rng), det, self.sampling_A)
        cls, alpha = self.cls[k][sl], store.alpha_float(self.alpha[k][sl])
        t = int(rng.integers(8)) if self.augment else 0
        return {"structure": self.indices[k], "optics": optics, "detector": det, "clean": dihedral(clean, t),
                "counts": dihedral(counts, t), "cls": dihedral(cls, t), "alpha": dihedral(alpha, t),
                "origin": (y0, x0), "transform": t, "flux": flux}

    def _draw_through_scope(self, rng: np.random.Generator, k: int, optics: Optics, det) -> dict:
        """A sample at a native pixel size with the microscope's effects (see `scope` in the class doc).

        Returns the native counts of a region around the crop (`counts`, at `pixel_size_A` as a file
        would state it) and the same region through `segment`'s resampling (`work`), with the targets
        on the working grid of the central `crop` x `crop` pixels.
        """
        s, n = self.sampling_A, self.bank.shape[0]
        acq = self.scope.sample(rng, optics, det)
        spectrum = self.bank.spectra[k]
        film = film_transmission(self.films, acq.film_layers, rng)
        if film is not None:
            spectrum = self.bank.with_film(spectrum, film)
        clean = add_background(vibrate(self.bank.intensity(spectrum, optics), acq, s), acq, rng, s)
        n_native = sfft.next_fast_len(int(round(n * s / acq.native_pixel_A)), real=True)
        p = n * s / n_native  # the true native pixel size (Å), a whole number of pixels across the cell
        native = fourier_resample(clean, n_native)
        mean_counts = float(native.mean()) * det.dose_e_per_A2 * p * p
        y0, x0 = self._crop_origin(rng, k)
        size = min(n_native, int(np.ceil((self.crop + 2 * MARGIN_PX) * s / acq.stated_pixel_A)) + 1)
        start = [int(np.clip(round(v * s / p - MARGIN_PX * s / acq.stated_pixel_A), 0, n_native - size))
                 for v in (y0, x0)]
        region = native[start[0]:start[0] + size, start[1]:start[1] + size]
        counts = blur(shot_noise(np.clip(region, 0, None) * np.float32(det.dose_e_per_A2 * p * p), rng), det, p)
        work, factors = to_working_grid(counts, acq.stated_pixel_A, s)
        oy, ox = (work.shape[0] - self.crop) // 2, (work.shape[1] - self.crop) // 2
        j = np.arange(self.crop)
        # working pixel -> native pixel -> position (Å) -> store pixel
        ys = ((oy + j + 0.5) * factors[0] - 0.5 + start[0]) * p / s
        xs = ((ox + j + 0.5) * factors[1] - 0.5 + start[1]) * p / s
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        cls = ndimage.map_coordinates(self.cls[k], [yy, xx], order=0, mode="nearest")
        alpha = ndimage.map_coordinates(store.alpha_float(self.alpha[k]), [yy, xx], order=1, mode="nearest")
        work = work[oy:oy + self.crop, ox:ox + self.crop]
        t = int(rng.integers(8)) if self.augment else 0
        return {"structure": self.indices[k], "optics": optics, "detector": det, "acquisition": acq,
                "counts": counts, "pixel_size_A": acq.stated_pixel_A, "origin_A": (start[0] * p, start[1] * p),
                "native_pixel_A": p, "work": dihedral(work, t), "cls": dihedral(cls, t),
                "alpha": dihedral(alpha.astype(np.float32), t), "transform": t,
                "flux": mean_counts * float(np.exp(rng.normal(0, 0.03)))}

    def __getitem__(self, i: int):
        d = self.draw(i)
        raw = d.get("work", d.get("counts"))
        if self.normalization == RELATIVE:
            image = relative_contrast(raw, mean=d["flux"])
        else:
            image = normalizer(self.normalization)(raw)
        w = weight_map(d["alpha"], d["cls"], self.class_weights, self.centre_weight)
        target = np.stack([d["cls"].astype(np.float32), d["alpha"]])
        item = (torch.from_numpy(np.ascontiguousarray(image[None])),
                torch.from_numpy(np.ascontiguousarray(target)),
                torch.from_numpy(np.ascontiguousarray(w)))
        if self.lattice_label:
            return (*item, torch.tensor(float(self.vibrating[d["structure"]])))
        return item

    def _crop_origin(self, rng: np.random.Generator, k: int) -> tuple[int, int]:
        n = self.cls[k].shape[0]
        hi = n - self.crop
        centres = self.centres[k]
        if len(centres) and rng.random() < 0.85:
            cy, cx = centres[rng.integers(len(centres))] + rng.uniform(-self.crop / 3, self.crop / 3, 2)
        else:
            cy, cx = rng.uniform(0, n, 2)
        return (int(np.clip(cy - self.crop / 2, 0, hi)), int(np.clip(cx - self.crop / 2, 0, hi)))
