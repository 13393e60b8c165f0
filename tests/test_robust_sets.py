"""The robustness benchmark's set builder (benchmarks/robust_sets.py): ground truth and noise on one tiny set."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytest.importorskip("abtem")
tifffile = pytest.importorskip("tifffile")

import robust_particles as rp  # noqa: E402
import robust_sets as rs  # noqa: E402

TINY = rs.BuildConfig(n_particles=1, seed=3, cell_A=21.0, field_A=(18.0, 19.0), sampling_A=0.1,
                      diameter_A=(11.0, 12.0), pixel_A=0.1, doses=(5000.0,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache = tmp_path_factory.mktemp("robust")
    folders = {name: rs.build_set(name, cache, TINY, progress=False) for name in ("clean_0p10", "mtf_none")}
    return cache, folders


def test_truth_matches_the_atoms(tiny):
    _, folders = tiny
    meta = json.loads((folders["clean_0p10"] / "p0_meta.json").read_text())
    cols = json.loads((folders["clean_0p10"] / "p0_columns.json").read_text())
    assert meta["n_atoms_carbon"] == 0
    assert sum(c["n_atoms"] for c in cols) == meta["n_atoms_particle"]  # every atom in exactly one column
    assert all(c["pure"] for c in cols) and max(c["n_atoms"] for c in cols) <= rp.MAX_COLUMN_ATOMS
    px = meta["pixel_size_angstrom"]
    for c in cols:
        assert c["x_A"] == pytest.approx(c["x_px"] * px) and c["y_A"] == pytest.approx(c["y_px"] * px)
        assert 0 <= c["x_px"] <= meta["field_px"] - 1 and 0 <= c["y_px"] <= meta["field_px"] - 1
    # atoms along a column 3.83 Å apart (a/sqrt2), within the tilt's cosine
    spacing = [(c["z_max_A"] - c["z_min_A"]) / (c["n_atoms"] - 1) for c in cols if c["n_atoms"] > 1]
    assert np.median(spacing) == pytest.approx(rp.COLUMN_SPACING_A, abs=0.02)
    xy = {sp: np.array([[c["x_A"], c["y_A"]] for c in cols if c["species"] == sp]) for sp in ("Ce", "O")}
    ce_ce = cKDTree(xy["Ce"]).query(xy["Ce"], 2)[0][:, 1]
    assert np.median(ce_ce) == pytest.approx(3.314, abs=0.03)  # Ce-Ce in the [110] projection
    o_o = cKDTree(xy["O"]).query(xy["O"], 2)[0][:, 1]
    assert np.median(o_o) == pytest.approx(1.913, abs=0.03)
    assert np.median(cKDTree(xy["Ce"]).query(xy["O"])[0]) == pytest.approx(1.353, abs=0.03)


def test_column_grouping_follows_the_lattice():
    shape = rp.draw_shape(np.random.default_rng(5), "shapes", 16.0)
    pos, sym = rp.cut_particle(dict(shape, tilt_deg=0.0))
    crystal = pos @ rp.ROTATION  # back to the crystal frame: columns are the lattice lines (x - y, z)
    crystal -= crystal[0]  # a lattice site at the origin
    lattice = {(round((a - b) / (rp.A_CEO2 / 4)), round(c / (rp.A_CEO2 / 4))) for a, b, c in crystal}
    assert len(rp.column_truth(pos, sym)) == len(lattice)
    o = sym == "O"
    ce_near = np.array([len(v) for v in cKDTree(pos[~o]).query_ball_point(pos[o], 2.5)])
    assert (ce_near >= 2).all()  # surface O with fewer than 2 Ce removed


def test_noisy_counts_have_the_dose(tiny):
    _, folders = tiny
    for name, gain in (("clean_0p10", 8), ("mtf_none", 1)):
        folder = folders[name]
        meta = json.loads((folder / "meta.json").read_text())
        case = meta["cases"][0]
        px, dose = case["pixel_size_angstrom"], case["dose_e_per_A2"]
        assert case["gain_adu_per_e"] == gain
        noisy = tifffile.imread(folder / case["image"]).astype(float) / gain
        clean = tifffile.imread(folder / "p0_clean.tif").astype(float)
        assert noisy.shape == clean.shape
        assert noisy.sum() / (clean.sum() * dose * px**2) == pytest.approx(1.0, abs=0.01)
        cols = json.loads((folder / "p0_columns.json").read_text())
        yy, xx = np.mgrid[: clean.shape[0], : clean.shape[1]]
        d, _ = cKDTree([[c["x_px"], c["y_px"]] for c in cols]).query(np.c_[xx.ravel(), yy.ravel()])
        vac = (d * px > 5.0).reshape(clean.shape)
        assert vac.sum() > 2000
        assert noisy[vac].mean() == pytest.approx(dose * px**2, rel=0.03)  # vacuum: dose x pixel area
        if gain == 1:  # plain Poisson counts: variance = mean
            assert noisy[vac].var() == pytest.approx(noisy[vac].mean(), rel=0.15)
    again = rs.build_set("clean_0p10", tiny[0], TINY)  # built already: skipped, files kept
    assert again == folders["clean_0p10"]


def test_envelope_edge_sets_tilt_the_particle_and_take_atoms_out():
    """`tilt` redraws the base particle's tilt at 0.6-1 degree; `vacancies` removes O and Ce at random, and the
    truth counts only the atoms left (no multislice: the particle and its columns alone)."""
    assert "tilt" not in rs.SETS["all"] and "vacancy_O" not in rs.SETS["all"]  # `all` keeps its images
    base = rs.draw_base(TINY, 0)
    tilt = rs.draw_effects("tilt", TINY, 0)
    assert 0.6 <= tilt["tilt_deg"] <= 1.0 and base["shape"]["tilt_deg"] <= 0.5
    vac = rs.draw_effects("vacancies", TINY, 0)["vacancies"]
    assert 0.02 <= vac["O"] <= 0.08 and 0.01 <= vac["Ce"] <= 0.03
    _, full, n_full, _ = rs._assemble(TINY, base, base["shape"], 0.0)
    heavy = {"O": 0.3, "Ce": 0.2, "seed": 1}  # large fractions, so the test sees them
    _, cols, n_left, _ = rs._assemble(TINY, base, base["shape"], 0.0, heavy)
    assert sum(c["n_atoms"] for c in cols) == n_left < n_full
    count = {name: {sp: sum(c["n_atoms"] for c in cs if c["species"] == sp) for sp in ("Ce", "O")}
             for name, cs in (("full", full), ("left", cols))}
    for sp, f in (("O", 0.3), ("Ce", 0.2)):
        lost = 1 - count["left"][sp] / count["full"][sp]
        assert abs(lost - f) < 0.12, (sp, lost)


def test_the_benchmarks_take_one_reading_of_a_model_with_lattice_heads(tmp_path):
    import torch
    from bench_robustness import load_segmenter, split_reading

    from hrtem3d.errors import HrtemError
    from hrtem3d.labels import ClassScheme
    from hrtem3d.model.io import save_model
    from hrtem3d.model.unet import UNet, UNetConfig

    assert split_reading("m.safetensors@vibrating") == ("m.safetensors", "vibrating")
    assert split_reading("default") == ("default", None)
    torch.manual_seed(0)
    path = tmp_path / "heads.safetensors"
    save_model(path, UNet(UNetConfig(widths=(4, 8), lattice_heads=True)),
               {"scheme": ClassScheme().to_dict(), "pixel_size_A": 0.16})
    assert load_segmenter(str(path), 1).lattice == "auto"
    seg = load_segmenter(f"{path}@vibrating", 1)
    assert seg.lattice == "vibrating" and not seg.model.config.lattice_heads  # the one reading, a plain U-Net
    assert load_segmenter("default@static", 1).route is None  # the shipped pair's static reader alone
    from hrtem3d.model.io import default_model_path

    with pytest.raises(HrtemError, match="one kind of lattice"):
        load_segmenter(f"{default_model_path()}@static", 1)  # a model file of one reading
