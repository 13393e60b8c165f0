"""What a microscope adds: odd aberrations against abTEM, resampling, blur, background, films,
frozen-phonon share, {110} facets, and training images formed through segment's resampling."""

import numpy as np
import pytest
from ase import Atoms

from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.simulate import MultisliceConfig, exit_wave
from hrtem3d.simulate.film import amorphous_carbon, film_transmission
from hrtem3d.simulate.optics import Optics, OpticsEnvelope, image_intensity
from hrtem3d.simulate.scope import Acquisition, ScopeEnvelope, add_background, fourier_resample, vibrate
from hrtem3d.structure import CERIA
from hrtem3d.structure.particle import ParticleEnvelope, build_particle, draw_params


@pytest.fixture(scope="module")
def small_wave():
    cfg = MultisliceConfig(store_gpts=96, potential_sampling_A=0.08)
    atoms = Atoms("Ce2O", positions=[[5, 7, 1], [8, 9, 1.5], [11, 4, 1]], cell=[cfg.cell_A, cfg.cell_A, 3])
    return exit_wave(atoms, cfg), cfg


@pytest.mark.parametrize("optics", [Optics(c21_A=1500, phi21_deg=30), Optics(c23_A=1000, phi23_deg=70),
                                    Optics(c12_A=20, phi12_deg=20, c21_A=800, phi21_deg=200, c23_A=500)])
def test_coma_and_threefold_match_abtem(small_wave, optics):
    import abtem

    w, cfg = small_wave
    ours = image_intensity(w, optics, cfg.store_sampling_A)
    abtem.config.set({"dask.lazy": False})
    waves = abtem.Waves(w[0].T.copy(), energy=300e3, sampling=cfg.store_sampling_A)
    ref = np.asarray(optics.to_abtem().apply(waves).intensity().array).T
    assert np.abs(ours - ref).max() < 1e-4
    # and the aberration matters: without it the image differs
    plain = image_intensity(w, Optics(), cfg.store_sampling_A)
    assert np.abs(plain - ref).max() > 100 * np.abs(ours - ref).max()


def test_fourier_resample_is_exact_for_band_limited_images():
    n, m = 96, 150
    y, x = np.mgrid[0:n, 0:n] / n
    img = 1 + 0.3 * np.cos(2 * np.pi * (5 * x + 3 * y)) + 0.1 * np.sin(2 * np.pi * 11 * y)
    out = fourier_resample(img, m)
    y2, x2 = np.mgrid[0:m, 0:m] / m
    ref = 1 + 0.3 * np.cos(2 * np.pi * (5 * x2 + 3 * y2)) + 0.1 * np.sin(2 * np.pi * 11 * y2)
    assert np.abs(out - ref).max() < 1e-4


def test_vibration_blurs_along_its_axis_and_keeps_the_mean():
    img = np.zeros((64, 64), np.float32)
    img[32, 32] = 1.0
    acq = Acquisition(vibration_A=0.3, vibration_ratio=0.3, vibration_angle_deg=0.0)
    out = vibrate(img, acq, 0.1)
    assert out.sum() == pytest.approx(1.0, rel=1e-4)
    yy, xx = np.mgrid[0:64, 0:64]
    var_x = (out * (xx - 32) ** 2).sum() / out.sum()
    var_y = (out * (yy - 32) ** 2).sum() / out.sum()
    assert var_x == pytest.approx((0.3 / 0.1) ** 2, rel=0.05)  # sigma 0.3 Å = 3 px along x
    assert var_y == pytest.approx((0.09 / 0.1) ** 2, rel=0.1)


def test_background_divides_the_contrast_and_keeps_the_mean(rng):
    img = (1 + 0.2 * rng.standard_normal((64, 64))).astype(np.float32)
    out = add_background(img, Acquisition(background=1.0), rng)
    assert out.mean() == pytest.approx(img.mean(), rel=1e-5)
    assert out.std() == pytest.approx(img.std() / 2, rel=1e-4)


def test_amorphous_carbon_density_and_spacing(rng):
    film = amorphous_carbon(10.0, 30.0, rng)
    assert len(film) / (30 * 30 * 10) == pytest.approx(2.0 / 12.011 * 0.602214, rel=0.03)
    from scipy.spatial import cKDTree

    d = cKDTree(film.positions).query(film.positions, k=2)[0][:, 1]
    assert d.min() >= 1.3 - 1e-9
    bank = np.exp(1j * rng.normal(0, 0.05, (3, 16, 16))).astype(np.complex64)
    assert film_transmission(bank, 0, rng) is None
    two = film_transmission(bank, 2, rng)
    assert np.angle(two).std() == pytest.approx(0.05 * np.sqrt(2), rel=0.25)


