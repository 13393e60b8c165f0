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


def test_normal_branch_of_shot_noise_rounds_and_clips_at_zero():
    """With `exact_below` = 0 every pixel takes the normal limit round(lam + sqrt(lam) z), clipped at 0:
    lam = 0 gives exactly 0, and lam = 1 gives 0 with probability P(1 + z < 1/2) = Phi(-1/2) = 0.3085,
    never a negative count. (At the default exact_below = 50 a count <= 0 needs z < -7: p ~ 1e-12.)"""
    from scipy.stats import norm

    from hrtem3d.simulate.optics import shot_noise

    assert (shot_noise(np.zeros((8, 8), np.float32), np.random.default_rng(0), exact_below=0.0) == 0).all()
    counts = shot_noise(np.ones((256, 256), np.float32), np.random.default_rng(1), exact_below=0.0)
    assert counts.min() == 0
    assert (counts == 0).mean() == pytest.approx(norm.cdf(-0.5), abs=0.006)  # 3.3 binomial sigmas
    assert (counts == np.rint(counts)).all()


def test_detector_without_mtf_or_sinc_still_blurs_by_the_drift():
    """A 1.6 Å drift along x at 0.16 Å/px moves a delta over a 10 px box: about 0.1 per pixel within
    4 px, half that at the box's ends (+-5 px), the row's total 1 and no other row touched; its
    discrete Fourier transform is the box's sinc(f L), f in cycles per pixel, L = 10 px. Along
    90 degrees the same box runs down the column. A detector with nothing returns the image itself."""
    from hrtem3d.simulate.optics import blur

    img = np.zeros((32, 48), np.float32)
    img[10, 20] = 1
    out = blur(img, Detector(mtf_half=0, drift_A=1.6, drift_angle_deg=0), 0.16)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(np.delete(out, 10, axis=0)).max() < 1e-6
    row = out[10]
    assert np.allclose(row[16:25], 0.1, atol=0.015)
    assert row[15] == pytest.approx(0.05, abs=0.005) and row[25] == pytest.approx(0.05, abs=0.005)
    assert np.abs(np.r_[row[:14], row[27:]]).max() < 0.01
    f = np.arange(25) / 48
    spectrum = np.fft.rfft(np.roll(row, -20))
    assert np.allclose(spectrum.real, np.sinc(f * 10), atol=1e-5) and np.abs(spectrum.imag).max() < 1e-5
    down = blur(img, Detector(mtf_half=0, drift_A=1.6, drift_angle_deg=90), 0.16)
    assert np.allclose(down[4:17, 20], row[14:27], atol=0.003)  # the box, on a 32 px instead of 48 px period
    assert np.abs(np.delete(down, 20, axis=1)).max() < 1e-6
    assert blur(img, Detector(mtf_half=0, drift_A=0, pixel_sinc=False), 0.16) is img


def test_detector_mtf_is_isotropic_and_lorentzian_in_q_squared():
    """MTF(q) = 1 / (1 + (q / mtf_half)^2), q in fractions of Nyquist (q = 2 f, f in cycles per
    pixel): for mtf_half = 0.5 on 64 x 64 pixels, f = 8/64 along x or y gives 0.8, along the diagonal
    (q^2 = 1/8) 2/3, at Nyquist along x 0.2. The blurred delta is the same at (+d, 0) and (0, +d)."""
    from hrtem3d.simulate.optics import blur

    img = np.zeros((64, 64), np.float32)
    img[0, 0] = 1
    out = blur(img, Detector(mtf_half=0.5, drift_A=0), 0.16)
    for d in (1, 2, 3, 5):
        assert out[0, d] == pytest.approx(out[d, 0], abs=1e-7)
        assert out[0, -d] == pytest.approx(out[d, 0], abs=1e-7)
    h = np.fft.fft2(out)
    assert np.abs(h.imag).max() < 1e-5
    for (ky, kx), want in (((0, 8), 0.8), ((8, 0), 0.8), ((-8, 0), 0.8), ((8, 8), 2 / 3), ((0, 32), 0.2),
                           ((0, 0), 1.0)):
        assert h.real[ky, kx] == pytest.approx(want, abs=1e-5), (ky, kx)


def _phase_points():
    """A few scattering angles alpha (rad) and azimuths phi (rad), as float64 arrays."""
    alpha, phi = np.meshgrid([0.004, 0.011, 0.018, 0.024], [-2.6, -1.0, 0.0, 0.7, 1.9, 3.0])
    return alpha.ravel(), phi.ravel()


