"""Crystal materials and zone axes: everything material-specific lives here.

Another oxide or metal is a new `Material`, not a change elsewhere: the particle
builder and the column bookkeeping only use the fields below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.build import bulk


@dataclass(frozen=True)
class Material:
    """A crystal and the rules for cutting clean nanoparticles from it.

    Attributes:
        name: chemical name, e.g. "CeO2".
        a_A: cubic lattice constant (Å).
        cation, anion: element symbols; `anion` may be None for a metal.
        bond_A: cation-anion neighbour cut-off used for coordination checks (Å).
        min_cations_per_anion: anions with fewer cation neighbours are removed
            (the surface clean-up that keeps a Wulff cut stoichiometric).
        min_anions_per_cation: cations left with fewer anion neighbours are removed.
        zone_axis: crystal direction along the beam.
        in_plane_x: crystal direction that becomes the image x axis.
        phonon_sigma_A: r.m.s. thermal displacement per element for frozen phonons (Å).
    """

    name: str
    a_A: float
    structure: str
    cation: str
    anion: str | None
    bond_A: float
    min_cations_per_anion: int = 2
    min_anions_per_cation: int = 3
    zone_axis: tuple[int, int, int] = (1, 1, 0)
    in_plane_x: tuple[int, int, int] = (1, -1, 0)
    phonon_sigma_A: dict = field(default_factory=dict)

    def unit_cell(self) -> Atoms:
        """The conventional cubic cell (ase `Atoms`)."""
        return bulk(self.name, self.structure, a=self.a_A, cubic=True)

    def zone_frame(self) -> np.ndarray:
        """Rotation matrix whose rows are the image x, image y and beam directions.

        `frame @ r_crystal` gives coordinates with the beam along +z.
        """
        z = np.asarray(self.zone_axis, float)
        z /= np.linalg.norm(z)
        x = np.asarray(self.in_plane_x, float)
        x -= z * (x @ z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        return np.stack([x, y, z])

    @property
    def spacing_along_beam_A(self) -> float:
        """Distance between atoms along a column (Å): the lattice repeat along the zone axis."""
        u = np.asarray(self.zone_axis, float)
        g = np.gcd.reduce(np.asarray(self.zone_axis))
        n = np.linalg.norm(u / g) * self.a_A
        # fcc lattices repeat after half the cubic vector along <110>
        if self.structure in ("fluorite", "fcc", "rocksalt") and sorted(np.abs(u / g)) == [0, 1, 1]:
            return n / 2
        return n


CERIA = Material(
    name="CeO2",
    a_A=5.411,
    structure="fluorite",
    cation="Ce",
    anion="O",
    bond_A=2.5,
    phonon_sigma_A={"Ce": 0.055, "O": 0.085},
)
"""CeO2 (fluorite, a = 5.411 Å) in [110]: x along [1-10], y along [001]."""

GOLD = Material(name="Au", a_A=4078e-3, structure="fcc", cation="Au", anion=None, bond_A=3.0,
                min_cations_per_anion=0, min_anions_per_cation=0, phonon_sigma_A={"Au": 0.085})
"""Gold (fcc, a = 4.078 Å) in [110]: not what the shipped model counts; the envelope check tells it from CeO2."""
