"""An estimated 3D atomic model from a column table (one projection): stacking rules, files, volume.

One image gives, for every atomic column, its projected position (x_A, y_A), its species and
its atom count, but not the height at which the atoms sit along the beam. This module stacks
each column's atoms along the beam (z) at the crystal spacing under a stated rule, writes the
result as extended XYZ and CIF, and measures convex-hull volumes. All lengths in Å.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from ase.data import chemical_symbols

from hrtem3d.errors import HrtemError
from hrtem3d.fsutil import atomic_write
from hrtem3d.structure.material import CERIA, Material

RULES = ("symmetric", "flat")
REQUIRED_FIELDS = ("x_A", "y_A", "species", "n_atoms")
PAD_A = 5.0
"""Vacuum margin (Å) between the atoms and each face of the model's box."""

_ELEMENTS = set(chemical_symbols[1:])


def columns_to_atoms(columns: pd.DataFrame, rule: str = "symmetric", spacing_A: float | None = None,
                     material: Material = CERIA) -> Atoms:
    """Stack each column's `n_atoms` atoms along the beam (z) at (x_A, y_A): an estimated 3D model.

    Args:
        columns: the column table of one frame (DESIGN.md): needs `x_A`, `y_A` (Å), `species`,
            `n_atoms` (integer >= 1); `column_id` and `confidence` are copied to per-atom arrays
            when present. A table holding several frames is refused: pass one frame at a time.
        rule: where each column sits along the beam.
            "symmetric" centres every column on the mid-plane z = 0: atom k of n sits at
            z = (k - (n - 1) / 2) * spacing_A. For a convex particle this is the Steiner
            symmetrisation about the plane z = 0: each line parallel to the beam keeps the length
            of its chord inside the particle, only moved to be centred. Steiner symmetrisation
            preserves volume and convexity, so the model's volume, its shape in projection and
            every column's count are right, even though the absolute heights of the columns
            cannot be known from one projection (the true particle is one of many convex bodies
            with the same chord lengths; the symmetric one is the canonical choice).
            "flat" rests every column on a flat bottom at z = 0 (atoms at z = 0, s, 2s, ...),
            as for a particle sitting on a support with its interface normal to the beam.
        spacing_A: distance between consecutive atoms in a column (Å); default
            `material.spacing_along_beam_A` (3.826 Å for CeO2 in [110]).
        material: the crystal, for the default spacing.

    Returns:
        ase `Atoms` with positions in Å (x, y from the table; z by the rule), pbc False, and a
        box (cell) reaching `PAD_A` beyond the atoms on every side, its corner at
        `atoms.get_celldisp()`. `atoms.info` records the rule, the spacing, the material and
        the frame (when the table has one). An empty table gives an empty `Atoms`.

    Raises:
        HrtemError: a required field is missing, a value is NaN or out of range, a species is not
            an element, the rule is unknown or the table holds more than one frame.
    """
    if rule not in RULES:
        raise HrtemError(f"unknown stacking rule {rule!r}; use one of {', '.join(RULES)}")
    if not isinstance(columns, pd.DataFrame):
        raise HrtemError(f"expected a column table (pandas DataFrame), got {type(columns).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in columns.columns]
    if missing:
        raise HrtemError(f"column table lacks field(s) {', '.join(missing)}; "
                         f"it needs {', '.join(REQUIRED_FIELDS)} (see DESIGN.md)")
    spacing = float(material.spacing_along_beam_A if spacing_A is None else spacing_A)
    if not (np.isfinite(spacing) and spacing > 0):
        raise HrtemError(f"spacing along the beam must be a positive length in Å, got {spacing_A}")
    frame = None
    if "frame" in columns.columns and len(columns):
        frames = pd.unique(columns["frame"])
        if len(frames) > 1:
            raise HrtemError(f"column table holds {len(frames)} frames ({', '.join(map(str, frames[:5]))}...); "
                             f"build one model per frame")
        frame = int(frames[0])

    n = pd.to_numeric(columns["n_atoms"], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(n) | (n < 1) | (n != np.round(n))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HrtemError(f"n_atoms must be a whole number >= 1 in every row; row {i} has "
                         f"{columns['n_atoms'].iloc[i]!r} ({int(bad.sum())} bad row(s))")
    xy = columns[["x_A", "y_A"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isfinite(xy).all(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HrtemError(f"x_A and y_A must be finite numbers (Å); row {i} has {tuple(xy[i])} "
                         f"({int(bad.sum())} bad row(s))")
    species = columns["species"].astype(str).str.strip().to_numpy()
    unknown = sorted(set(species) - _ELEMENTS)
    if unknown:
        raise HrtemError(f"species must be element symbols such as Ce or O; got {', '.join(unknown[:5])}")

    counts = n.astype(np.int64)
    idx = np.repeat(np.arange(len(columns)), counts)
    # position of each atom within its column: 0 .. n-1
    k = np.arange(len(idx)) - np.repeat(np.cumsum(counts) - counts, counts)
    z = k * spacing
    if rule == "symmetric":
        z = z - (counts[idx] - 1) / 2 * spacing
    pos = np.column_stack([xy[idx], z]) if len(idx) else np.zeros((0, 3))

    atoms = Atoms(symbols=list(species[idx]), positions=pos, pbc=False)
    lo = pos.min(0) if len(pos) else np.zeros(3)
    hi = pos.max(0) if len(pos) else np.zeros(3)
    atoms.set_cell(np.diag(hi - lo + 2 * PAD_A))
    atoms.set_celldisp(lo - PAD_A)
    if "column_id" in columns.columns:
        atoms.arrays["column_id"] = pd.to_numeric(columns["column_id"]).to_numpy(np.int64)[idx]
    if "confidence" in columns.columns:
        atoms.arrays["confidence"] = pd.to_numeric(columns["confidence"], errors="coerce").to_numpy(float)[idx]
    atoms.info.update(rule=rule, spacing_A=spacing, material=material.name)
    if frame is not None:
        atoms.info["frame"] = frame
    return atoms


def write_model(atoms_or_list: Atoms | Sequence[Atoms], dest_stem: str | Path) -> list[Path]:
    """Write `<dest_stem>.xyz` (extended XYZ, one frame per structure) and `<dest_stem>.cif` (the first).

    Positions in Å. The .xyz keeps the model's coordinates and its per-atom arrays
    (`column_id`, `confidence`). CIF has no origin and readers wrap fractional coordinates
    into the cell, so the .cif holds the first structure translated by minus its box corner
    (`get_celldisp()`), which puts every atom inside the box. CIF cannot hold a structure
    without atoms: when the first structure is empty, no .cif is written. Each file is written
    to a temporary name and renamed when complete.

    Returns:
        The paths written: the .xyz, then the .cif when written.
    """
    import ase.io

    images = [atoms_or_list] if isinstance(atoms_or_list, Atoms) else list(atoms_or_list)
    if not images:
        raise HrtemError("no structures to write")
    stem = Path(dest_stem)
    xyz = stem.with_name(stem.name + ".xyz")
    cif = stem.with_name(stem.name + ".cif")
    atomic_write(xyz, lambda p: ase.io.write(p, images, format="extxyz"))
    written = [xyz]
    first = images[0]
    if len(first):
        boxed = first.copy()
        boxed.translate(-np.asarray(first.get_celldisp()).ravel())
        boxed.set_celldisp([0.0, 0.0, 0.0])
        atomic_write(cif, lambda p: ase.io.write(p, boxed, format="cif"))
        written.append(cif)
    return written


def hull_volume_A3(atoms: Atoms) -> float:
    """Volume (Å³) of the convex hull of the atom positions; 0 for fewer than 4 atoms or a flat set."""
    from scipy.spatial import ConvexHull, QhullError

    pos = np.asarray(atoms.get_positions(), float)
    if len(pos) < 4:
        return 0.0
    try:
        return float(ConvexHull(pos).volume)
    except QhullError:  # all atoms on a plane or a line: no volume
        return 0.0
