"""From probabilities to columns, resampling, tiling, and the `segment` command."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.data.resample import to_input_coords, to_working_grid
from hrtem3d.errors import HrtemError
from hrtem3d.labels import DEFAULT_SCHEME
from hrtem3d.segmentation.columns import find_columns
from hrtem3d.segmentation.segmenter import TABLE_FIELDS, Segmenter

runner = CliRunner()


def _synthetic_probs(centres, classes, shape=(64, 64), sigma=1.5):
    probs = np.zeros((DEFAULT_SCHEME.n_classes,) + shape, np.float32)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    fg = np.zeros(shape, np.float32)
    for (x, y), c in zip(centres, classes):
        g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)).astype(np.float32)
        probs[c] += 0.9 * g
        probs[c + 1 if c < 24 else c - 1] += 0.1 * g  # a little doubt about the depth
        fg += g
    probs[0] = np.clip(1 - fg, 0, 1)
    return probs / probs.sum(0, keepdims=True)


def test_columns_found_at_subpixel_positions_with_their_class():
    centres = [(10.3, 12.6), (40.7, 20.2), (30.0, 50.5)]
    classes = [DEFAULT_SCHEME.class_of("Ce", 7), DEFAULT_SCHEME.class_of("O", 3), DEFAULT_SCHEME.class_of("Ce", 2)]
    cols = find_columns(_synthetic_probs(centres, classes), DEFAULT_SCHEME, 0.16)
    assert len(cols) == 3
    cols = cols.sort_values("x_px").reset_index(drop=True)
    for (x, y), row in zip(sorted(centres), cols.itertuples()):
        assert abs(row.x_px - x) < 0.25 and abs(row.y_px - y) < 0.25
        # p_column: the column probability (a Gaussian of sigma 1.5 px, peak 1) smoothed by a 0.7 px
        # Gaussian, read at the nearest pixel: s^2/(s^2 + 0.49) exp(-d^2 / (2 (s^2 + 0.49)))
        d2 = (np.rint(x) - x) ** 2 + (np.rint(y) - y) ** 2
        s2 = 1.5**2 + 0.7**2
        assert row.p_column == pytest.approx(1.5**2 / s2 * np.exp(-d2 / (2 * s2)), abs=2e-3)
    assert list(cols.species) == ["Ce", "Ce", "O"]
    assert list(cols.n_atoms) == [7, 2, 3]
    assert np.allclose(cols.confidence, 0.9, atol=0.02)


def test_subpixel_offset_of_a_peak_on_the_border_is_not_pulled_onto_the_neighbour():
    """One Gaussian (sigma 1.5 px) per image; its log is a parabola, so the three-point fit is exact
    where both neighbours exist. On the first row (centre 0.3 px, max pixel 0) or the last column
    (centre nx - 1.3, max pixel nx - 1) one neighbour is missing: the offset is 0, an error of 0.3 px
    (a fit that reuses the peak as its missing neighbour gives -0.5, an error of 0.8 px)."""
    from hrtem3d.segmentation.columns import _log_parabola

    ny, nx, sigma = 24, 32, 1.5
    yy, xx = np.mgrid[0:ny, 0:nx]
    # (y, x) centre, its max pixel, tolerance (px) on both axes
    cases = [((0.3, 12.0), (0, 12), 0.5),                # first row
             ((10.0, nx - 1.3), (10, nx - 1), 0.5),      # last column
             ((1.3, 20.4), (1, 20), 0.05),               # one pixel in: both neighbours exist
             ((ny - 2.3, 1.3), (ny - 2, 1), 0.05),
             ((11.6, 17.2), (12, 17), 0.05)]             # interior
    for (y0, x0), (iy, ix), tol in cases:
        f = np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * sigma**2))
        assert np.unravel_index(f.argmax(), f.shape) == (iy, ix)
        peaks = np.array([[iy, ix]])
        y = iy + _log_parabola(f, peaks, axis=0)[0]
        x = ix + _log_parabola(f, peaks, axis=1)[0]
        assert abs(y - y0) < tol and abs(x - x0) < tol, ((y0, x0), (y, x))


def test_pooling_disc_offsets_scale_with_the_pixel_size():
    """Class probabilities are pooled over a disc of pool_radius_A / pixel_size_A pixels (at least 1),
    weighted by the column probability fg. One column (fg = 0.95 exp(-d^2 / 32), d in px) reads
    Ce 7 on its centre and 4 neighbours (d^2 <= 1) and O 3 further out. A 0.35 Å disc at 0.16 Å/px
    (2.19 px; so 0.175 Å at 0.08 Å/px) holds 1, 4, 4, 4 lattice points at d^2 = 0, 1, 2, 4: O 3 wins
    with share (4 e^(-2/16) + 4 e^(-4/16)) / (1 + 4 e^(-1/16) + 4 e^(-2/16) + 4 e^(-4/16)) (fg^2
    weights, as p = fg there). A 1 px disc holds only Ce 7."""
    ce7, o3 = DEFAULT_SCHEME.class_of("Ce", 7), DEFAULT_SCHEME.class_of("O", 3)
    yy, xx = np.mgrid[0:33, 0:33]
    d2 = (yy - 16) ** 2 + (xx - 16) ** 2
    fg = (0.95 * np.exp(-d2 / 32)).astype(np.float32)
    probs = np.zeros((DEFAULT_SCHEME.n_classes, 33, 33), np.float32)
    probs[0] = 1 - fg
    probs[ce7] = np.where(d2 <= 1, fg, 0)
    probs[o3] = np.where(d2 <= 1, 0, fg)
    e = np.exp(-np.array([0, 1, 2, 4]) / 16)
    share_o = 4 * (e[2] + e[3]) / (e[0] + 4 * (e[1] + e[2] + e[3]))
    for pixel_A, radius_A in ((0.16, 0.35), (0.08, 0.175)):
        cols = find_columns(probs, DEFAULT_SCHEME, pixel_A, pool_radius_A=radius_A)
        assert len(cols) == 1 and (cols.x_px.iat[0], cols.y_px.iat[0]) == (16.0, 16.0)
        assert (cols.species.iat[0], cols.n_atoms.iat[0]) == ("O", 3)
        assert cols.confidence.iat[0] == pytest.approx(share_o, abs=1e-5)
    one = find_columns(probs, DEFAULT_SCHEME, 0.16, pool_radius_A=0.16)
    assert (one.species.iat[0], one.n_atoms.iat[0], one.confidence.iat[0]) == ("Ce", 7, pytest.approx(1.0))


def test_class_weights_of_the_loss_are_divided_out():
    # the network says Ce 6 (0.55) over Ce 7 (0.45); if it was trained with Ce 6 weighted 2x, the
    # unbiased odds are 0.275 : 0.45, so the column is Ce 7
    c6, c7 = DEFAULT_SCHEME.class_of("Ce", 6), DEFAULT_SCHEME.class_of("Ce", 7)
    probs = np.zeros((DEFAULT_SCHEME.n_classes, 32, 32), np.float32)
    probs[0] = 1
    probs[:, 14:19, 14:19] = 0
    probs[c6, 14:19, 14:19], probs[c7, 14:19, 14:19] = 0.55, 0.45
    assert list(find_columns(probs, DEFAULT_SCHEME, 0.16).n_atoms) == [6]
    w = np.ones(DEFAULT_SCHEME.n_classes, np.float32)
    w[c6] = 2.0
    cols = find_columns(probs, DEFAULT_SCHEME, 0.16, class_weights=w)
    assert list(cols.n_atoms) == [7]
    assert cols.confidence.iloc[0] == pytest.approx(0.45 / (0.45 + 0.275), abs=1e-3)


def test_no_columns_in_background():
    probs = np.zeros((DEFAULT_SCHEME.n_classes, 32, 32), np.float32)
    probs[0] = 1
    assert len(find_columns(probs, DEFAULT_SCHEME, 0.16)) == 0


def test_disc_offsets_are_the_lattice_points_of_the_disc():
    """Integer points with dy^2 + dx^2 <= r^2 (Gauss's circle problem): 1, 5, 9, 13, 21, 29 for r = 0, 1,
    1.5, 2, 2.5, 3; the boundary is inside (r = 1 holds the four neighbours, r = 2 the points two away)."""
    from hrtem3d.segmentation.columns import disc_offsets

    for r, n in ((0.0, 1), (1.0, 5), (1.5, 9), (2.0, 13), (2.1875, 13), (2.5, 21), (3.0, 29)):
        dy, dx = disc_offsets(r)
        assert len(dy) == len(dx) == n, r
        assert (dy**2 + dx**2 <= r**2 + 1e-9).all()
        assert len(set(zip(dy.tolist(), dx.tolist()))) == n  # no point twice
    dy, dx = disc_offsets(1.0)
    assert sorted(zip(dy.tolist(), dx.tolist())) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    dy, dx = disc_offsets(2.0)
    assert {(-2, 0), (2, 0), (0, -2), (0, 2)} <= set(zip(dy.tolist(), dx.tolist()))
    assert (1, 2) not in set(zip(dy.tolist(), dx.tolist()))  # 1 + 4 = 5 > 4


def test_binning_keeps_counts_and_maps_coordinates_back():
    img = np.zeros((128, 128), np.float32)
    img[40, 21] = 100.0  # input pixel (x=21, y=40)
    work, f = to_working_grid(img, 0.08, 0.16)
    assert work.shape == (64, 64) and f == (2.0, 2.0)
    assert work.sum() * 4 == pytest.approx(img.sum())
    # exact binning: the 2x2 block holding the counts averages them, no other pixel is touched
    assert work[20, 10] == 25.0 and np.count_nonzero(work) == 1
    odd, _ = to_working_grid(np.ones((129, 131), np.float32), 0.08, 0.16)  # the incomplete last row/column drop
    assert odd.shape == (64, 65) and np.all(odd == 1.0)
    y, x = np.unravel_index(np.argmax(work), work.shape)
    xi, yi = to_input_coords(np.array([x]), np.array([y]), f)
    assert abs(xi[0] - 21) <= 0.5 and abs(yi[0] - 40) <= 0.5


def test_resampling_a_tiny_image_keeps_at_least_8_by_8_working_pixels():
    work, f = to_working_grid(np.ones((20, 20), np.float32), 0.03, 0.16)  # 20 / 5.33 = 3.75 pixels: floored
    assert work.shape == (8, 8) and f == (2.5, 2.5)


def test_non_integer_resampling_low_passes_and_keeps_mean():
    rng = np.random.default_rng(0)
    img = rng.poisson(20, (300, 300)).astype(np.float32)
    work, f = to_working_grid(img, 0.05, 0.16)
    assert work.shape == (94, 94)
    assert work.mean() == pytest.approx(img.mean(), rel=0.01)
    assert work.std() < img.std() / 2  # averaging, not point sampling
    wide, (fy, fx) = to_working_grid(np.ones((300, 240), np.float32), 0.05, 0.16)  # not square: y and x apart
    assert wide.shape == (94, 75) and fy == pytest.approx(300 / 94) and fx == pytest.approx(240 / 75)


def test_tiles_do_not_change_results(tiny_model):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(200, 200)).astype(np.float32)
    whole = Segmenter(tiny_model, contrast="bright").probabilities(img)
    tiled = Segmenter(tiny_model, contrast="bright", tile=96, overlap=24).probabilities(img)
    assert np.abs(whole - tiled).max() < 1e-3


def test_test_time_augmentation_is_equivariant(tiny_model):
    rng = np.random.default_rng(2)
    img = rng.normal(size=(64, 80)).astype(np.float32)
    seg = Segmenter(tiny_model, contrast="bright", tta=8)
    p = seg.probabilities(img)
    p_rot = seg.probabilities(np.rot90(img).copy())
    assert np.abs(np.rot90(p, axes=(1, 2)) - p_rot).max() < 1e-4  # averaging over the group makes it exact
    plain = Segmenter(tiny_model, contrast="bright").probabilities(img)
    assert np.abs(plain - p).max() > 1e-3  # and it is not the plain forward pass
    assert np.allclose(p.sum(0), 1, atol=1e-4)
    with pytest.raises(HrtemError, match="tta"):
        Segmenter(tiny_model, tta=3)


def test_segment_image_gives_the_column_table(tiny_model, tiny_store):
    from hrtem3d.data.dataset import HrtemDataset

    d = HrtemDataset(tiny_store, crop=96, dose=3000, augment=False).draw(0, structure=0)
    seg = Segmenter(tiny_model, contrast="bright")
    s = seg.segment(d["counts"], 0.16)
    assert list(s.columns.columns[: len(TABLE_FIELDS)]) == TABLE_FIELDS
    assert s.labels.shape == d["counts"].shape and s.confidence.shape == d["counts"].shape
    assert (s.columns.x_A == s.columns.x_px * 0.16).all()
    assert (s.columns.y_A == s.columns.y_px * 0.16).all()
    assert ((s.columns.confidence >= 0) & (s.columns.confidence <= 1)).all()
    with pytest.raises(HrtemError, match="NaN"):
        seg.segment(np.full((64, 64), np.nan), 0.16)
    with pytest.raises(HrtemError, match="pixel size"):
        seg.segment(np.ones((64, 64)), 50.0)
    with pytest.raises(HrtemError, match="2D"):
        seg.segment(np.ones((2, 64, 64)), 0.16)


def test_segment_command_writes_every_output(tiny_model, tmp_path):
    rng = np.random.default_rng(3)
    npy = tmp_path / "frame.npy"
    np.save(npy, rng.poisson(30, (96, 96)).astype(np.float32))
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, rng.poisson(30, (2, 96, 96)).astype(np.uint16))
    out = tmp_path / "out"
    r = runner.invoke(app, ["segment", str(npy), str(tif), "--out", str(out), "--pixel-size", "0.08",
                            "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 0, r.output
    for stem, frames in (("frame", 1), ("stack", 2)):
        d = out / stem
        for name in ("columns.csv", "labels.tif", "confidence.tif", "overlay.png"):
            assert (d / name).exists(), name
        assert tifffile.imread(d / "labels.tif").shape[-2:] == (96, 96)
        table = pd.read_csv(d / "columns.csv")
        assert list(table.columns[: len(TABLE_FIELDS)]) == TABLE_FIELDS
        assert set(table.frame) <= set(range(frames))
        assert not list(d.glob("*.partial*"))


def test_standardised_image_is_segmented_with_a_one_line_warning(tiny_model, tmp_path):
    rng = np.random.default_rng(4)
    npy = tmp_path / "z.npy"
    np.save(npy, rng.normal(size=(96, 96)).astype(np.float32))  # zero mean: not intensities
    r = runner.invoke(app, ["segment", str(npy), "--out", str(tmp_path / "o"), "--pixel-size", "0.16",
                            "--model", str(tiny_model), "--no-progress"])
    assert r.exit_code == 0, r.output
    warn = [line for line in r.output.splitlines() if line.startswith("warning:") and "envelope" not in line]
    assert len(warn) == 1 and "no positive mean" in warn[0], r.output
    assert "normalize.py" not in r.output and "Traceback" not in r.output
    assert (tmp_path / "o" / "z" / "columns.csv").exists()


def test_segment_without_pixel_size_is_one_clear_error(tiny_model, tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.ones((64, 64), np.float32))
    r = runner.invoke(app, ["segment", str(npy), "--out", str(tmp_path / "o"), "--model", str(tiny_model)])
    assert r.exit_code == 2
    assert "pixel-size" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["segment", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o"),
                            "--model", str(tiny_model)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_platt_scaling_fixes_overconfidence():
    from hrtem3d.evaluate.calibrate import apply_calibration, fit_platt
    from hrtem3d.evaluate.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.3, 0.95, 5000)
    correct = rng.random(5000) < true_p
    overconfident = true_p ** 0.3  # claims more than it knows
    before = expected_calibration_error(overconfident, correct)
    a, b, c = fit_platt(overconfident, correct)
    after = expected_calibration_error(apply_calibration(overconfident, a, b), correct)
    assert before > 0.1 and after < 0.03 and c == 0.0


def test_noise_feature_lets_one_map_serve_every_dose():
    from hrtem3d.evaluate.calibrate import apply_calibration, fit_platt
    from hrtem3d.evaluate.metrics import expected_calibration_error

    rng = np.random.default_rng(1)
    raw = rng.uniform(0.3, 0.99, 6000)
    noisy = np.arange(6000) % 2 == 0             # half the images 3x noisier
    true_p = np.where(noisy, raw**3, raw)          # the network is overconfident there only
    correct = rng.random(6000) < true_p
    feature = np.log(np.where(noisy, 0.3, 0.1))
    a, b, _ = fit_platt(raw, correct)
    plain = apply_calibration(raw, a, b)
    a, b, c = fit_platt(raw, correct, feature)
    withf = apply_calibration(raw, a, b, c, feature)
    ece = [expected_calibration_error(p[noisy], correct[noisy]) for p in (plain, withf)]
    assert ece[1] < 0.05 and ece[1] < 0.5 * ece[0], ece


def test_matching_is_one_to_one_within_distance():
    from hrtem3d.evaluate.metrics import match_columns

    truth = pd.DataFrame({"species": ["Ce", "Ce", "O"], "x_A": [0.0, 3.3, 1.4], "y_A": [0.0, 0.0, 0.0],
                          "n_atoms": [5, 6, 4]})
    pred = pd.DataFrame({"species": ["Ce", "O", "Ce"], "x_A": [0.1, 1.5, 9.0], "y_A": [0.0, 0.1, 0.0],
                         "n_atoms": [5, 3, 2], "confidence": [0.9, 0.8, 0.7]})
    m = match_columns(truth, pred)
    assert list(m.pred_row) == [0, -1, 1]
    assert list(m.pred_n) == [5, 0, 3]


def test_calibrate_writes_detection_thresholds_that_segment_applies(tiny_model, ten_store, tmp_path):
    import shutil

    from hrtem3d.evaluate.calibrate import scope_of
    from hrtem3d.model.io import read_metadata
    from hrtem3d.segmentation.segmenter import Segmenter

    tiny_store = ten_store  # 10 structures: the validation split takes every 10th

    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, model)
    r = CliRunner().invoke(app, ["calibrate", str(model), "--data", str(tiny_store), "--n-images", "4"])
    assert r.exit_code == 0, r.output
    t = read_metadata(model)["detection_threshold"]
    grid = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
    assert t["Ce"] in grid and t["O"] in grid and t["fitted_on"] == str(tiny_store)
    cal = read_metadata(model)["column_calibration"]
    assert cal["n_columns"] > 0 and np.isfinite([cal["a"], cal["b"], *cal["c"]]).all() and len(cal["c"]) == 2
    # the tiny model was trained through the microscope envelope, so it is calibrated through it
    assert scope_of(read_metadata(model)) is not None and cal["through_scope"]
    seg = Segmenter(model, contrast="bright")
    assert seg.detection["Ce"] == t["Ce"] and seg.detection["O"] == t["O"] and seg.calibration["a"] == cal["a"]
    seg.detection = {"Ce": 0.95, "O": 0.95}
    img = np.random.default_rng(0).poisson(50, (96, 96)).astype(np.float32)
    strict = seg.segment(img, 0.16).columns
    seg.detection = None
    loose = seg.segment(img, 0.16).columns
    assert len(strict) <= len(loose) and (strict.p_column >= 0.95).all()
    # the map alone refitted with the shift features: thresholds kept, the map names its features, segment reads it
    from hrtem3d.segmentation.confidence import ALL_FEATURES

    r = CliRunner().invoke(app, ["calibrate", str(model), "--data", str(tiny_store), "--n-images", "3",
                                 "--keep-thresholds", "--shift-features"])
    assert r.exit_code == 0, r.output
    assert read_metadata(model)["detection_threshold"] == t
    cal = read_metadata(model)["column_calibration"]
    assert cal["features"] == list(ALL_FEATURES) and len(cal["c"]) == len(ALL_FEATURES)
    cols = Segmenter(model, contrast="bright").segment(img, 0.16).columns
    assert ((cols.confidence > 0) & (cols.confidence < 1)).all()


def test_calibrate_refuses_in_one_line_a_missing_store_or_thresholds_it_cannot_keep(tiny_model, ten_store, tmp_path):
    import shutil

    from hrtem3d.model.io import read_metadata

    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model, model)
    before = model.read_bytes()
    r = CliRunner().invoke(app, ["calibrate", str(model), "--data", str(ten_store), "--extra-data",
                                 str(tmp_path / "nope.zarr"), "--n-images", "2"])
    assert r.exit_code == 2 and "nope.zarr is not an hrtem3d dataset" in r.output and "Traceback" not in r.output
    assert "detection_threshold" not in read_metadata(model)  # a model straight from `train`: none to keep
    r = CliRunner().invoke(app, ["calibrate", str(model), "--data", str(ten_store), "--keep-thresholds",
                                 "--n-images", "2"])
    assert r.exit_code == 2 and "no detection thresholds to keep" in r.output and "--keep-thresholds" in r.output
    assert len(r.output.strip().splitlines()) == 1 and model.read_bytes() == before  # nothing written


def test_detection_thresholds_fit_the_analytic_optimum(monkeypatch):
    """A stand-in segmenter reports every true column (Ce at p_column 0.97, O at 0.88) and false ones
    (Ce at 0.35, O at 0.55): the lowest grid thresholds that drop every false column and keep every
    true one are Ce 0.4, O 0.6, with recall and precision 1."""
    from types import SimpleNamespace

    import hrtem3d.evaluate.calibrate as calibrate

    truths = {k: pd.DataFrame({"species": ["Ce", "Ce", "O", "O", "O"], "x_A": [2.0, 6.0, 2.0, 6.0, 10.0],
                               "y_A": [2.0 + k, 2.0, 4.0, 4.0, 4.0], "n_atoms": [3, 4, 2, 5, 1]})
              for k in (9, 19)}

    class Data:
        def __init__(self, path, indices, **kw):
            self.indices = list(indices)

        def draw(self, i, structure):
            return {"counts": np.full((8, 8), self.indices[structure], np.float32)}

    class Seg:
        def __init__(self, *a, **k):
            self.calibration = self.detection = None

        def segment(self, image, sampling):
            t = truths[int(image[0, 0])]
            false = pd.DataFrame({"species": ["Ce", "O", "O"], "x_A": [30.0, 40.0, 50.0], "y_A": [30.0] * 3,
                                  "n_atoms": [1, 1, 1], "p_column": [0.35, 0.55, 0.55]})
            true = t.assign(p_column=np.where(t.species == "Ce", 0.97, 0.88))
            return SimpleNamespace(columns=pd.concat([true, false], ignore_index=True).assign(confidence=0.9))

    monkeypatch.setattr(calibrate, "_validation", lambda data: ([9, 19], 8, 0.16, {9: 9, 19: 19}))
    monkeypatch.setattr(calibrate, "HrtemDataset", Data)
    monkeypatch.setattr(calibrate, "Segmenter", Seg)
    monkeypatch.setattr(calibrate, "store", SimpleNamespace(read_columns=lambda g: truths[g]))
    t = calibrate.fit_detection_thresholds("model", "data")
    assert t == {"Ce": 0.4, "O": 0.6, "recall": 1.0, "precision": 1.0, "dose": 1000.0}
    # a true O column as faint as the false ones: recall and precision cannot both be 1; the best is
    # t_O = 0.3 (keep all 6 O, 4 false: min = precision 10/14 = 0.714) vs t_O = 0.6 (lose 2 of 6 O,
    # recall 8/10 = 0.8); with t_O = 0.6, t_Ce 0.3 (precision 0.8) and 0.4 (precision 1) tie on
    # min(recall, precision) = 0.8 and on recall, and the first of the grid stays
    truths[9].loc[4, "species"] = "O"
    faint = Seg.segment

    def segment(self, image, sampling):
        s = faint(self, image, sampling)
        s.columns.loc[4, "p_column"] = 0.5
        return s

    monkeypatch.setattr(Seg, "segment", segment)
    t = calibrate.fit_detection_thresholds("model", "data")
    assert (t["Ce"], t["O"]) == (0.3, 0.6) and t["recall"] == pytest.approx(0.8) and t["precision"] == 0.8


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_platt_fit_recovers_the_parameters_of_a_known_logistic_map():
    """Outcomes drawn from sigma(a logit(conf) + b + c f) with known (a, b, c): the fit finds them
    (maximum likelihood on 20000 draws: standard errors about 0.02)."""
    from hrtem3d.evaluate.calibrate import fit_platt

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.05, 0.995, 20000)
    f = rng.normal(0.0, 1.0, 20000)
    z = np.log(conf / (1 - conf))
    correct = rng.random(20000) < _sigmoid(0.6 * z + 0.4 - 0.8 * f)
    a, b, c = fit_platt(conf, correct, f)
    assert (a, b, c) == pytest.approx((0.6, 0.4, -0.8), abs=0.08)
    correct = rng.random(20000) < _sigmoid(1.5 * z - 0.7)  # no feature: plain Platt scaling
    a, b, c = fit_platt(conf, correct)
    assert (a, b) == pytest.approx((1.5, -0.7), abs=0.08) and c == 0.0


def test_platt_fit_of_separable_outcomes_is_a_finite_step():
    """Every column above 0.5 right, every one below wrong: the likelihood grows without bound towards a
    step at 0.5, so the fitted map must come out steep (right ones >= 0.999, wrong ones <= 0.001) and finite,
    with or without the feature (the clip of sigma inside [1e-9, 1 - 1e-9] keeps the loss finite)."""
    from hrtem3d.evaluate.calibrate import apply_calibration, fit_platt

    rng = np.random.default_rng(7)
    conf = rng.uniform(0.05, 0.999999, 2000)
    right, f = conf > 0.5, rng.normal(size=2000)
    for feature in (None, f):
        a, b, c = fit_platt(conf, right, feature)
        assert np.isfinite([a, b, c]).all()
        p = apply_calibration(conf, a, b, c, 0.0 if feature is None else feature)
        assert p[right].min() >= 0.999 and p[~right].max() <= 0.001, (a, b, c)


def _stand_ins(monkeypatch, calibrate, truths, predict, noise):
    """Stand-ins for the validation store, dataset and segmenter of `calibrate` (no model, no store)."""
    from types import SimpleNamespace

    draws, segmenters = [], []

    class Data:
        def __init__(self, path, indices, **kw):
            self.indices = list(indices)

        def draw(self, i, structure):
            draws.append((i, structure))
            return {"counts": np.full((8, 8), self.indices[structure], np.float32)}

    class Seg:
        def __init__(self, *a, **k):
            self.calibration = self.detection = "unset"
            self.scheme = SimpleNamespace(species=("Ce", "O"))
            segmenters.append(self)

        def segment(self, image, sampling):
            assert sampling == 0.16  # the store's sampling: these images have no stated calibration
            k = int(image[0, 0])
            return SimpleNamespace(columns=predict[k], working_image=np.full((8, 8), noise[k], np.float32))

    monkeypatch.setattr(calibrate, "_validation", lambda data: ([9, 19], 8, 0.16, {9: 9, 19: 19}))
    monkeypatch.setattr(calibrate, "HrtemDataset", Data)
    monkeypatch.setattr(calibrate, "Segmenter", Seg)
    monkeypatch.setattr(calibrate, "store", SimpleNamespace(read_columns=lambda g: truths[g]))
    monkeypatch.setattr(calibrate, "noise_level", lambda w: float(w[0, 0]))
    return draws, segmenters


def test_calibration_pairs_are_the_matched_columns_with_their_correctness_and_noise(monkeypatch):
    """Structure 9: a right column (0.9), a wrong count (0.8), a wrong species (0.7), a missed one and a
    false one (neither is a pair); structure 19: two right columns (0.95) in a noiseless image (the
    feature's floor, log 1e-6). 60 images, alternating over the two structures; with every feature the
    map can use (the shift features too)."""
    import hrtem3d.evaluate.calibrate as calibrate
    from hrtem3d.segmentation.confidence import ALL_FEATURES

    truths = {9: pd.DataFrame({"species": ["Ce", "Ce", "O", "O"], "x_A": [2.0, 6.0, 2.0, 6.0],
                               "y_A": [2.0, 2.0, 4.0, 4.0], "n_atoms": [3, 4, 2, 5]}),
              19: pd.DataFrame({"species": ["Ce", "O"], "x_A": [3.0, 3.0], "y_A": [1.0, 5.0], "n_atoms": [6, 1]})}
    predict = {9: pd.DataFrame({"species": ["Ce", "Ce", "Ce", "O"], "x_A": [2.1, 6.0, 2.0, 30.0],
                                "y_A": [2.0, 2.1, 4.0, 30.0], "n_atoms": [3, 5, 2, 1],
                                "confidence": [0.9, 0.8, 0.7, 0.1]}),
               19: truths[19].assign(confidence=0.95)}
    draws, segs = _stand_ins(monkeypatch, calibrate, truths, predict, {9: 0.1, 19: 0.0})
    conf, ok, feat = calibrate.calibration_pairs("model", "data", n_images=60, thresholds={"Ce": 0.4, "O": 0.6},
                                                 features=ALL_FEATURES)
    assert draws == [(i, i % 2) for i in range(60)]
    assert segs[0].detection == {"Ce": 0.4, "O": 0.6} and segs[0].calibration is None
    np.testing.assert_array_equal(conf, np.tile([0.9, 0.8, 0.7, 0.95, 0.95], 30))
    np.testing.assert_array_equal(ok, np.tile([True, False, False, True, True], 30))
    # per column: the image's log noise and the mean logit of every column found in it (false ones too);
    # too few columns to judge the particle's size (ratio features 0); the matched column's own count and species
    lg = lambda p: np.log(np.asarray(p) / (1 - np.asarray(p)))  # noqa: E731
    want9, want19 = [np.log(0.1), lg([0.9, 0.8, 0.7, 0.1]).mean()], [np.log(1e-6), lg(0.95)]
    assert feat.shape == (150, len(ALL_FEATURES)) and list(ALL_FEATURES[:2]) == ["log_noise", "image_logit"]
    np.testing.assert_allclose(feat[:, :2], np.tile([want9] * 3 + [want19] * 2, (30, 1)))
    col = {k: feat[:5, ALL_FEATURES.index(k)] for k in ALL_FEATURES}
    np.testing.assert_allclose(col["log_n"], np.log([3, 5, 2, 6, 1]))  # the predicted counts of the matches
    np.testing.assert_array_equal(col["is_cation"], [1, 1, 1, 1, 0])
    np.testing.assert_allclose(col["image_logit_x_log_n"], col["image_logit"] * col["log_n"])
    assert not col["log_ratio"].any() and not col["abs_log_ratio_x_log_n"].any()
    assert len(calibrate.calibration_pairs("model", "data", n_images=3)[0]) == 3 + 2 + 3
    assert calibrate.calibration_pairs("model", "data", n_images=2)[2].shape == (5, 2)  # the default features


def test_calibrate_model_fits_on_the_model_and_store_and_writes_both_into_the_file(monkeypatch):
    import hrtem3d.evaluate.calibrate as calibrate
    from hrtem3d.segmentation.confidence import ALL_FEATURES, FEATURES

    rng = np.random.default_rng(4)
    conf, feat = rng.uniform(0.05, 0.995, 8000), rng.normal(-2.0, 0.5, 8000)
    ok = rng.random(8000) < _sigmoid(0.8 * np.log(conf / (1 - conf)) + 0.3 + 0.5 * (feat + 2.0))
    calls, saved, net, features_asked = [], [], object(), []
    meta = {"scheme": {}, "pixel_size_A": 0.16, "class_weights": [1.0, 2.0], "unet": {"x": 1}, "package_version": "0"}
    thresholds = {"Ce": 0.4, "O": 0.6, "recall": 0.9, "precision": 0.95, "dose": 1000.0}

    def fit_thresholds(model_path, data, scope=None, lattice=None):
        calls.append(("thresholds", str(model_path), str(data), scope) + ((lattice,) if lattice else ()))
        return dict(thresholds)

    def pairs(model_path, data, n_images, scope=None, thresholds=None, lattice=None, features=FEATURES):
        extra = (lattice,) if lattice else ()
        calls.append(("pairs", str(model_path), str(data), n_images, scope, thresholds) + extra)
        features_asked.append(tuple(features))
        others = rng.normal(0.0, 1.0, (len(feat), len(features) - 1))  # the other features: no effect
        return conf, ok, np.column_stack([feat, others])

    opened = []
    monkeypatch.setattr(calibrate.store, "open_store", lambda path: opened.append(str(path)))
    monkeypatch.setattr(calibrate, "load_model", lambda path: (net, dict(meta)))
    monkeypatch.setattr(calibrate, "fit_detection_thresholds", fit_thresholds)
    monkeypatch.setattr(calibrate, "calibration_pairs", pairs)
    monkeypatch.setattr(calibrate, "save_model", lambda path, model, m: saved.append((str(path), model, dict(m))))
    monkeypatch.setattr(calibrate, "training_class_weights", lambda data, cfg: np.array([1.0, 3.0]))
    r = calibrate.calibrate_model("m.safetensors", "store.zarr", out="out.safetensors", n_images=7)
    assert calls == [("thresholds", "m.safetensors", "store.zarr", None),
                     ("pairs", "m.safetensors", "store.zarr", 7, None, {"Ce": 0.4, "O": 0.6})]
    assert len(saved) == 1 and saved[0][0] == "out.safetensors" and saved[0][1] is net
    written = saved[0][2]
    assert "unet" not in written and "package_version" not in written and written["class_weights"] == [1.0, 2.0]
    assert written["detection_threshold"] == {**thresholds, "fitted_on": "store.zarr"}
    cal = written["column_calibration"]
    assert (cal["a"], cal["b"] + cal["c"][0] * -2.0, *cal["c"]) == pytest.approx(
        (0.8, 0.3, 0.5) + (0.0,) * (len(FEATURES) - 1), abs=0.15)
    assert cal["features"] == list(FEATURES)
    assert cal["n_columns"] == 8000 and cal["fitted_on"] == "store.zarr" and cal["through_scope"] is False
    assert r == {**cal, "detection_threshold": thresholds}
    # a file without its loss weights gets them first, written to `out`, which is then calibrated
    meta.pop("class_weights")
    calls.clear(), saved.clear()
    calibrate.calibrate_model("m.safetensors", "store.zarr", out="out.safetensors")
    assert [s[0] for s in saved] == ["out.safetensors", "out.safetensors"]
    assert saved[0][2]["class_weights"] == [1.0, 3.0] and "column_calibration" not in saved[0][2]
    assert calls[0][1] == "out.safetensors" and calls[1][1:4] == ("out.safetensors", "store.zarr", 300)
    # one reading of a lattice-heads model: fitted with that reading, kept beside the file's main map
    meta["class_weights"] = [1.0, 2.0]
    meta["column_calibration"] = {"a": 9.0}
    calls.clear(), saved.clear()
    calibrate.calibrate_model("m.safetensors", "tds.zarr", out="out.safetensors", lattice="vibrating")
    assert calls[0][-1] == "vibrating" and calls[1][-1] == "vibrating"
    written = saved[-1][2]
    assert written["column_calibration"] == {"a": 9.0} and "detection_threshold" not in written
    own = written["calibration_by_lattice"]["vibrating"]
    assert own["column_calibration"]["fitted_on"] == "tds.zarr" and own["detection_threshold"]["Ce"] == 0.4
    # the map fitted over what a user does not control: each store as the model meets it and through the
    # microscope envelope, the file's detection thresholds kept
    from hrtem3d.simulate.scope import ScopeEnvelope

    meta.pop("calibration_by_lattice", None)
    meta["detection_threshold"] = {"Ce": 0.7, "O": 0.75, "fitted_on": "train.zarr"}
    calls.clear(), saved.clear()
    env = ScopeEnvelope()
    features_asked.clear()
    calibrate.calibrate_model("m.safetensors", "s.zarr", out="o.safetensors", n_images=5, extra_data=("tds.zarr",),
                              through_scope=env, keep_thresholds=True, shift_features=True)
    assert features_asked == [ALL_FEATURES] * 4
    assert opened[-2:] == ["s.zarr", "tds.zarr"]  # every store checked before any work
    assert [(c[0], c[2], c[4]) for c in calls] == [("pairs", "s.zarr", None), ("pairs", "s.zarr", env),
                                                   ("pairs", "tds.zarr", None), ("pairs", "tds.zarr", env)]
    assert all(c[5] == {"Ce": 0.7, "O": 0.75} for c in calls)
    written = saved[-1][2]
    assert written["detection_threshold"]["fitted_on"] == "train.zarr"
    cal = written["column_calibration"]
    assert cal["n_columns"] == 4 * 8000 and cal["calibration_scope"] == env.to_dict()
    assert cal["features"] == list(ALL_FEATURES) and len(cal["c"]) == len(ALL_FEATURES)
    assert cal["fitted_on"].count("through the microscope envelope") == 2
    # nothing to keep: a clear error and nothing written
    meta.pop("detection_threshold")
    saved.clear()
    with pytest.raises(ValueError, match="no detection thresholds to keep"):
        calibrate.calibrate_model("m.safetensors", "s.zarr", out="o.safetensors", keep_thresholds=True)
    assert not saved


class _Pointwise(torch.nn.Module):
    """A stand-in network (no training): each pixel's logits from its own value x only, background 0 and
    class Ce 4 log(x / 10), so p(Ce 4) = x / (x + 10) where x > 0 (normalised). Records its inputs."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone()[0, 0].numpy())
        out = torch.full((x.shape[0], DEFAULT_SCHEME.n_classes, *x.shape[2:]), -20.0)
        out[:, 0] = 0.0
        out[:, DEFAULT_SCHEME.class_of("Ce", 4)] = torch.log(x[:, 0].clamp(min=1e-9) / 10)
        return out


_META = {"scheme": DEFAULT_SCHEME.to_dict(), "pixel_size_A": 0.16}


def test_in_memory_segmenter_checks_its_pair_tile_and_overlap():
    from hrtem3d.model.unet import UNet, UNetConfig, seam_free_overlap

    assert Segmenter((_Pointwise(), _META)).overlap == 144  # no U-Net config: the fixed margin
    unet = UNet(UNetConfig(widths=(4, 8), convs_per_level=1))
    assert Segmenter((unet, _META)).overlap == seam_free_overlap(unet.config) < 144
    assert Segmenter((_Pointwise(), _META), tile=49, overlap=24).tile == 49  # the smallest tile: 2 x 24 + 1
    with pytest.raises(HrtemError, match="twice the overlap"):
        Segmenter((_Pointwise(), _META), tile=48, overlap=24)
    with pytest.raises(HrtemError, match="in-memory model"):
        Segmenter((object(), _META))
    with pytest.raises(HrtemError, match="in-memory model"):
        Segmenter((_Pointwise(), [("pixel_size_A", 0.16)]))
    with pytest.raises(HrtemError, match="pixel_size_A"):
        Segmenter((_Pointwise(), {"scheme": DEFAULT_SCHEME.to_dict()}))


def test_in_memory_segmenter_tiles_are_the_overlapping_windows():
    """100 x 130 pixels, tile 60, overlap 10: a step of 40, windows [y0 - 10, y0 + 50) clipped to the image;
    a pointwise network then gives the untiled probabilities (to float rounding: the vectorised softmax
    rounds the last bit differently on arrays of other shapes)."""
    img = np.random.default_rng(5).normal(size=(100, 130)).astype(np.float32)
    net = _Pointwise()
    tiled = Segmenter((net, _META), tile=60, overlap=10).probabilities(img)
    windows = [(ya, yb, xa, xb) for ya, yb in ((0, 50), (30, 90), (70, 100))
               for xa, xb in ((0, 50), (30, 90), (70, 130), (110, 130))]
    assert len(net.inputs) == len(windows)
    for got, (ya, yb, xa, xb) in zip(net.inputs, windows):
        np.testing.assert_array_equal(got, img[ya:yb, xa:xb])
    np.testing.assert_allclose(tiled, Segmenter((_Pointwise(), _META)).probabilities(img), rtol=1e-6, atol=1e-9)


def test_in_memory_segmenter_decides_polarity_on_the_central_crop_and_reads_columns():
    """Bright Gaussian columns (+30 over a noise of 1) on 600 x 400 pixels at the model's pixel size: the
    polarity is decided on the central 256 x 256 crop (whole frame: no vacuum boxes, whose largest would
    centre it instead), once each sign; the columns come out at their centres with the mean normalised
    image over the 21 pixels within 0.4 A (2.5 px) as intensity."""
    rng = np.random.default_rng(6)
    centres = [(100.0, 300.0), (200.4, 290.7), (150.0, 180.0), (250.0, 420.0)]  # (x, y), inside the crop
    yy, xx = np.mgrid[0:600, 0:400]
    img = 100 + rng.normal(size=(600, 400))
    for x, y in centres:
        img += 30 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    img = img.astype(np.float32)
    net = _Pointwise()
    seg = Segmenter((net, _META), contrast="auto", skip_vacuum=False)
    s = seg.segment(img, 0.16)
    assert seg.polarity(s.working_image) == 1.0 and len(net.inputs) == 3
    work = net.inputs[2]  # the whole normalised image (one tile)
    np.testing.assert_array_equal(net.inputs[0], work[172:428, 72:328])
    np.testing.assert_array_equal(net.inputs[1], -work[172:428, 72:328])
    cols = s.columns.sort_values("x_px").reset_index(drop=True)
    assert len(cols) == 4 and (cols.species == "Ce").all() and (cols.n_atoms == 4).all()
    for (x, y), row in zip(sorted(centres), cols.itertuples()):
        assert abs(row.x_px - x) < 0.3 and abs(row.y_px - y) < 0.3
        cy, cx = int(round(row.y_px)), int(round(row.x_px))
        disc = [work[cy + dy, cx + dx] for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 6.25]
        assert len(disc) == 21 and row.intensity == pytest.approx(np.mean(disc), rel=1e-5)
    # the same image with dark atoms: the other polarity, the same columns
    seg.set_contrast("auto")
    dark = seg.segment((2 * img.mean() - img).astype(np.float32), 0.16)
    assert seg.polarity(dark.working_image) == -1.0
    np.testing.assert_allclose(dark.columns.sort_values("x_px")[["x_px", "y_px"]], cols[["x_px", "y_px"]], atol=0.05)


def test_ece_sampling_floor_shrinks_with_columns_and_flags_miscalibration():
    from hrtem3d.evaluate.metrics import ece_sampling_floor, expected_calibration_error

    rng = np.random.default_rng(2)
    small, large = rng.uniform(0.4, 0.95, 190), rng.uniform(0.4, 0.95, 3000)
    floor_small, floor_large = ece_sampling_floor(small), ece_sampling_floor(large)
    # sampling noise alone: ~0.05-0.08 on the 190 Ce columns of a 3-particle set, well under 0.03 on 3000
    assert 0.03 < floor_small < 0.10 and floor_large < 0.03 and floor_large < floor_small / 2
    # an over-confident model sits far above the floor of its own confidences
    correct = rng.random(3000) < large - 0.2
    assert expected_calibration_error(large, correct) > floor_large + 0.1
