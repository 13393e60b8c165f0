"""The estimated 3D model from a column table: counts, spacing, volume, files, and `segment --export-3d`."""

from collections import Counter

import ase.io
import numpy as np
import pandas as pd
import pytest
from ase.io.cif import parse_cif
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.errors import HrtemError
from hrtem3d.export.model3d import columns_to_atoms, hull_volume_A3, write_model
from hrtem3d.structure import CERIA, ParticleEnvelope, column_table, random_particle

runner = CliRunner()
SPACING = CERIA.spacing_along_beam_A


def _convex_particle(seed: int, diameter_A: float):
    """A convex particle: no tilt, steps, vacancies, adatoms or flat bottom."""
    env = ParticleEnvelope(diameter_A=(diameter_A, diameter_A), flat_bottom_prob=0.0, steps=0,
                           o_vacancy=(0.0, 0.0), ce_vacancy=(0.0, 0.0), adatoms=0, tilt_deg=0.0, shift_A=0.0)
    atoms, p = random_particle(np.random.default_rng(seed), env)
    assert p.flat_bottom is None and p.steps == [] and p.tilt_deg == 0
    assert p.o_vacancy == 0 and p.ce_vacancy == 0 and p.n_cation_adatoms == 0 and p.n_anion_adatoms == 0
    return atoms, column_table(atoms)


def _by_column(atoms) -> dict:
    """Sorted z of the atoms of each column, keyed by (species, x, y) rounded to 1e-4 Å."""
    pos = atoms.get_positions()
    df = pd.DataFrame({"s": atoms.get_chemical_symbols(), "x": pos[:, 0].round(4), "y": pos[:, 1].round(4),
                       "z": pos[:, 2]})
    return {k: np.sort(g.z.to_numpy()) for k, g in df.groupby(["s", "x", "y"])}


@pytest.fixture(scope="module")
def particle():
    return _convex_particle(0, 22.0)


@pytest.mark.parametrize("rule", ["symmetric", "flat"])
def test_every_column_keeps_its_count_species_and_spacing(particle, rule):
    atoms, cols = particle
    model = columns_to_atoms(cols, rule)
    assert len(model) == cols.n_atoms.sum() == len(atoms)
    assert Counter(model.get_chemical_symbols()) == Counter(atoms.get_chemical_symbols())
    got = _by_column(model)
    want = {(r.species, round(r.x_A, 4), round(r.y_A, 4)): r.n_atoms for r in cols.itertuples()}
    assert {k: len(z) for k, z in got.items()} == want
    for z in got.values():
        assert np.allclose(np.diff(z), SPACING, rtol=0, atol=1e-9)
        if rule == "symmetric":
            assert z.min() + z.max() == pytest.approx(0, abs=1e-9)
        else:
            assert z.min() == 0
    assert not model.pbc.any()
    lo = np.asarray(model.get_celldisp()).ravel()
    assert (model.positions > lo).all() and (model.positions < lo + model.cell.lengths()).all()


@pytest.mark.parametrize("seed,diameter_A", [(0, 15.0), (1, 25.0), (2, 35.0), (3, 40.0)])
def test_symmetric_model_has_the_true_hull_volume(seed, diameter_A):
    atoms, cols = _convex_particle(seed, diameter_A)
    true = hull_volume_A3(atoms)
    sym = hull_volume_A3(columns_to_atoms(cols, "symmetric"))
    assert sym / true == pytest.approx(1, abs=0.10), (sym, true)
    # both rules are volume-preserving rearrangements of the columns: the same hull volume
    assert hull_volume_A3(columns_to_atoms(cols, "flat")) == pytest.approx(sym, rel=1e-9)


def test_table_fields_become_per_atom_arrays():
    cols = pd.DataFrame({"frame": [2, 2], "column_id": [7, 9], "x_A": [1.0, 4.0], "y_A": [2.0, 2.0],
                         "species": ["Ce", "O"], "n_atoms": [3, 2], "confidence": [0.9, 0.4]})
    m = columns_to_atoms(cols, spacing_A=2.0)
    assert m.get_chemical_symbols() == ["Ce"] * 3 + ["O"] * 2
    assert list(m.arrays["column_id"]) == [7, 7, 7, 9, 9]
    assert list(m.arrays["confidence"]) == [0.9, 0.9, 0.9, 0.4, 0.4]
    assert list(m.positions[:, 2]) == [-2.0, 0.0, 2.0, -1.0, 1.0]
    assert m.info["frame"] == 2 and m.info["rule"] == "symmetric" and m.info["spacing_A"] == 2.0
    assert len(columns_to_atoms(cols.iloc[:0])) == 0


