import numpy as np
import pytest

from hrtem3d.simulate import (
    Detector,
    MultisliceConfig,
    Optics,
    OpticsEnvelope,
    detect,
    exit_wave,
    image_intensity,
    wavelength_A,
)
from hrtem3d.structure import random_particle
from hrtem3d.structure.particle import ParticleEnvelope


@pytest.fixture(scope="module")
def wave():
    cfg = MultisliceConfig(potential_sampling_A=0.08, store_gpts=128)
    atoms, _ = random_particle(np.random.default_rng(5), ParticleEnvelope(diameter_A=(12, 14)),
                               cell_A=(cfg.cell_A, cfg.cell_A))
    return exit_wave(atoms, cfg), cfg


def test_wavelength_300kv():
    assert wavelength_A(300e3) == pytest.approx(0.019687, abs=2e-6)


def test_exit_wave_layout_is_y_x(wave):
    w, cfg = wave
    assert w.shape == (1, cfg.store_gpts, cfg.store_gpts) and w.dtype == np.complex64
    assert abs(np.abs(w[0, :3, :3]).mean() - 1) < 0.05  # vacuum corner


def test_single_atom_lands_at_its_pixel():
    from ase import Atoms

    cfg = MultisliceConfig(potential_sampling_A=0.08, store_gpts=64)
    x, y = 3.2, 6.4  # Å -> pixel (row 40, col 20) at 0.16 Å
    w = exit_wave(Atoms("Ce", positions=[[x, y, 1.0]], cell=[cfg.cell_A, cfg.cell_A, 2.0]), cfg)
    phase = np.angle(w[0])
    row, col = np.unravel_index(np.argmax(phase), phase.shape)
    assert (row, col) == (40, 20)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_optics_match_abtem_ctf(wave, seed):
    w, cfg = wave
    env = OpticsEnvelope(angular_spread_mrad=(0.1, 0.3), c12_nm=(0.2, 1.0))
    optics, _ = env.sample(np.random.default_rng(seed))
    ours = image_intensity(w, optics, cfg.store_sampling_A)
    import abtem

    abtem.config.set({"dask.lazy": False})
    waves = abtem.Waves(w[0].T.copy(), energy=300e3, sampling=cfg.store_sampling_A)
    ref = np.asarray(optics.to_abtem().apply(waves).intensity().array).T
    r = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    assert r >= 0.999
    assert np.abs(ours - ref).max() < 1e-3


def test_defocus_sign_matters(wave):
    w, cfg = wave
    a = image_intensity(w, Optics(c1_A=80), cfg.store_sampling_A)
    b = image_intensity(w, Optics(c1_A=-80), cfg.store_sampling_A)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.99


@pytest.mark.parametrize("dose", [100.0, 1000.0, 10000.0])
def test_mean_counts_equal_dose_times_pixel_area(dose):
    sampling = 0.16
    vacuum = np.ones((1, 512, 512), np.complex64)
    inten = image_intensity(vacuum, Optics(), sampling)
    counts = detect(inten, Detector(dose_e_per_A2=dose, mtf_half=0.8, drift_A=0.3), sampling,
                    np.random.default_rng(0))
    assert counts.mean() == pytest.approx(dose * sampling**2, rel=0.01)


def test_noise_is_poisson_without_blur():
    counts = detect(np.ones((256, 256), np.float32), Detector(dose_e_per_A2=1000, mtf_half=0), 0.16,
                    np.random.default_rng(1))
    assert counts.var() == pytest.approx(counts.mean(), rel=0.05)


@pytest.mark.parametrize("mean", [20.0, 80.0, 400.0])
def test_shot_noise_variance_equals_the_mean_in_both_branches(mean):
    """Below 50 electrons per pixel the exact Poisson draw, above it its normal limit: both var = mean."""
    from hrtem3d.simulate.optics import shot_noise

    lam = np.full((256, 256), mean, np.float32)
    lam[:, :128] = mean / 4  # half the image in the other branch for some of the means
    counts = shot_noise(lam, np.random.default_rng(2))
    for part, m in ((counts[:, 128:], mean), (counts[:, :128], mean / 4)):
        assert part.mean() == pytest.approx(m, rel=0.02)
        assert part.var() == pytest.approx(m, rel=0.06)


def test_envelope_draws_inside_ranges():
    env = OpticsEnvelope()
    rng = np.random.default_rng(0)
    draws = [env.sample(rng) for _ in range(300)]
    c1 = np.array([o.c1_A for o, _ in draws]) / 10
    dose = np.array([d.dose_e_per_A2 for _, d in draws])
    assert c1.min() >= 0 and c1.max() <= 10
    assert dose.min() >= 100 and dose.max() <= 10000
    # log-uniform: about half the draws below the geometric mean (1000)
    assert 0.4 < (dose < 1000).mean() < 0.6


def test_envelope_rejects_impossible_ranges():
    with pytest.raises(ValueError, match="dose"):
        OpticsEnvelope(dose=(1000.0, 100.0)).validate()
    with pytest.raises(ValueError):
        OpticsEnvelope(dose=(0.0, 100.0)).validate()
