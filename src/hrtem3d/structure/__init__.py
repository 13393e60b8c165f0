"""Stage 1: crystal structures and their atomic-column ground truth (ase)."""

from hrtem3d.structure.columns import column_table
from hrtem3d.structure.material import CERIA, Material
from hrtem3d.structure.particle import ParticleEnvelope, ParticleParams, build_particle, random_particle

__all__ = ["CERIA", "Material", "ParticleEnvelope", "ParticleParams", "build_particle",
           "column_table", "random_particle"]
