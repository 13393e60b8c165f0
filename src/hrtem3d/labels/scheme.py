"""The class scheme shared by labels, training and analysis.

Class 0 is background. Each species then owns a block of classes, one per atom
count: with the default scheme (Ce up to 12, O up to 12) class 1..12 means a Ce
column of 1..12 atoms and class 13..24 an O column of 1..12 atoms. Columns deeper
than a species' maximum are clipped into its top class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ClassScheme:
    """Background + one class per (species, atom count).

    Attributes:
        species: species names, in block order.
        max_atoms: largest atom count of each species' block.
    """

    species: tuple[str, ...] = ("Ce", "O")
    max_atoms: tuple[int, ...] = (12, 12)

    def __post_init__(self) -> None:
        if len(self.species) != len(self.max_atoms):
            raise ValueError("species and max_atoms must have the same length")
        if any(m < 1 for m in self.max_atoms):
            raise ValueError("max_atoms must be >= 1")

    @property
    def n_classes(self) -> int:
        return 1 + int(sum(self.max_atoms))

    def offset(self, species: str) -> int:
        """Class index of `species` with 0 atoms (its block starts at offset + 1)."""
        i = self.species.index(species)
        return int(sum(self.max_atoms[:i]))

    def class_of(self, species: str, n_atoms: int | np.ndarray) -> int | np.ndarray:
        """Class index for a column of `species` with `n_atoms` atoms (clipped to 1..max)."""
        i = self.species.index(species)
        return self.offset(species) + np.clip(n_atoms, 1, self.max_atoms[i])

    def decode(self, cls: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of `class_of`: (species index, n_atoms) arrays; species -1 for background."""
        cls = np.asarray(cls)
        species = np.full(cls.shape, -1, dtype=np.int64)
        n = np.zeros(cls.shape, dtype=np.int64)
        for i, name in enumerate(self.species):
            lo = self.offset(name) + 1
            hi = lo + self.max_atoms[i]
            m = (cls >= lo) & (cls < hi)
            species[m] = i
            n[m] = cls[m] - lo + 1
        return species, n

    def species_classes(self, species: str) -> np.ndarray:
        """All class indices belonging to `species`."""
        i = self.species.index(species)
        return np.arange(self.max_atoms[i]) + self.offset(species) + 1

    def to_dict(self) -> dict:
        return {"species": list(self.species), "max_atoms": list(self.max_atoms)}

    @classmethod
    def from_dict(cls, d: dict) -> ClassScheme:
        return cls(species=tuple(d["species"]), max_atoms=tuple(int(m) for m in d["max_atoms"]))


DEFAULT_SCHEME = ClassScheme()
__all__ = ["ClassScheme", "DEFAULT_SCHEME", "asdict"]