def test_files_read_back(particle, tmp_path):
    _, cols = particle
    sym, flat = columns_to_atoms(cols, "symmetric"), columns_to_atoms(cols, "flat")
    files = write_model([sym, flat], tmp_path / "m")
    assert [f.name for f in files] == ["m.xyz", "m.cif"]
    assert not list(tmp_path.glob("*.partial*"))
    frames = ase.io.read(files[0], index=":")
    assert len(frames) == 2
    for got, want in zip(frames, (sym, flat)):
        assert got.get_chemical_symbols() == want.get_chemical_symbols()
        assert np.allclose(got.positions, want.positions, atol=1e-6)
    cif = ase.io.read(files[1])
    assert cif.get_chemical_symbols() == sym.get_chemical_symbols()
    shift = cif.positions - sym.positions  # the .cif is the model moved into its box
    assert np.allclose(shift, shift[0], atol=1e-5)
    assert write_model(columns_to_atoms(cols.iloc[:0]), tmp_path / "empty") == [tmp_path / "empty.xyz"]


GOOD = {"x_A": [1.0, 2.0], "y_A": [1.0, 1.0], "species": ["Ce", "O"], "n_atoms": [2, 3]}


@pytest.mark.parametrize("change,message", [
    ({"n_atoms": None}, "lacks field"),
    ({"species": None}, "lacks field"),
    ({"n_atoms": [0, 3]}, "n_atoms"),
    ({"n_atoms": [np.nan, 3]}, "n_atoms"),
    ({"n_atoms": [2.5, 3]}, "n_atoms"),
    ({"n_atoms": ["two", 3]}, "n_atoms"),
    ({"x_A": [np.nan, 2.0]}, "x_A"),
    ({"species": ["Ce", "Xx"]}, "element"),
    ({"frame": [0, 1]}, "frames"),
])
def test_bad_tables_are_one_clear_error(change, message):
    d = dict(GOOD)
    for k, v in change.items():
        if v is None:
            del d[k]
        else:
            d[k] = v
    with pytest.raises(HrtemError, match=message) as e:
        columns_to_atoms(pd.DataFrame(d))
    assert "\n" not in str(e.value)


def test_hull_volume_of_a_regular_tetrahedron_and_of_three_atoms():
    """Four atoms at alternate corners of a cube of side 2 s: a regular tetrahedron of edge
    a = 2 sqrt(2) s and volume a^3 / (6 sqrt(2)) (= 8 s^3 / 3, the cube less its four corners);
    three atoms have no volume."""
    from ase import Atoms

    s = 1.7
    corners = s * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) + [3.0, -2.0, 0.5]
    a = 2 * np.sqrt(2) * s
    assert hull_volume_A3(Atoms("Ce4", positions=corners)) == pytest.approx(a**3 / (6 * np.sqrt(2)), rel=1e-12)
    assert hull_volume_A3(Atoms("Ce4", positions=corners)) == pytest.approx(8 * s**3 / 3, rel=1e-12)
    assert hull_volume_A3(Atoms("Ce3", positions=corners[:3])) == 0.0


def test_spacing_below_one_angstrom_stacks_atoms_that_far_apart():
    """spacing_A = 0.5 Å: a 3-atom column sits at z = -0.5, 0, 0.5 (symmetric) or 0, 0.5, 1 Å (flat)."""
    one = pd.DataFrame({"x_A": [1.0], "y_A": [2.0], "species": ["Ce"], "n_atoms": [3]})
    sym = columns_to_atoms(one, "symmetric", spacing_A=0.5)
    assert np.allclose(np.sort(sym.positions[:, 2]), [-0.5, 0.0, 0.5])
    assert np.allclose(sym.positions[:, :2], [1.0, 2.0])
    assert sym.info["spacing_A"] == 0.5
    assert np.allclose(np.sort(columns_to_atoms(one, "flat", spacing_A=0.5).positions[:, 2]), [0.0, 0.5, 1.0])
    for bad in (0.0, -0.5, np.nan):
        with pytest.raises(HrtemError, match="spacing along the beam must be a positive length") as e:
            columns_to_atoms(one, spacing_A=bad)
        assert "\n" not in str(e.value)


