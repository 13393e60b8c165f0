import numpy as np
import pytest
from scipy.spatial import cKDTree

from hrtem3d.structure import CERIA, ParticleEnvelope, build_particle, column_table, random_particle
from hrtem3d.structure.particle import clean_surface, crystal_block, draw_params


def _params(seed=0, **kw):
    env = ParticleEnvelope(adatoms=0, steps=0, flat_bottom_prob=0.0, o_vacancy=(0, 0), ce_vacancy=(0, 0),
                           tilt_deg=0.0)
    p = draw_params(np.random.default_rng(seed), env)
    p.rotation_deg = 0.0
    p.shift_A = (0.0, 0.0)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_column_counts_sum_to_atoms():
    for seed in range(4):
        atoms, _ = random_particle(np.random.default_rng(seed))
        cols = column_table(atoms)
        assert cols.n_atoms.sum() == len(atoms)
        assert (cols.n_atoms >= 1).all()
        for sp in ("Ce", "O"):
            assert cols[cols.species == sp].n_atoms.sum() == atoms.get_chemical_symbols().count(sp)


def test_perfect_crystal_projected_spacings():
    atoms = build_particle(_params(diameter_A=30.0, truncation=1.3))
    cols = column_table(atoms)
    ce = cols[cols.species == "Ce"][["x_A", "y_A"]].to_numpy()
    o = cols[cols.species == "O"][["x_A", "y_A"]].to_numpy()
    d_ce, _ = cKDTree(ce).query(ce, k=2)
    assert np.median(d_ce[:, 1]) == pytest.approx(3.314, abs=0.002)
    d_oce, _ = cKDTree(ce).query(o)
    assert d_oce.min() == pytest.approx(1.353, abs=0.002)
    d_oo, _ = cKDTree(o).query(o, k=2)
    assert np.median(d_oo[:, 1]) == pytest.approx(1.913, abs=0.002)
    # along a column: atoms 3.826 Å apart
    z = atoms.positions[:, 2]
    deep = cols.sort_values("n_atoms").iloc[-1]
    assert (deep.z_max_A - deep.z_min_A) / (deep.n_atoms - 1) == pytest.approx(3.826, abs=0.002)
    assert np.ptp(z) > 10


def test_projected_cell_has_two_ce_and_four_o_columns():
    atoms = build_particle(_params(diameter_A=30.0, truncation=1.3))
    cols = column_table(atoms)
    n_ce, n_o = (cols.species == "Ce").sum(), (cols.species == "O").sum()
    assert n_o / n_ce == pytest.approx(2.0, rel=0.25)


def test_tilted_column_stays_one_column():
    flat = column_table(build_particle(_params(diameter_A=30.0)))
    tilted = column_table(build_particle(_params(diameter_A=30.0, tilt_deg=1.0, tilt_axis_deg=30.0)))
    assert len(flat) == len(tilted)
    merged = flat.merge(tilted, on=["species", "key_u", "key_v"], suffixes=("", "_t"))
    assert len(merged) == len(flat)
    assert (merged.n_atoms == merged.n_atoms_t).all()
    # the tilt moves the mean positions a little, never by a column spacing
    shift = np.hypot(merged.x_A - merged.x_A_t, merged.y_A - merged.y_A_t)
    assert shift.max() < 1.0


def test_vacancies_lower_exactly_their_columns():
    full = column_table(build_particle(_params(diameter_A=30.0)))
    holes = column_table(build_particle(_params(diameter_A=30.0, o_vacancy=0.06, ce_vacancy=0.03)))
    m = full.merge(holes, on=["species", "key_u", "key_v"], how="left", suffixes=("", "_v"))
    m["n_atoms_v"] = m["n_atoms_v"].fillna(0)
    lost = m.n_atoms - m.n_atoms_v
    assert (lost >= 0).all()
    n_o, n_ce = full[full.species == "O"].n_atoms.sum(), full[full.species == "Ce"].n_atoms.sum()
    assert lost[m.species == "O"].sum() == round(0.06 * n_o)
    assert lost[m.species == "Ce"].sum() == round(0.03 * n_ce)
    assert (lost > 0).sum() > 5


def test_surface_cleanup_removes_excess_oxygen():
    from hrtem3d.structure.particle import _coordination, _cut_shape

    pos, sym = crystal_block(CERIA, 30.0)
    naive, cleaned = [], []
    for seed in range(6):
        p = _params(seed)
        inside = _cut_shape(pos, p, CERIA)
        ps, ss = pos[inside], sym[inside]
        keep = clean_surface(ps, ss, CERIA)
        naive.append((ss == "O").sum() / (ss == "Ce").sum())
        cleaned.append((ss[keep] == "O").sum() / (ss[keep] == "Ce").sum())
        n_ce = _coordination(ps[keep], ss[keep], "O", "Ce", CERIA.bond_A)
        assert n_ce[ss[keep] == "O"].min() >= 2
    assert max(naive) > 2.2
    assert all(c < n - 0.1 for n, c in zip(naive, cleaned) if n > 2.05)
    assert all(1.6 < c < 2.15 for c in cleaned)


def test_particles_fit_the_cell_and_vary():
    sizes = []
    for seed in range(6):
        atoms, p = random_particle(np.random.default_rng(seed))
        xy = atoms.positions[:, :2]
        assert xy.min() >= 0 and xy.max() <= 51.2
        sizes.append(len(atoms))
        assert 20 <= p.diameter_A <= 40 and p.tilt_deg <= 1.0
    assert len(set(sizes)) == len(sizes)


def test_impossible_envelope_rejected():
    with pytest.raises(ValueError, match="diameter_A"):
        ParticleEnvelope(diameter_A=(40.0, 20.0)).validate()
    with pytest.raises(ValueError, match="vacancy"):
        ParticleEnvelope(o_vacancy=(0.0, 1.5)).validate()
