"""Amorphous carbon support films: exit waves that multiply a particle's exit wave.

Real particles sit on a support film (usually a few nm of amorphous carbon) whose speckle
adds a random, structured background to every column's contrast. A training set stores a
small bank of 1 nm film exit waves; each training image multiplies its particle's exit wave
by 0 to a few of them (shifted and flipped at random), the thin-film approximation of a
film of that many nm under the particle.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from hrtem3d.simulate.multislice import MultisliceConfig, exit_wave

CARBON_DENSITY_G_CM3 = 2.0
MIN_C_C_A = 1.3


def amorphous_carbon(thickness_A: float, cell_A: float, rng: np.random.Generator,
                     density_g_cm3: float = CARBON_DENSITY_G_CM3, min_dist_A: float = MIN_C_C_A) -> Atoms:
    """Random carbon atoms filling a slab `cell_A` x `cell_A` x `thickness_A` (Å), no two closer than `min_dist_A`.

    Example:
        >>> film = amorphous_carbon(5.0, 20.0, np.random.default_rng(0))
        >>> 0.08 < len(film) / (20 * 20 * 5) < 0.11  # atoms per Å^3 at 2 g/cm^3
        True
    """
    n_target = int(round(density_g_cm3 / 12.011 * 6.02214076e23 * 1e-24 * cell_A * cell_A * thickness_A))
    size = np.array([cell_A, cell_A, thickness_A])
    kept = np.zeros((0, 3))
    for _ in range(50):
        if len(kept) >= n_target:
            break
        cand = rng.uniform(0, 1, (2 * (n_target - len(kept)) + 16, 3)) * size
        # minimum image in x and y (the cell is periodic), none in z
        if len(kept):
            d, _ = cKDTree(kept, boxsize=[cell_A, cell_A, 1e9]).query(cand % [cell_A, cell_A, 1e9])
            cand = cand[d >= min_dist_A]
        accepted = []
        tree_new = cKDTree(cand, boxsize=[cell_A, cell_A, 1e9]) if len(cand) else None
        taken = np.zeros(len(cand), bool)
        for i in range(len(cand)):
            if len(kept) + len(accepted) >= n_target:
                break
            near = tree_new.query_ball_point(cand[i], min_dist_A)
            if not taken[near].any():
                taken[i] = True
                accepted.append(i)
        kept = np.concatenate([kept, cand[accepted]]) if accepted else kept
    pos = kept.copy()
    pos[:, 2] += 1.0
    return Atoms(symbols=["C"] * len(pos), positions=pos, cell=[cell_A, cell_A, thickness_A + 2.0], pbc=True)


def carbon_film_bank(n: int, config: MultisliceConfig, seed: int = 0, thickness_A: float = 10.0) -> np.ndarray:
    """`n` exit waves of independent amorphous carbon films, `[n, gpts, gpts]` complex64 at the store's sampling.

    Each is a `thickness_A` (Å) film simulated by multislice like the particles (`exit_wave`).
    """
    waves = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 2024])
        film = amorphous_carbon(thickness_A, config.cell_A, rng)
        waves.append(exit_wave(film, MultisliceConfig(**{**config.to_dict(), "frozen_phonons": 0}))[0])
    return np.stack(waves).astype(np.complex64)


def film_transmission(bank: np.ndarray, n_layers: int, rng: np.random.Generator) -> np.ndarray | None:
    """Product of `n_layers` films drawn from `bank` (each rolled, flipped and transposed at random), or None.

    A film of `n_layers` x the bank's thickness (thin-film approximation: no propagation between layers).
    """
    if n_layers <= 0 or len(bank) == 0:
        return None
    out = None
    for _ in range(n_layers):
        w = bank[rng.integers(len(bank))]
        w = np.roll(w, tuple(rng.integers(0, w.shape[-1], 2)), axis=(0, 1))
        if rng.random() < 0.5:
            w = w.T
        if rng.random() < 0.5:
            w = w[::-1]
        out = w if out is None else out * w
    return out
