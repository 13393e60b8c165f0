"""Wulff-like nanoparticles cut from a crystal, with steps, flat bottoms, defects and tilt.

All lengths in Å, angles in degrees. Atoms keep their crystal (lattice) position in
`atoms.arrays["lattice_pos"]`, so columns can be identified after rotation and tilt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree

from hrtem3d.structure.material import CERIA, Material

_FACET_111 = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1],
                       [-1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]], float) / np.sqrt(3)
_FACET_100 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_LOW_INDEX = np.concatenate([_FACET_111, _FACET_100])


@dataclass
class ParticleEnvelope:
    """Ranges from which random particles are drawn.

    Attributes:
        diameter_A: particle size range (Å): the {100}-to-{100} width 2 r100.
        truncation: range of r100 / r111 (the {100} and {111} facet distances);
            sqrt(3) is an untruncated octahedron, 1 a cube.
        flat_bottom_prob: chance of a flat cut (support interface) on a low-index plane.
        steps: maximum number of surface steps (partial outer layers removed).
        o_vacancy: range of the fraction of anions removed.
        ce_vacancy: range of the fraction of cations removed.
        adatoms: maximum number of cation and of anion adatoms on lattice sites.
        tilt_deg: maximum specimen tilt away from the zone axis (degrees).
        shift_A: maximum in-plane shift of the particle from the cell centre (Å).
        facet_110_prob: chance that the particle also has {110} facets (edges of the cube cut off).
        truncation_110: range of r110 / r100 for those ({110} facet distance over the {100} one;
            sqrt(2) touches the cube's edges, 1 cuts them deeply).
    """

    diameter_A: tuple[float, float] = (20.0, 40.0)
    truncation: tuple[float, float] = (1.1, 1.6)
    flat_bottom_prob: float = 0.5
    steps: int = 2
    o_vacancy: tuple[float, float] = (0.0, 0.08)
    ce_vacancy: tuple[float, float] = (0.0, 0.03)
    adatoms: int = 2
    tilt_deg: float = 1.0
    shift_A: float = 2.0
    facet_110_prob: float = 0.0
    truncation_110: tuple[float, float] = (1.0, 1.35)

    def validate(self) -> None:
        """Raise ValueError for impossible ranges."""
        for name in ("diameter_A", "truncation", "o_vacancy", "ce_vacancy"):
            lo, hi = getattr(self, name)
            if not (0 <= lo <= hi):
                raise ValueError(f"{name} must satisfy 0 <= min <= max, got ({lo}, {hi})")
        if self.diameter_A[0] < 5:
            raise ValueError(f"diameter_A must be at least 5 Å, got {self.diameter_A[0]}")
        if self.o_vacancy[1] >= 1 or self.ce_vacancy[1] >= 1:
            raise ValueError("vacancy fractions must be below 1")
        if not (0 <= self.tilt_deg <= 10):
            raise ValueError(f"tilt_deg must lie in 0..10 degrees, got {self.tilt_deg}")


@dataclass
class ParticleParams:
    """One particle's drawn parameters (everything needed to rebuild it)."""

    diameter_A: float
    truncation: float
    centre_offset: tuple[float, float, float]
    flat_bottom: tuple[float, float, float] | None
    flat_bottom_depth: float
    steps: list
    o_vacancy: float
    ce_vacancy: float
    n_cation_adatoms: int
    n_anion_adatoms: int
    tilt_deg: float
    tilt_axis_deg: float
    rotation_deg: float
    shift_A: tuple[float, float]
    seed: int
    r110_frac: float | None = None  # r110 / r100 of {110} facets, None without

    def to_dict(self) -> dict:
        return asdict(self)


def draw_params(rng: np.random.Generator, env: ParticleEnvelope | None = None) -> ParticleParams:
    """Draw random particle parameters from `env`."""
    env = env or ParticleEnvelope()
    flat = None
    if rng.random() < env.flat_bottom_prob:
        flat = tuple(_LOW_INDEX[rng.integers(len(_LOW_INDEX))])
    steps = []
    for _ in range(rng.integers(0, env.steps + 1)):
        normal = _LOW_INDEX[rng.integers(len(_LOW_INDEX))]
        steps.append({"normal": normal.tolist(), "angle_deg": float(rng.uniform(0, 360)),
                      "offset": float(rng.uniform(-0.6, 0.6))})
    return ParticleParams(
        diameter_A=float(rng.uniform(*env.diameter_A)),
        truncation=float(rng.uniform(*env.truncation)),
        centre_offset=tuple(float(v) for v in rng.uniform(0, 1, 3)),
        flat_bottom=flat,
        flat_bottom_depth=float(rng.uniform(0.35, 0.8)),
        steps=steps,
        o_vacancy=float(rng.uniform(*env.o_vacancy)),
        ce_vacancy=float(rng.uniform(*env.ce_vacancy)),
        n_cation_adatoms=int(rng.integers(0, env.adatoms + 1)),
        n_anion_adatoms=int(rng.integers(0, env.adatoms + 1)),
        tilt_deg=float(rng.uniform(0, env.tilt_deg)),
        tilt_axis_deg=float(rng.uniform(0, 180)),
        rotation_deg=float(rng.uniform(0, 360)),
        shift_A=tuple(float(v) for v in rng.uniform(-env.shift_A, env.shift_A, 2)),
        seed=int(rng.integers(2**31)),
        # drawn last, so envelopes without {110} facets give the particles they always gave
        r110_frac=(float(rng.uniform(*env.truncation_110)) if env.facet_110_prob > 0
                   and rng.random() < env.facet_110_prob else None),
    )


def crystal_block(material: Material, radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice sites of `material` within a cube of half-width `radius_A` around a cation.

    Returns (positions [n, 3] in Å, crystal frame, origin on a cation; symbols [n]).
    """
    cell = material.unit_cell()
    n = int(np.ceil(radius_A / material.a_A)) + 1
    block = cell.repeat((2 * n, 2 * n, 2 * n))
    pos = block.get_positions() - n * material.a_A
    keep = np.all(np.abs(pos) <= radius_A, axis=1)
    return pos[keep], np.array(block.get_chemical_symbols())[keep]


def _coordination(pos: np.ndarray, sym: np.ndarray, of: str, by: str, r: float) -> np.ndarray:
    """Number of `by` atoms within `r` Å of each `of` atom (0 elsewhere)."""
    out = np.zeros(len(pos), int)
    i_of, i_by = np.flatnonzero(sym == of), np.flatnonzero(sym == by)
    if len(i_of) == 0 or len(i_by) == 0:
        return out
    tree = cKDTree(pos[i_by])
    out[i_of] = [len(x) for x in tree.query_ball_point(pos[i_of], r)]
    return out


def clean_surface(pos: np.ndarray, sym: np.ndarray, material: Material) -> np.ndarray:
    """Mask of atoms kept after removing under-coordinated surface anions and cations."""
    keep = np.ones(len(pos), bool)
    if material.anion is None:
        return keep
    for _ in range(3):
        p, s = pos[keep], sym[keep]
        n_cat = _coordination(p, s, material.anion, material.cation, material.bond_A)
        n_an = _coordination(p, s, material.cation, material.anion, material.bond_A)
        bad = ((s == material.anion) & (n_cat < material.min_cations_per_anion)) | (
            (s == material.cation) & (n_an < material.min_anions_per_cation))
        if not bad.any():
            break
        keep[np.flatnonzero(keep)[bad]] = False
    return keep


def _cut_shape(pos: np.ndarray, p: ParticleParams, material: Material) -> np.ndarray:
    """Mask of sites inside the faceted shape described by `p` (crystal frame, Å)."""
    r100 = p.diameter_A / 2
    r111 = r100 / p.truncation
    centre = np.asarray(p.centre_offset) * material.a_A / 2
    rel = pos - centre
    inside = (np.abs(rel).sum(1) <= np.sqrt(3) * r111) & (np.abs(rel).max(1) <= r100)
    if p.r110_frac is not None:  # {110}: |x_i| + |x_j| <= sqrt(2) r110 for every pair of axes
        a = np.abs(rel)
        r110 = p.r110_frac * r100
        inside &= np.maximum.reduce([a[:, 0] + a[:, 1], a[:, 1] + a[:, 2], a[:, 0] + a[:, 2]]) <= np.sqrt(2) * r110
    if p.flat_bottom is not None:
        n = np.asarray(p.flat_bottom, float)
        n /= np.linalg.norm(n)
        inside &= rel @ n <= p.flat_bottom_depth * r100
    for step in p.steps:
        n = np.asarray(step["normal"], float)
        n /= np.linalg.norm(n)
        h = rel @ n
        top = h[inside].max() if inside.any() else 0.0
        layer = inside & (h > top - material.a_A / np.sqrt(3) + 0.3)
        # an in-plane direction of the facet picks which side of the step is removed
        t = np.cross(n, [0.3, 0.5, 0.81])
        t /= np.linalg.norm(t)
        a = np.deg2rad(step["angle_deg"])
        m = np.cos(a) * t + np.sin(a) * np.cross(n, t)
        inside &= ~(layer & (rel @ m > step["offset"] * r100))
    return inside


def orientation_matrix(p: ParticleParams, material: Material) -> np.ndarray:
    """Rotation crystal -> beam frame: zone axis, then specimen tilt, then in-plane rotation."""
    frame = material.zone_frame()
    ax = np.deg2rad(p.tilt_axis_deg)
    axis = np.array([np.cos(ax), np.sin(ax), 0.0])
    tilt = _rotation(axis, np.deg2rad(p.tilt_deg))
    spin = _rotation(np.array([0.0, 0.0, 1.0]), np.deg2rad(p.rotation_deg))
    return spin @ tilt @ frame


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def build_particle(p: ParticleParams, material: Material = CERIA,
                   cell_A: tuple[float, float] = (51.2, 51.2), margin_A: float = 2.0) -> Atoms:
    """Build the particle described by `p`, oriented for imaging.

    The particle sits in a cell of `cell_A` (x, y, Å), centred plus `p.shift_A`, beam
    along +z, atoms from z = `margin_A`. Each atom keeps its crystal-frame position in
    `atoms.arrays["lattice_pos"]` (Å, before defects move nothing: vacancies only delete).
    """
    rng = np.random.default_rng(p.seed)
    pos, sym = crystal_block(material, p.diameter_A / 2 + 2 * material.a_A)
    inside = _cut_shape(pos, p, material)
    keep = inside.copy()
    keep[np.flatnonzero(inside)[~clean_surface(pos[inside], sym[inside], material)]] = False

    # vacancies: remove a drawn fraction of each species
    for species, frac in ((material.anion, p.o_vacancy), (material.cation, p.ce_vacancy)):
        idx = np.flatnonzero(keep & (sym == species))
        n = int(round(frac * len(idx)))
        if n:
            keep[rng.choice(idx, n, replace=False)] = False

    # adatoms: empty lattice sites just outside the particle, bonded to it
    for species, partner, count in ((material.cation, material.anion, p.n_cation_adatoms),
                                    (material.anion, material.cation, p.n_anion_adatoms)):
        if count == 0 or partner is None:
            continue
        tree = cKDTree(pos[keep & (sym == partner)])
        cand = np.flatnonzero(~inside & (sym == species))
        if len(cand) == 0 or tree.n == 0:
            continue
        nb = np.array([len(x) for x in tree.query_ball_point(pos[cand], material.bond_A)])
        cand = cand[nb >= (2 if species == material.cation else 1)]
        if len(cand):
            keep[rng.choice(cand, min(count, len(cand)), replace=False)] = True

    lattice = pos[keep]
    rot = orientation_matrix(p, material)
    xyz = lattice @ rot.T
    xyz[:, :2] += np.asarray(cell_A) / 2 - (xyz[:, :2].min(0) + xyz[:, :2].max(0)) / 2
    # shift, but never closer than 2 Å to the cell edge (the potential is periodic)
    room = np.maximum(np.minimum(xyz[:, :2].min(0), np.asarray(cell_A) - xyz[:, :2].max(0)) - 2.0, 0)
    xyz[:, :2] += np.clip(p.shift_A, -room, room)
    xyz[:, 2] += margin_A - xyz[:, 2].min()
    if xyz[:, :2].min() < 0 or (xyz[:, :2] > np.asarray(cell_A)).any():
        raise ValueError(f"particle ({np.ptp(xyz[:, :2], 0).round(1)} Å) does not fit a {cell_A} Å cell")
    thickness = xyz[:, 2].max() + margin_A
    atoms = Atoms(symbols=sym[keep].tolist(), positions=xyz, cell=[cell_A[0], cell_A[1], thickness])
    atoms.arrays["lattice_pos"] = lattice
    atoms.info["material"] = material.name
    return atoms


def random_particle(rng: np.random.Generator, env: ParticleEnvelope | None = None,
                    material: Material = CERIA, cell_A: tuple[float, float] = (51.2, 51.2),
                    ) -> tuple[Atoms, ParticleParams]:
    """Draw parameters from `env` and build the particle; redraw (up to 20 times) if it does not fit."""
    for _ in range(20):
        p = draw_params(rng, env)
        try:
            return build_particle(p, material, cell_A), p
        except ValueError:
            continue
    raise ValueError(f"particles drawn from {env} do not fit a {cell_A} Å cell; use a larger cell")
