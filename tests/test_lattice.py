"""Pixel size from the CeO2 [110] lattice, and the out-of-envelope check (known pixel sizes and zones)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from hrtem3d.segmentation.envelope_check import CONFIDENCE_CAP, cap_confidence, check_envelope
from hrtem3d.segmentation.lattice import check_pixel_size, lattice_image, measure_lattice, zone_reflections
from hrtem3d.structure.material import CERIA, GOLD


def test_reflections_follow_the_lattice_constant():
    refl = {r.family: r.d_A for r in zone_reflections(CERIA)}
    a = CERIA.a_A
    assert refl["111"] == pytest.approx(a / np.sqrt(3))
    assert refl["200"] == pytest.approx(a / 2)
    assert refl["220"] == pytest.approx(a / np.sqrt(8))
    g = [np.array([r.gx, r.gy]) for r in zone_reflections(CERIA) if r.family == "111"]
    angles = {round(float(np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))), 1)
              for u in g for v in g}
    assert 70.5 in angles  # the two {111} pairs of [110]
    assert not [r for r in zone_reflections(CERIA, (1, 0, 0)) if r.hkl[0] % 2]  # [100]: no odd reflections


@pytest.mark.parametrize("px", [0.05, 0.08, 0.13])
def test_lattice_recovers_the_pixel_size(px):
    rng = np.random.default_rng(int(px * 1000))
    img = lattice_image((256, 256), px, rotation_deg=float(rng.uniform(0, 180)), rng=rng)
    fit = measure_lattice(img)
    assert fit.found
    assert fit.pixel_size_A == pytest.approx(px, rel=0.01)


def test_lattice_sees_non_square_pixels():
    img = lattice_image((240, 200), 0.1, pixel_y_A=0.105, rotation_deg=33.0, rng=np.random.default_rng(5))
    fit = measure_lattice(img, 0.1)
    assert fit.pixel_size_x_A == pytest.approx(0.1, rel=0.005)
    assert fit.pixel_size_y_A == pytest.approx(0.105, rel=0.005)
    assert check_pixel_size(img, 0.1).disagrees  # y is 5 % off


def test_calibration_10_percent_off_is_caught():
    img = lattice_image((256, 256), 0.1, noise=1.0, rng=np.random.default_rng(6))
    assert not check_pixel_size(img, 0.1).disagrees
    bad = check_pixel_size(img, 0.11)
    assert bad.disagrees and bad.deviation_x == pytest.approx(0.1, abs=0.01)
    assert "`pixel_size_A='lattice'`" in bad.message and "\n" not in bad.message


@pytest.mark.parametrize("material, zone, why", [(CERIA, (1, 0, 0), "CeO2 [100]"), (CERIA, (1, 1, 1), "CeO2 [111]"),
                                                 (GOLD, (1, 1, 0), "Au [110]")])
def test_other_zones_and_materials_are_out_of_envelope(material, zone, why):
    img = lattice_image((256, 256), 0.1, material=material, zone=zone, rng=np.random.default_rng(7))
    env = check_envelope(img, 0.1)
    assert not env.in_envelope
    assert why in env.warning


def test_in_domain_lattice_and_noise():
    rng = np.random.default_rng(8)
    assert check_envelope(lattice_image((256, 256), 0.1, rng=rng), 0.1).in_envelope
    assert not check_envelope(lattice_image((256, 256), 0.1, rng=rng), 0.12).in_envelope  # 20 % off
    assert not check_envelope(rng.normal(size=(256, 256)), 0.1).in_envelope  # no lattice at all


def test_confidence_is_capped_out_of_envelope():
    import pandas as pd

    cols = pd.DataFrame({"confidence": [0.9, 0.1]})
    env = check_envelope(np.random.default_rng(9).normal(size=(128, 128)), 0.1)
    assert cap_confidence(cols, env).confidence.max() <= CONFIDENCE_CAP
    ok = check_envelope(lattice_image((256, 256), 0.1, rng=np.random.default_rng(10)), 0.1)
    assert cap_confidence(cols, ok).confidence.max() == 0.9


def test_simulated_particle_gives_its_pixel_size():
    from hrtem3d.simulate import Detector, MultisliceConfig, Optics, detect, exit_wave, image_intensity
    from hrtem3d.structure import ParticleEnvelope, random_particle

    ms = MultisliceConfig(potential_sampling_A=0.08, store_sampling_A=0.1, store_gpts=224)
    rng = np.random.default_rng(11)
    atoms, p = random_particle(rng, ParticleEnvelope(diameter_A=(16.0, 18.0), tilt_deg=0.0), CERIA,
                               (ms.cell_A, ms.cell_A))
    inten = image_intensity(exit_wave(atoms, ms, seed=p.seed), Optics(c1_A=60.0, c3_A=-1e5, c5_A=5e6), 0.1)
    img = detect(inten, Detector(dose_e_per_A2=5000.0), 0.1, rng)
    fit = measure_lattice(img)
    assert fit.found and fit.pixel_size_A == pytest.approx(0.1, rel=0.02)
    assert check_envelope(img, 0.1).in_envelope


def test_segment_cli_reports_pixel_size_source_and_warnings(tiny_model, tmp_path):
    from hrtem3d.cli import app

    tif = tmp_path / "lat.tif"
    img = lattice_image((192, 192), 0.1, rng=np.random.default_rng(12))
    tifffile.imwrite(tif, (1000 + 100 * img).astype(np.float32))
    runner = CliRunner()
    # the synthetic lattice has a tenth of a simulated particle's contrast, which the contrast gate reads (and
    # warns of, test_gain.py); the gain is fixed here, so that the only warnings left are the pixel size's
    r = runner.invoke(app, ["segment", str(tif), "--out", str(tmp_path / "a"), "--pixel-size", "lattice",
                            "--model", str(tiny_model), "--no-progress", "--contrast-gain", "1"])
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "a" / "lat" / "trust.json").read_text())
    assert t["pixel_size_source"] == "lattice" and t["pixel_size_A"] == pytest.approx(0.1, rel=0.01)
    assert t["in_envelope"] and not t["warnings"]
    r = runner.invoke(app, ["segment", str(tif), "--out", str(tmp_path / "b"), "--pixel-size", "0.11",
                            "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 0, r.output
    warn = [line for line in r.output.splitlines() if line.startswith("warning:")]
    assert any("disagrees" in w and "pass --pixel-size lattice" in w for w in warn), r.output
    t = json.loads((tmp_path / "b" / "lat" / "trust.json").read_text())
    assert t["pixel_size_source"] == "given" and not t["in_envelope"]
    r = runner.invoke(app, ["segment", str(tif), "--out", str(tmp_path / "c"), "--pixel-size", "big",
                            "--model", str(tiny_model)])
    assert r.exit_code == 2 and "Traceback" not in r.output and "lattice" in r.output


def test_lattice_pixel_size_on_an_uncalibrated_npy(tiny_model, tmp_path):
    from hrtem3d.cli import app

    npy = tmp_path / "raw.npy"  # a .npy has no calibration: only --pixel-size lattice or a number opens it
    np.save(npy, (1000 + 100 * lattice_image((192, 192), 0.09, rng=np.random.default_rng(13))).astype(np.float32))
    runner = CliRunner()
    r = runner.invoke(app, ["segment", str(npy), "--out", str(tmp_path / "a"), "--pixel-size", "lattice",
                            "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "a" / "raw" / "trust.json").read_text())
    assert t["pixel_size_source"] == "lattice" and t["pixel_size_A"] == pytest.approx(0.09, rel=0.01)
    assert t["file_pixel_size_A"] is None
    r = runner.invoke(app, ["segment", str(npy), "--out", str(tmp_path / "b"), "--model", str(tiny_model)])
    assert r.exit_code == 2 and "--pixel-size" in r.output and len(r.output.strip().splitlines()) == 1


# check_envelope's verdicts and scores, recorded with the code that computed one power spectrum per pattern
# fitted (before the spectrum was shared): own = the CeO2 [110] fit's score, rivals = CeO2 [100], [111], Au [110]
RECORDED = {
    "ceo2_110_px12": (dict(shape=(256, 256), seed=22), 0.112, ["the lattice says the pixel size is +12% off"],
                      16.27315, 0.099889, [0.0, 0.0, 0.0]),
    "ceo2_100": (dict(shape=(256, 256), seed=23, zone=(1, 0, 0)), 0.1,
                 ["the lattice looks like CeO2 [100], not CeO2 [110]"], 0.0, None, [9.515433, 0.0, 0.0]),
    "gold_110": (dict(shape=(256, 256), seed=24, material=GOLD), 0.1,
                 ["the lattice looks like Au [110], not CeO2 [110]"], 6.77315, 0.132573, [0.0, 0.0, 7.619269]),
}


@pytest.mark.parametrize("case", list(RECORDED))
def test_envelope_check_shares_one_spectrum_with_unchanged_verdicts(case, monkeypatch):
    from hrtem3d.segmentation import envelope_check, spectrum

    kw, px, reasons, own, fit_px, rivals = RECORDED[case]
    kw = dict(kw)
    img = lattice_image(kw.pop("shape"), 0.1, rng=np.random.default_rng(kw.pop("seed")), **kw)
    ffts, scores = [], []
    fft, measure = spectrum.power_spectrum, envelope_check.measure_lattice
    monkeypatch.setattr(spectrum, "power_spectrum", lambda *a, **k: ffts.append(1) or fft(*a, **k))
    monkeypatch.setattr(envelope_check, "measure_lattice",
                        lambda *a, **k: scores.append(measure(*a, **k).score) or measure(*a, **k))
    env = check_envelope(img, px)
    assert len(ffts) == 1  # one spectrum for the CeO2 [110] fit and the three rivals (it was four)
    assert env.reasons == reasons and env.in_envelope is (not reasons)
    assert env.lattice.fit.score == pytest.approx(own, abs=1e-5)
    assert (env.lattice.fit.pixel_size_A if env.lattice.fit.found else None) == pytest.approx(fit_px, abs=1e-6)
    assert scores == pytest.approx(rivals, abs=1e-5)


def test_assess_frame_computes_one_spectrum(monkeypatch):
    from hrtem3d.jobs.trust import assess_frame
    from hrtem3d.segmentation import spectrum

    ffts = []
    fft = spectrum.power_spectrum
    monkeypatch.setattr(spectrum, "power_spectrum", lambda *a, **k: ffts.append(1) or fft(*a, **k))
    img = lattice_image((192, 192), 0.1, rng=np.random.default_rng(14))
    t = assess_frame(img, None, source="lattice")  # the free fit, the check at its pixel size and the rivals
    assert len(ffts) == 1 and t.pixel_size_A == pytest.approx(0.1, rel=0.01) and t.in_envelope


def _ceria_columns(scale: float = 1.0, jitter_A: float = 0.1, seed: int = 0):
    """Ce columns of CeO2 [110] (a centred a/sqrt2 x a rectangle) as a column table in Å, positions jittered."""
    import pandas as pd

    a = CERIA.a_A
    i, j = np.meshgrid(np.arange(7), np.arange(5))
    xy = np.concatenate([np.c_[i.ravel() * a / 2**0.5, j.ravel() * a],
                         np.c_[(i.ravel() + 0.5) * a / 2**0.5, (j.ravel() + 0.5) * a]]) * scale
    xy = xy + np.random.default_rng(seed).normal(0, jitter_A, xy.shape)
    return pd.DataFrame({"species": "Ce", "x_A": xy[:, 0], "y_A": xy[:, 1]})


def test_a_faint_image_whose_columns_sit_on_the_lattice_is_taken_back():
    from hrtem3d.segmentation.envelope_check import NO_LATTICE, columns_on_lattice, reconsider

    env = check_envelope(np.random.default_rng(11).normal(size=(256, 256)), 0.1)  # spectrum shows no lattice
    assert not env.in_envelope and env.kind == NO_LATTICE
    back = reconsider(env, _ceria_columns())
    assert back.in_envelope and back.warning == "" and "weak image" in back.note
    # columns 6 % or 20 % off the lattice spacing (a wrong calibration), random columns, too few: kept out
    assert not columns_on_lattice(_ceria_columns(scale=1.2)) and not columns_on_lattice(_ceria_columns(scale=0.94))
    rng = np.random.default_rng(12)
    import pandas as pd

    rand = pd.DataFrame({"species": "Ce", "x_A": rng.uniform(0, 30, 60), "y_A": rng.uniform(0, 25, 60)})
    assert not columns_on_lattice(rand)
    assert not columns_on_lattice(_ceria_columns().iloc[:8])
    for cols in (_ceria_columns(scale=1.2), rand):
        assert not reconsider(env, cols).in_envelope


def test_only_a_missing_lattice_can_be_reversed():
    from hrtem3d.jobs.trust import assess_frame
    from hrtem3d.segmentation.envelope_check import reconsider

    gold = check_envelope(lattice_image((256, 256), 0.1, material=GOLD, zone=(1, 1, 0),
                                        rng=np.random.default_rng(13)), 0.1)
    assert not gold.in_envelope and gold.kind == "rival"
    assert not reconsider(gold, _ceria_columns()).in_envelope
    t = assess_frame(np.random.default_rng(14).normal(size=(256, 256)), 0.1, source="given")
    assert not t.in_envelope and any("out of the model's envelope" in w for w in t.warnings)
    t = t.reconsider(_ceria_columns())
    assert t.in_envelope and not any("out of the model's envelope" in w for w in t.warnings)
    assert t.to_dict()["envelope"]["note"]


def test_counts_far_below_what_the_particle_size_holds_put_the_frame_out_of_the_envelope():
    from hrtem3d.jobs.trust import assess_frame
    from hrtem3d.segmentation.envelope_check import THIN, THIN_LIMIT, count_size_ratio

    cols = _ceria_columns()  # 70 Ce columns: a particle about 30 Å wide, whose middle column holds ~8 atoms
    typical = cols.assign(n_atoms=5)
    thin = cols.assign(n_atoms=2)
    assert count_size_ratio(typical) > THIN_LIMIT > count_size_ratio(thin)
    assert np.isnan(count_size_ratio(typical.iloc[:10]))  # too few columns to vouch for a size
    # isolated one-atom "columns" a network invents in a support film (10 Å apart, off the particle) take no part
    import pandas as pd

    gx, gy = np.meshgrid(np.arange(6) * 10.0 + 60, np.arange(6) * 10.0)
    film = pd.DataFrame({"species": "Ce", "x_A": gx.ravel(), "y_A": gy.ravel(), "n_atoms": 1})
    assert count_size_ratio(pd.concat([typical, film])) == pytest.approx(count_size_ratio(typical))
    # a frame with a clear CeO2 [110] lattice at the right pixel size
    t = assess_frame(lattice_image((256, 256), 0.1, rng=np.random.default_rng(15)), 0.1, source="given")
    assert t.in_envelope
    assert assess_frame(lattice_image((256, 256), 0.1, rng=np.random.default_rng(15)), 0.1,
                        source="given").reconsider(typical).in_envelope
    t = t.reconsider(thin)
    assert not t.in_envelope and t.envelope.kind == THIN
    assert any("thinner than a particle that wide holds" in w for w in t.warnings)
    capped, _ = t.cap(thin.assign(confidence=0.9), np.ones((4, 4), np.float32))
    assert capped.confidence.max() <= CONFIDENCE_CAP
    # a frame out for another reason keeps that reason
    off = assess_frame(lattice_image((256, 256), 0.1, rng=np.random.default_rng(15)), 0.125, source="given")
    assert off.envelope.kind == "pixel" and off.reconsider(thin).envelope.kind == "pixel"