def test_110_facets_cut_the_cube_edges(rng):
    env = ParticleEnvelope(facet_110_prob=1.0, truncation_110=(1.0, 1.0), truncation=(1.0, 1.0),
                           flat_bottom_prob=0.0, steps=0, adatoms=0, tilt_deg=0.0, o_vacancy=(0, 0),
                           ce_vacancy=(0, 0))
    p = draw_params(rng, env)
    assert p.r110_frac == 1.0
    atoms = build_particle(p, CERIA, (60.0, 60.0))
    lat = atoms.arrays["lattice_pos"] - np.asarray(p.centre_offset) * CERIA.a_A / 2
    a = np.abs(lat)
    pair = np.maximum.reduce([a[:, 0] + a[:, 1], a[:, 1] + a[:, 2], a[:, 0] + a[:, 2]])
    assert pair.max() <= np.sqrt(2) * p.diameter_A / 2 + 1e-6
    # an envelope without {110} facets draws the particles it always drew
    q = draw_params(np.random.default_rng(5), ParticleEnvelope())
    r = draw_params(np.random.default_rng(5), ParticleEnvelope(facet_110_prob=0.0))
    assert q == r and q.r110_frac is None


def test_phonon_share_gives_both_kinds():
    from conftest import tiny_settings

    from hrtem3d.data.generate import simulate_one

    s = tiny_settings(seed=0)
    s.multislice.frozen_phonons, s.multislice.phonon_share = 2, 0.5
    n = [simulate_one(i, s.to_dict())["exit_wave"].shape[0] for i in range(8)]
    assert set(n) == {1, 2}


CLEAN = OpticsEnvelope(c1_nm=(4, 4), c3_um=(-10, -10), c12_nm=(0, 0), drift_A=(0, 0), mtf_half=(100, 100))


def _alignment(d):
    img, m = d["work"], (d["cls"] > 0).astype(float)
    c = {(dy, dx): np.corrcoef(img.ravel(), np.roll(m, (dy, dx), (0, 1)).ravel())[0, 1]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    return max(c, key=c.get), c[(0, 0)]


def test_scope_images_go_through_segments_resampling_with_aligned_targets(tiny_store):
    env = ScopeEnvelope(p_effect=0.0, calibration_error=0.0, p_pixel_sinc=0.0, mtf_half=(100, 100))
    ds = HrtemDataset(tiny_store, crop=64, dose=1e6, scope=env, augment=False, envelope=CLEAN)
    sizes = set()
    for i in range(6):
        d = ds.draw(i)
        assert d["work"].shape == d["cls"].shape == (64, 64)
        assert env.pixel_size_A[0] * 0.97 <= d["native_pixel_A"] <= env.pixel_size_A[1] * 1.03
        shift, corr = _alignment(d)
        assert shift == (0, 0) and corr > 0.2
        # the stated flux is the image's own mean counts per native pixel
        assert d["flux"] == pytest.approx(d["counts"].mean(), rel=0.08)
        sizes.add(d["counts"].shape)
    assert len(sizes) > 1  # native grids of several sizes


def test_a_wrong_calibration_scales_the_lattice_and_the_targets_follow(tiny_store):
    env = ScopeEnvelope(p_effect=0.0, calibration_error=0.08, p_pixel_sinc=0.0, mtf_half=(100, 100))
    ds = HrtemDataset(tiny_store, crop=64, dose=1e6, scope=env, augment=False, envelope=CLEAN)
    errs = []
    for i in range(6):
        d = ds.draw(i)
        errs.append(abs(np.log(d["pixel_size_A"] / d["acquisition"].native_pixel_A)))
        assert _alignment(d)[0] == (0, 0)
    assert max(errs) > 0.03


def test_scope_training_sample_shapes(tiny_store):
    ds = HrtemDataset(tiny_store, crop=64, scope=ScopeEnvelope(), samples_per_epoch=4)
    for i in range(4):
        x, t, w = ds[i]
        assert x.shape == (1, 64, 64) and t.shape == (2, 64, 64) and w.shape == (64, 64)
        assert np.isfinite(x.numpy()).all() and abs(float(x.mean())) < 0.5


def test_p_clean_leaves_that_share_of_samples_without_any_effect():
    from hrtem3d.simulate.optics import Optics

    rng = np.random.default_rng(3)
    env = ScopeEnvelope(p_effect=1.0, p_clean=0.3)
    clean = 0
    for _ in range(400):
        o = Optics()
        acq = env.sample(rng, o)
        bare = acq.film_layers == 0 and acq.vibration_A == 0 and acq.background == 0 and o.c21_A == 0
        clean += bare
        assert env.pixel_size_A[0] <= acq.native_pixel_A <= env.pixel_size_A[1]  # the pixel is still drawn
    assert 0.22 < clean / 400 < 0.38  # binomial: 0.3 +- 4 sigma
    with pytest.raises(ValueError):
        ScopeEnvelope(p_clean=1.5).validate()


def test_background_ripple_keeps_the_cell_periodic(rng):
    """The ripple is made of whole cycles across the cell, so Fourier resampling adds no edge ringing."""
    img = np.ones((96, 96), np.float32)
    out = add_background(img, Acquisition(background=1.0, background_ripple=0.1), rng)
    assert out.std() > 1e-3  # there is a ripple
    # a periodic field continues smoothly across the wrap-around: the jump from the last row/column to
    # the first is no larger than a step between neighbours inside
    inner = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    wrap = max(np.abs(out[0] - out[-1]).max(), np.abs(out[:, 0] - out[:, -1]).max())
    assert wrap <= 1.01 * inner


def test_background_ripple_reaches_down_to_its_shortest_period_and_stays_periodic(rng):
    """With the pixel size known, the ripple's waves have periods down to `background_period_A` (whole cycles
    still): a background varying on the scale of a particle, as an uneven support or inelastic halo gives."""
    img = np.ones((320, 320), np.float32)
    px, period = 0.16, 12.0  # 51 Å cell: up to 4 cycles across it
    top = []
    for _ in range(20):
        out = add_background(img, Acquisition(background=1.0, background_ripple=0.3, background_period_A=period),
                             rng, px)
        f = np.abs(np.fft.fft2(out - out.mean()))
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(320) * 320, np.fft.fftfreq(320) * 320, indexing="ij"))
        top.append(k[f > 0.05 * f.max()].max())  # the highest number of cycles across the cell present
        assert np.abs(out - 1).max() <= 0.3 / 2 + 1e-5  # |s - 1| <= ripple, divided by 1 + b
        wrap = np.abs(out[0] - out[-1]).max()
        assert wrap <= 1.01 * np.abs(np.diff(out, axis=0)).max()
    assert max(top) > 2 and max(top) <= 320 * px / period + 1e-6  # shorter than the cell, never below the period
    slow = add_background(img, Acquisition(background=1.0, background_ripple=0.3, background_period_A=period), rng)
    f = np.abs(np.fft.fft2(slow - slow.mean()))
    assert np.hypot(*np.unravel_index(f.argmax(), f.shape)) > 0  # no pixel size given: one cycle per wave
    assert set(np.argwhere(f > 0.05 * f.max()).ravel()) <= {0, 1, 319}


