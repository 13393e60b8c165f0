"""The robustness benchmark's own CeO2 particle builder and column ground truth (not hrtem3d.structure).

Particles are cut from ase's fluorite cell (a = 5.411 Å), oriented with [110] along the beam (z):
rows [1,-1,0]/sqrt2 -> x, [0,0,1] -> y, [1,1,0]/sqrt2 -> z. Two families:

- ``"wulff"``: {111} and {100} planes with r100/r111 outside the training range (1.1..1.6): either
  cube-like (0.85..1.1) or near-octahedral (1.6..1.73); each plane jittered by up to 8 %; {110} facets
  with probability 0.4.
- ``"shapes"``: random convex polyhedra (8..20 planes with random normals, bounded by {100} and {111}
  planes), {110} facets with probability 0.7, sizes of about 2 or 4 nm.

Both: 0..2 surface steps, 0..3 Ce adatoms on lattice sites, depth capped at 12 atoms per column, O with
fewer than 2 Ce within 2.5 Å removed, a tilt of at most 0.5 degree. Lengths in Å throughout.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

A_CEO2 = 5.411  # lattice parameter (Å)
COLUMN_SPACING_A = A_CEO2 / np.sqrt(2)  # atoms along a [110] column (3.826 Å)
ROTATION = np.array([[1, -1, 0], [0, 0, np.sqrt(2)], [1, 1, 0]]) / np.sqrt(2)  # crystal -> beam frame (rows)
MAX_COLUMN_ATOMS = 12
_F100 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
_F111 = np.array([[i, j, k] for i in (1, -1) for j in (1, -1) for k in (1, -1)], float) / np.sqrt(3)
_F110 = np.array([v for v in ([1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1])
                  for v in (v, [-c for c in v])], float) / np.sqrt(2)
# spacing of the outermost atomic layers of each facet family (Å): {111} a/sqrt3, {100} a/2 (Ce), {110} a/2sqrt2
_LAYER = {"111": A_CEO2 / np.sqrt(3), "100": A_CEO2 / 2, "110": A_CEO2 / (2 * np.sqrt(2)), "random": 2.0}


def crystal_block(radius_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Fluorite CeO2 atoms (crystal frame, Å, a Ce atom at the origin) filling a cube of half-width >= radius_A."""
    from ase.build import bulk

    cell = bulk("CeO2", "fluorite", a=A_CEO2, cubic=True)
    n = int(np.ceil(2 * radius_A / A_CEO2)) + 3
    atoms = cell.repeat((n, n, n))
    pos = atoms.positions - (n // 2) * A_CEO2
    return pos, np.array(atoms.get_chemical_symbols())


def draw_shape(rng: np.random.Generator, family: str = "wulff", diameter_A: float | None = None) -> dict:
    """Random cutting planes (crystal frame): {"planes": [[nx, ny, nz, d_A, kind], ...], ...} (JSON-ready).

    Args:
        rng: random generator.
        family: "wulff" or "shapes" (see the module docstring).
        diameter_A: particle width (Å); default drawn in 20..40 Å.
    """
    d = float(diameter_A if diameter_A is not None else rng.uniform(20.0, 40.0))
    r = d / 2
    planes = []

    def add(normals, dist, kind, jitter):
        for n in normals:
            planes.append([*map(float, n), float(dist * (1 + rng.uniform(-jitter, jitter))), kind])

    if family == "wulff":
        ratio = float(rng.uniform(0.85, 1.1) if rng.random() < 0.5 else rng.uniform(1.6, 1.73))
        add(_F100, r, "100", 0.08)
        add(_F111, r / ratio, "111", 0.08)
        if rng.random() < 0.4:
            add(_F110, r * rng.uniform(0.95, 1.3), "110", 0.08)
        info = {"r100_over_r111": ratio}
    elif family == "shapes":
        k = int(rng.integers(8, 21))
        normals = rng.normal(size=(k, 3))
        add(normals / np.linalg.norm(normals, axis=1, keepdims=True), r * 0.9, "random", 0.11)
        add(_F100, r, "100", 0.0)
        add(_F111, r, "111", 0.0)
        if rng.random() < 0.7:
            add(_F110, r * rng.uniform(0.8, 1.0), "110", 0.05)
        info = {"n_random_planes": k}
    else:
        raise ValueError(f"unknown particle family {family!r}; use 'wulff' or 'shapes'")
    centre = rng.uniform(-A_CEO2 / 2, A_CEO2 / 2, 3)  # cut centre relative to a Ce site (crystal frame)
    steps = []
    for _ in range(int(rng.integers(0, 3))):
        m = rng.normal(size=3)
        steps.append({"plane": int(rng.integers(len(planes))), "dir": m.tolist(),
                      "offset": float(rng.uniform(-0.3, 0.3))})
    axis = rng.normal(size=2)
    return {"family": family, "diameter_A": d, "planes": planes, "centre_A": centre.tolist(), "steps": steps,
            "adatoms": int(rng.integers(0, 4)), "tilt_deg": float(rng.uniform(0.0, 0.5)),
            "tilt_axis": (axis / np.linalg.norm(axis)).tolist(), "seed": int(rng.integers(2**31)), **info}


def _coordination(pos: np.ndarray, of: np.ndarray, by: np.ndarray, r: float) -> np.ndarray:
    """Number of `by` atoms within r (Å) of each `of` atom."""
    if not of.any() or not by.any():
        return np.zeros(int(of.sum()), int)
    return np.array([len(x) for x in cKDTree(pos[by]).query_ball_point(pos[of], r)])


def cut_particle(shape: dict) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of the particle in the beam frame (Å, centred near 0) and their symbols.

    The planes are scaled together so that the projected width (largest x or y extent plus 1 Å) is about
    `diameter_A`. Cut by the planes, the steps and the 12-atom depth cap; Ce adatoms added on lattice sites; O with
    fewer than 2 Ce within 2.5 Å removed; then tilted by `tilt_deg` about `tilt_axis` (in the xy plane).
    """
    pos, sym = crystal_block(shape["diameter_A"] / 2 + 12)
    scale = 1.0
    for _ in range(3):  # rescale the planes until the projected width matches diameter_A
        lab, s = _cut(shape, pos, sym, scale)
        width = max(np.ptp(lab[:, 0]), np.ptp(lab[:, 1])) + 1.0  # + about an atom's size
        if abs(width / shape["diameter_A"] - 1) < 0.03:
            break
        scale *= shape["diameter_A"] / width
    return tilt(lab, shape["tilt_deg"], shape["tilt_axis"]), s


def _cut(shape: dict, pos: np.ndarray, sym: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(shape["seed"])
    rel = pos - np.asarray(shape["centre_A"])
    planes = shape["planes"]
    normals = np.array([p[:3] for p in planes], float)
    dists = np.array([p[3] for p in planes], float) * scale
    proj = rel @ normals.T
    inside = (proj <= dists).all(1)
    zb = rel @ ROTATION[2]  # depth along the beam: cap at 12 atoms per column
    half = MAX_COLUMN_ATOMS / 2 * COLUMN_SPACING_A - 0.05
    inside &= np.abs(zb) <= half
    for st in shape["steps"]:
        k = st["plane"]
        n = normals[k]
        m = np.asarray(st["dir"], float)
        m = m - (m @ n) * n
        m /= np.linalg.norm(m) + 1e-12
        layer = proj[:, k] > dists[k] - _LAYER[planes[k][4]]
        inside &= ~(layer & (rel @ m > st["offset"] * scale * shape["diameter_A"] / 2))
    ce = sym == "Ce"
    if shape["adatoms"]:  # Ce sites just outside with >= 3 Ce neighbours (3.83 Å) in the particle
        cand = np.flatnonzero(ce & ~inside & (np.abs(zb) <= half))
        if len(cand):
            nb = _coordination(pos, np.isin(np.arange(len(pos)), cand), inside & ce, 3.9)
            good = cand[nb >= 3]
            if len(good):
                inside[rng.choice(good, min(shape["adatoms"], len(good)), replace=False)] = True
    o = (sym == "O") & inside
    o_idx = np.flatnonzero(o)
    keep_o = _coordination(pos, o, inside & ce, 2.5) >= 2
    inside[o_idx[~keep_o]] = False
    pos, sym = pos[inside], sym[inside]
    lab = pos @ ROTATION.T
    return lab - lab.mean(0), sym


def tilt(pos: np.ndarray, angle_deg: float, axis_xy) -> np.ndarray:
    """Rotate `pos` (Å) by `angle_deg` about the in-plane unit axis (ax, ay, 0) through the origin."""
    if not angle_deg:
        return pos
    from scipy.spatial.transform import Rotation

    ax = np.array([axis_xy[0], axis_xy[1], 0.0])
    return Rotation.from_rotvec(np.deg2rad(angle_deg) * ax / np.linalg.norm(ax)).apply(pos)


def carbon_film(rng: np.random.Generator, extent_A: tuple[float, float], thickness_A: float,
                density_g_cm3: float = 2.0, min_dist_A: float = 1.3) -> np.ndarray:
    """Amorphous carbon: random C positions (Å, z from 0 to thickness_A) at `density_g_cm3`, no two closer
    than `min_dist_A` (periodic in x and y), by random sequential addition."""
    if thickness_A <= 0:
        return np.zeros((0, 3))
    lx, ly = extent_A
    target = int(round(density_g_cm3 / 12.011 * 6.02214076e23 * 1e-24 * lx * ly * thickness_A))
    nx, ny, nz = int(lx // min_dist_A), int(ly // min_dist_A), max(1, int(thickness_A // min_dist_A))
    size = np.array([lx / nx, ly / ny, thickness_A / nz])
    grid: dict[tuple[int, int, int], list[int]] = {}
    out = np.zeros((target, 3))
    n, tries, d2 = 0, 0, min_dist_A**2
    while n < target and tries < 50 * target:
        batch = rng.uniform(0, 1, (4096, 3)) * [lx, ly, thickness_A]
        for p in batch:
            tries += 1
            c = (p // size).astype(int)
            ok = True
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dz in (-1, 0, 1):
                        for j in grid.get(((c[0] + dx) % nx, (c[1] + dy) % ny, c[2] + dz), ()):
                            dd = p - out[j]
                            dd[0] -= lx * np.round(dd[0] / lx)
                            dd[1] -= ly * np.round(dd[1] / ly)
                            if dd @ dd < d2:
                                ok = False
                                break
                        if not ok:
                            break
                    if not ok:
                        break
                if not ok:
                    break
            if ok:
                out[n] = p
                grid.setdefault((c[0], c[1], c[2]), []).append(n)
                n += 1
                if n == target:
                    break
    return out[:n]


def column_truth(pos: np.ndarray, sym: np.ndarray, group_A: float = 0.3) -> list[dict]:
    """Atomic columns: atoms linked by projected (x, y) distances below `group_A` (Å), single linkage.

    Returns one dict per column: species (the majority; `pure` False if mixed), x_A, y_A (mean projected
    position, Å, the frame of `pos`), n_atoms, z_min_A, z_max_A.
    """
    if len(pos) == 0:
        return []
    pairs = cKDTree(pos[:, :2]).query_pairs(group_A, output_type="ndarray")
    from scipy.sparse import coo_matrix

    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pos), len(pos)))
    n_groups, label = connected_components(g, directed=False)
    cols = []
    for k in range(n_groups):
        m = label == k
        species, counts = np.unique(sym[m], return_counts=True)
        cols.append({"species": str(species[counts.argmax()]), "pure": bool(len(species) == 1),
                     "x_A": float(pos[m, 0].mean()), "y_A": float(pos[m, 1].mean()), "n_atoms": int(m.sum()),
                     "z_min_A": float(pos[m, 2].min()), "z_max_A": float(pos[m, 2].max())})
    return cols
