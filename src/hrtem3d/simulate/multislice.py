"""Exit waves by multislice (abTEM): the expensive, optics-free part of an image.

One exit wave serves any number of training images: the electron optics, the
detector and the shot noise are applied later (see `hrtem3d.simulate.optics`).
Arrays are returned `[y, x]` (abTEM's own arrays are `[x, y]`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms


@dataclass
class MultisliceConfig:
    """Multislice settings.

    Attributes:
        energy_eV: beam energy (eV).
        potential_sampling_A: real-space sampling of the potential and wave (Å).
        slice_thickness_A: slice thickness (Å); 1.913 Å is one CeO2 (220) layer.
        parametrization: abTEM scattering-factor parametrisation.
        projection: "infinite" or "finite" potential projection.
        frozen_phonons: number of frozen-phonon configurations (0 = static lattice).
        phonon_share: fraction of the structures simulated with `frozen_phonons` configurations
            (the rest static), so a training set holds both at a fraction of the cost.
        phonon_sigma_A: r.m.s. displacement per element for frozen phonons (Å).
        phonon_scale: range of a factor on `phonon_sigma_A`, drawn per structure (1, 1: fixed). The
            r.m.s. displacement grows as the square root of the temperature above the Debye temperature,
            so 0.85..1.5 spans a cooled holder to an in-situ heating stage at several hundred °C;
            0.9..1.2 is room temperature with room for a nanoparticle's softer surface.
        store_sampling_A: sampling of the stored exit wave (Å); the wave is
            Fourier-cropped to it, which is exact while the objective aperture
            stays below its Nyquist angle.
        store_gpts: stored exit wave size (pixels); the cell is store_gpts * store_sampling_A.
    """

    energy_eV: float = 300e3
    potential_sampling_A: float = 0.05
    slice_thickness_A: float = 1.913
    parametrization: str = "lobato"
    projection: str = "infinite"
    frozen_phonons: int = 0
    phonon_share: float = 1.0
    phonon_sigma_A: dict = field(default_factory=lambda: {"Ce": 0.055, "O": 0.085})
    phonon_scale: tuple = (1.0, 1.0)
    store_sampling_A: float = 0.16
    store_gpts: int = 320

    @property
    def cell_A(self) -> float:
        """Side of the square simulation cell (Å)."""
        return self.store_gpts * self.store_sampling_A

    @property
    def potential_gpts(self) -> int:
        n = int(round(self.cell_A / self.potential_sampling_A))
        return n + (n % 2)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work."""
        if not 0.005 <= self.potential_sampling_A <= 0.2:
            raise ValueError(f"potential_sampling_A must lie in 0.005..0.2 Å, got {self.potential_sampling_A}")
        if self.store_sampling_A < self.potential_sampling_A:
            raise ValueError("store_sampling_A must not be finer than potential_sampling_A")
        if not 16 <= self.store_gpts <= 4096:
            raise ValueError(f"store_gpts must lie in 16..4096, got {self.store_gpts}")
        if not 0.2 <= self.slice_thickness_A <= 10:
            raise ValueError(f"slice_thickness_A must lie in 0.2..10 Å, got {self.slice_thickness_A}")
        if self.frozen_phonons < 0:
            raise ValueError("frozen_phonons must be >= 0")
        if not 0 <= self.phonon_share <= 1:
            raise ValueError(f"phonon_share must lie in 0..1, got {self.phonon_share}")
        lo, hi = self.phonon_scale
        if not 0 < lo <= hi <= 5:
            raise ValueError(f"phonon_scale must be a range inside 0..5 with low <= high, got {self.phonon_scale}")
        if self.energy_eV <= 0:
            raise ValueError("energy_eV must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        if tuple(d["phonon_scale"]) == (1.0, 1.0):  # stores made before the range existed keep their settings
            del d["phonon_scale"]
        return d


def exit_wave(atoms: Atoms, config: MultisliceConfig | None = None, seed: int = 0) -> np.ndarray:
    """Multislice exit wave of `atoms` under a plane wave.

    Args:
        atoms: structure whose cell is (cell_A, cell_A, thickness), beam along +z.
        config: multislice settings.
        seed: frozen-phonon seed (ignored without frozen phonons).

    Returns:
        complex64 array `[n_configs, store_gpts, store_gpts]`, `[y, x]` order,
        sampled at `config.store_sampling_A`; vacuum has amplitude 1.
    """
    import abtem

    config = config or MultisliceConfig()
    abtem.config.set({"dask.lazy": False, "diagnostics.progress_bar": False})
    cell = atoms.cell.lengths()
    if abs(cell[0] - config.cell_A) > 1e-6 or abs(cell[1] - config.cell_A) > 1e-6:
        raise ValueError(f"atoms cell {cell[:2]} Å does not match the configured {config.cell_A} Å cell")
    structure = atoms
    if config.frozen_phonons:
        structure = abtem.FrozenPhonons(atoms, num_configs=config.frozen_phonons,
                                        sigmas=dict(config.phonon_sigma_A), seed=seed)
    gpts = config.potential_gpts
    potential = abtem.Potential(structure, gpts=(gpts, gpts), slice_thickness=config.slice_thickness_A,
                                parametrization=config.parametrization, projection=config.projection)
    waves = abtem.PlaneWave(energy=config.energy_eV).multislice(potential)
    array = np.asarray(waves.array)
    array = array.reshape((-1,) + array.shape[-2:])
    out = np.stack([fourier_crop(a, config.store_gpts) for a in array])
    return np.ascontiguousarray(out.transpose(0, 2, 1)).astype(np.complex64)


def fourier_crop(wave: np.ndarray, n: int) -> np.ndarray:
    """Band-limited resampling of a periodic complex wave to `n x n` pixels (keeps the mean)."""
    m = wave.shape[-1]
    if n == m:
        return wave
    f = np.fft.fftshift(np.fft.fft2(wave))
    c, h = m // 2, n // 2
    f = f[c - h:c - h + n, c - h:c - h + n]
    return np.fft.ifft2(np.fft.ifftshift(f)) * (n * n) / (m * m)