def test_phonon_scale_draws_a_thermal_amplitude_per_structure_and_keeps_old_settings():
    from conftest import tiny_settings

    from hrtem3d.data.generate import SimulationSettings, simulate_one

    s = tiny_settings(seed=0)
    assert "phonon_scale" not in s.to_dict()["multislice"]  # stores made before the range resume unchanged
    s.multislice.frozen_phonons, s.multislice.phonon_scale = 2, (0.85, 1.5)
    d = s.to_dict()
    assert SimulationSettings.from_dict(d).multislice.phonon_scale == (0.85, 1.5)
    out = [simulate_one(i, d) for i in range(4)]
    scales = [o["params"]["phonon_scale"] for o in out]
    assert all(0.85 <= v <= 1.5 for v in scales) and len(set(scales)) == 4
    # the particle does not depend on the thermal draw: same atoms as a fixed-amplitude store
    s.multislice.phonon_scale = (1.0, 1.0)
    fixed = simulate_one(0, s.to_dict())
    assert fixed["params"]["phonon_scale"] == 1.0
    assert fixed["params"]["formula"] == out[0]["params"]["formula"]
    # a larger displacement scatters more out of the aperture: the exit wave differs
    assert not np.allclose(fixed["exit_wave"], out[0]["exit_wave"], atol=1e-3)
    s.multislice.phonon_scale = (1.5, 1.0)
    with pytest.raises(Exception, match="phonon_scale"):
        s.validate()


def test_share_of_uniform_backgrounds_follows_p_ripple():
    draws = {}
    for share in (1.0, 0.5, 0.0):
        env = ScopeEnvelope(p_clean=0.0, p_effect=1.0, p_ripple=share)
        r = np.random.default_rng(3)
        draws[share] = np.array([env.sample(r).background_ripple for _ in range(400)])
    assert (draws[1.0] > 0).all() and (draws[0.0] == 0).all()
    assert 0.4 < (draws[0.5] == 0).mean() < 0.6
    assert draws[0.5].max() <= 0.4
    with pytest.raises(ValueError):
        ScopeEnvelope(p_ripple=1.5).validate()