@pytest.mark.parametrize("name", ["c21", "c23"])
def test_odd_aberrations_give_the_analytic_phase(name):
    """With only C21 (coma) or only C23 (three-fold astigmatism), no envelopes and an open aperture
    the transfer function is exp(-i chi), chi = (2 pi / lambda) alpha^3 / 3 * C21 cos(phi - phi21),
    or C23 cos 3 (phi - phi23); C = 1000 Å makes |chi| up to 1.5 rad at 24 mrad."""
    from hrtem3d.simulate.optics import transfer_at

    alpha, phi = _phase_points()
    kw = {"c21_A": 1000.0, "phi21_deg": 35.0} if name == "c21" else {"c23_A": 1000.0, "phi23_deg": 70.0}
    optics = Optics(c1_A=0.0, c3_A=0.0, c5_A=0.0, focal_spread_A=0.0, angular_spread_mrad=0.0,
                    aperture_mrad=1000.0, **kw)
    h = transfer_at(optics, alpha**2, np.cos(2 * phi), np.sin(2 * phi), phi)
    k = 2 * np.pi / wavelength_A(300e3)
    if name == "c21":
        chi = k * alpha**3 / 3 * 1000.0 * np.cos(phi - np.deg2rad(35.0))
    else:
        chi = k * alpha**3 / 3 * 1000.0 * np.cos(3 * (phi - np.deg2rad(70.0)))
    assert np.abs(chi).max() > 1.0
    assert np.allclose(h, np.exp(-1j * chi), atol=2e-6)


def test_angular_spread_envelope_is_the_gaussian_of_the_phase_gradient():
    """Spatial-coherence envelope E = exp(-(theta / 2)^2 |grad chi|^2), theta the angular spread (rad)
    and grad chi the gradient in the angle plane: (d chi / d alpha)^2 + (d chi / d phi / alpha)^2.
    Here chi is read from the phase of the coherent transfer function (no spread, no focal spread)
    and differentiated by central differences; C12 = 500 Å makes the azimuthal term dominate at
    some azimuths. The code's `dchi_dphi` is (1 / alpha) d chi / d phi = -k C12 alpha sin 2 (phi - phi12)."""
    from hrtem3d.simulate.optics import transfer_at

    base = dict(c1_A=50.0, c3_A=-1e5, c12_A=500.0, phi12_deg=20.0, focal_spread_A=0.0, aperture_mrad=1000.0)
    coherent, spread = Optics(**base, angular_spread_mrad=0.0), Optics(**base, angular_spread_mrad=1.0)

    def h(optics, a, p):
        return transfer_at(optics, a**2, np.cos(2 * p), np.sin(2 * p), p).astype(np.complex128)

    alpha, phi = _phase_points()
    d = 1e-5
    # chi = -arg(H); the phase difference of two nearby points needs no unwrapping
    dchi_da = -np.angle(h(coherent, alpha + d, phi) * np.conj(h(coherent, alpha - d, phi))) / (2 * d)
    dchi_dp = -np.angle(h(coherent, alpha, phi + d) * np.conj(h(coherent, alpha, phi - d))) / (2 * d)
    want = np.exp(-(1e-3 / 2) ** 2 * (dchi_da**2 + (dchi_dp / alpha) ** 2))
    assert want.min() < 0.2 and want.max() > 0.9  # the test spans the envelope
    got = np.abs(h(spread, alpha, phi))
    assert np.allclose(got, want, rtol=2e-3, atol=1e-5)


def test_envelope_defaults_validate_and_negative_lower_bounds_raise():
    OpticsEnvelope().validate()
    for bad in ({"focal_spread_A": (-1.0, 10.0)}, {"c12_nm": (-1.0, 1.0)}, {"aperture_mrad": (0.0, 30.0)},
                {"mtf_half": (0.0, 1.0)}, {"drift_A": (-0.1, 0.3)}, {"angular_spread_mrad": (-0.1, 0.3)}):
        with pytest.raises(ValueError):
            OpticsEnvelope(**bad).validate()
    OpticsEnvelope(focal_spread_A=(0.0, 10.0), c12_nm=(0.0, 0.0), drift_A=(0.0, 0.0),
                   angular_spread_mrad=(0.0, 0.0)).validate()  # zero is allowed for these