def test_bad_rule_or_spacing_is_an_error():
    with pytest.raises(HrtemError, match="stacking rule"):
        columns_to_atoms(pd.DataFrame(GOOD), rule="top")
    with pytest.raises(HrtemError, match="spacing"):
        columns_to_atoms(pd.DataFrame(GOOD), spacing_A=0)
    with pytest.raises(HrtemError, match="DataFrame"):
        columns_to_atoms([1, 2])


def test_segment_command_exports_the_3d_model(tiny_model, tiny_store, tmp_path):
    from hrtem3d.data.dataset import HrtemDataset

    img = HrtemDataset(tiny_store, crop=96, dose=3000, augment=False).draw(0, structure=0)["counts"]
    npy = tmp_path / "particle.npy"
    np.save(npy, np.asarray(img, np.float32))
    out = tmp_path / "out"
    r = runner.invoke(app, ["segment", str(npy), "--pixel-size", "0.16", "--out", str(out), "--export-3d",
                            "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 0, r.output
    d = out / "particle"
    table = pd.read_csv(d / "columns.csv")
    assert table.n_atoms.sum() > 0, "the tiny model found no columns: nothing to test"
    xyz = ase.io.read(d / "model.xyz")
    # ase.io.read of a large P1 CIF spends seconds looking for symmetry copies; read the sites as they are
    cif = next(parse_cif(str(d / "model.cif"))).get_unsymmetrized_structure()
    assert len(xyz) == len(cif) == table.n_atoms.sum()
    assert Counter(xyz.get_chemical_symbols()) == Counter(np.repeat(table.species, table.n_atoms))
    assert "model.xyz" in r.output
    r = runner.invoke(app, ["segment", str(npy), "--pixel-size", "0.16", "--out", str(out), "--export-3d",
                            "--stack-rule", "top", "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 2 and "stacking rule" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_non_convex_particle_keeps_counts_and_never_grows(seed):
    """Steps, a flat bottom and vacancies: every column keeps its count and species, and the model's hull
    is no larger than the particle's (Steiner symmetrisation of a non-convex body: hull(S K) lies in
    S(hull K), of the same volume as hull K), here 5-7 % smaller: the vacancies inside columns close up."""
    env = ParticleEnvelope(diameter_A=(25.0, 25.0), flat_bottom_prob=1.0, steps=2, o_vacancy=(0.05, 0.08),
                           ce_vacancy=(0.02, 0.03), adatoms=0, tilt_deg=0.0, shift_A=0.0)
    atoms, p = random_particle(np.random.default_rng(seed), env)
    assert p.flat_bottom is not None and p.o_vacancy > 0
    cols = column_table(atoms)
    model = columns_to_atoms(cols, "symmetric")
    got = {k: len(z) for k, z in _by_column(model).items()}
    assert got == {(r.species, round(r.x_A, 4), round(r.y_A, 4)): r.n_atoms for r in cols.itertuples()}
    assert Counter(model.get_chemical_symbols()) == Counter(atoms.get_chemical_symbols())
    ratio = hull_volume_A3(model) / hull_volume_A3(atoms)
    assert 0.85 < ratio <= 1 + 1e-9, ratio


def test_segment_exports_one_model_per_frame(shipped_movie, tmp_path):
    """Three frames of a simulated movie through `segment --export-3d` with the shipped model: one model a
    frame, each with that frame's columns, within 10 % of the true number of atoms."""
    m = shipped_movie
    npy = tmp_path / "movie.npy"
    np.save(npy, m.frames[:3])
    out = tmp_path / "out"
    r = runner.invoke(app, ["segment", str(npy), "--pixel-size", str(m.pixel_size_A), "--out", str(out),
                            "--export-3d", "--contrast", "bright", "--no-progress"])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "movie" / "columns.csv")
    models = ase.io.read(out / "movie" / "model.xyz", index=":")
    assert len(models) == 3 == table.frame.nunique()
    for f, model in enumerate(models):
        rows = table[table.frame == f]
        assert len(model) == rows.n_atoms.sum()
        assert Counter(model.get_chemical_symbols()) == Counter(np.repeat(rows.species, rows.n_atoms))
        truth = m.truth[m.truth.frame == f].n_atoms.sum()
        assert abs(len(model) - truth) <= 0.1 * truth, (f, len(model), truth)
        # the atoms sit on the frame's columns (x_A, y_A of the table)
        xy = rows[["x_A", "y_A"]].to_numpy()
        d = np.hypot(*(model.positions[:, None, :2] - xy[None]).transpose(2, 0, 1)).min(1)
        assert d.max() < 1e-3
