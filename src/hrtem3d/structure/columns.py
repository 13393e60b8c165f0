"""Ground truth of atomic columns, from lattice positions (survives tilt and rotation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from ase import Atoms

from hrtem3d.structure.material import CERIA, Material

COLUMN_FIELDS = ["species", "x_A", "y_A", "n_atoms", "z_min_A", "z_max_A", "key_u", "key_v"]


def column_keys(lattice_pos: np.ndarray, material: Material = CERIA, grid_A: float = 0.05) -> np.ndarray:
    """Integer column key (u, v) of each atom: its crystal position projected along the zone axis.

    Atoms that share a key sit on one line parallel to the zone axis in the perfect
    crystal, whatever the later rotation and tilt. `grid_A` is the rounding step (Å).
    """
    frame = material.zone_frame()
    proj = lattice_pos @ frame[:2].T
    return np.round(proj / grid_A).astype(np.int64)


def column_table(atoms: Atoms, material: Material = CERIA) -> pd.DataFrame:
    """One row per atomic column: species, mean projected x_A, y_A (Å), n_atoms, z extent.

    Uses `atoms.arrays["lattice_pos"]` (set by `build_particle`) to group atoms.
    """
    keys = column_keys(atoms.arrays["lattice_pos"], material)
    sym = np.array(atoms.get_chemical_symbols())
    pos = atoms.get_positions()
    df = pd.DataFrame({"species": sym, "key_u": keys[:, 0], "key_v": keys[:, 1],
                       "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]})
    g = df.groupby(["species", "key_u", "key_v"], sort=True)
    out = g.agg(x_A=("x", "mean"), y_A=("y", "mean"), n_atoms=("x", "size"),
                z_min_A=("z", "min"), z_max_A=("z", "max")).reset_index()
    return out[COLUMN_FIELDS]
