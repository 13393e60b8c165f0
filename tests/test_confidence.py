"""The confidence map at the ends of its range, against the analytic values."""

from __future__ import annotations

import numpy as np

from hrtem3d.segmentation.confidence import apply_calibration


def test_calibration_is_finite_monotone_and_clipped_at_both_ends():
    p = np.array([0.0, 1e-9, 0.3, 0.5, 0.9, 1 - 1e-9, 1.0])
    q = apply_calibration(p, a=1.3, b=-0.2)
    assert np.isfinite(q).all() and (np.diff(q) >= 0).all()
    eps = 1e-6  # a raw confidence of exactly 0 or 1 is read as 1e-6 or 1 - 1e-6: never certain
    lo = 1 / (1 + np.exp(-(1.3 * np.log(eps / (1 - eps)) - 0.2)))
    hi = 1 / (1 + np.exp(-(1.3 * np.log((1 - eps) / eps) - 0.2)))
    np.testing.assert_allclose([q[0], q[1], q[-2], q[-1]], [lo, lo, hi, hi], rtol=1e-9)
    assert q[-1] < 1.0 and q[0] > 0.0
    np.testing.assert_allclose(q[3], 1 / (1 + np.exp(0.2)), rtol=1e-12)  # logit(0.5) = 0


def test_reliability_curves_plot_each_sets_bins_and_name_its_ece():
    from hrtem3d.evaluate.metrics import expected_calibration_error
    from hrtem3d.viz.evaluation import reliability_curves

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 5000)
    honest = rng.uniform(size=5000) < conf
    sure_but_wrong = rng.uniform(size=5000) < conf - 0.4  # 40 points over-confident
    fig = reliability_curves({"honest": (conf, honest), "shifted": (conf, sure_but_wrong), "empty": ([], [])})
    ax = fig.axes[0]
    lines = {ln.get_label().split(":")[0]: ln for ln in ax.get_lines()}
    assert set(lines) == {"perfect calibration", "honest", "shifted"}  # an empty set draws nothing
    x, y = lines["shifted"].get_data()
    assert np.all(np.asarray(y) < np.asarray(x) - 0.3)  # below the diagonal: over-confident
    x, y = lines["honest"].get_data()
    assert np.max(np.abs(np.asarray(y) - np.asarray(x))) < 0.06
    ece = expected_calibration_error(conf, sure_but_wrong)
    assert f"ECE {ece:.2f}" in lines["shifted"].get_label() and ece > 0.3


def test_image_features_are_the_log_noise_and_the_mean_logit_of_the_images_columns():
    from hrtem3d.segmentation.confidence import image_features

    f = image_features(np.array([0.9, 0.5, 0.2]), noise=0.05)
    want = np.mean(np.log([0.9 / 0.1, 1.0, 0.2 / 0.8]))
    assert f["log_noise"] == np.log(0.05) and abs(f["image_logit"] - want) < 1e-12
    assert image_features(np.array([]), noise=0.0) == {"log_noise": np.log(1e-6), "image_logit": 0.0,
                                                       "log_ratio": 0.0, "abs_log_ratio": 0.0}
    # the particle's count-to-size ratio against the typical 0.70: signed, unsigned, clipped at +-1, 0 unknown
    assert image_features(np.array([0.9]), 0.1, ratio=0.35)["log_ratio"] == np.log(0.5)
    assert image_features(np.array([0.9]), 0.1, ratio=1.4)["abs_log_ratio"] == np.log(2.0)
    assert image_features(np.array([0.9]), 0.1, ratio=0.01)["log_ratio"] == -1.0
    assert image_features(np.array([0.9]), 0.1, ratio=float("nan"))["abs_log_ratio"] == 0.0


def test_column_features_carry_each_columns_count_and_species_beside_the_images_features():
    from hrtem3d.segmentation.confidence import ALL_FEATURES, column_features, image_features

    raw, n, cat = np.array([0.9, 0.6, 0.3]), np.array([1, 4, 0]), np.array([True, True, False])
    f = column_features(raw, 0.05, 0.5, n_atoms=n, cation=cat)
    img = image_features(raw, 0.05, 0.5)
    col = dict(zip(ALL_FEATURES, f.T))
    for k, v in img.items():
        np.testing.assert_array_equal(col[k], v)
    np.testing.assert_allclose(col["log_n"], np.log([1, 4, 1]))  # an empty count reads as one atom
    np.testing.assert_array_equal(col["is_cation"], [1, 1, 0])
    np.testing.assert_allclose(col["log_ratio_x_log_n"], img["log_ratio"] * np.log([1, 4, 1]))
    # a map chooses its features by name and order
    two = column_features(raw, 0.05, 0.5, n_atoms=n, cation=cat, names=["is_cation", "log_noise"])
    np.testing.assert_array_equal(two, np.c_[col["is_cation"], col["log_noise"]])


def test_calibrate_columns_reads_both_forms_of_the_map():
    """A file of the noise-only form (`c` a number) and one of the two-feature form (`c` a list with the
    feature names): each gives sigma(a logit p + b + c . f) with f from the image itself."""
    from hrtem3d.segmentation.confidence import calibrate_columns

    raw, noise = np.array([0.95, 0.7, 0.4]), 0.08
    z = np.log(raw / (1 - raw))
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    old = calibrate_columns(raw, {"a": 1.1, "b": -0.3, "c": -0.2}, noise)
    np.testing.assert_allclose(old, sig(1.1 * z - 0.3 - 0.2 * np.log(noise)), rtol=1e-12)
    new = calibrate_columns(raw, {"a": 0.9, "b": 0.1, "c": [-0.2, 0.5], "features": ["log_noise", "image_logit"]},
                            noise)
    np.testing.assert_allclose(new, sig(0.9 * z + 0.1 - 0.2 * np.log(noise) + 0.5 * z.mean()), rtol=1e-12)
    # the names decide which coefficient goes with which feature
    swapped = calibrate_columns(raw, {"a": 0.9, "b": 0.1, "c": [0.5, -0.2],
                                      "features": ["image_logit", "log_noise"]}, noise)
    np.testing.assert_allclose(swapped, new, rtol=1e-12)
    # a map with column features: the ratio and each column's count move its own confidence
    full = {"a": 1.0, "b": 0.0, "c": [1.0, -2.0], "features": ["log_ratio", "abs_log_ratio_x_log_n"]}
    n = np.array([1, 3, 6])
    thin = calibrate_columns(raw, full, noise, 0.35, n_atoms=n, cation=np.ones(3, bool))
    r = np.log(0.5)
    np.testing.assert_allclose(thin, sig(z + r - 2.0 * abs(r) * np.log(n)), rtol=1e-12)
    assert (np.diff(z - np.log(thin / (1 - thin))) > 0).all()  # the longer the column, the more a thin reading costs
    typical = calibrate_columns(raw, full, noise, 0.70, n_atoms=n, cation=np.ones(3, bool))
    np.testing.assert_allclose(typical, raw, rtol=1e-9)
    # a map with c = 0 is plain Platt scaling, whatever the noise
    np.testing.assert_allclose(calibrate_columns(raw, {"a": 1.0, "b": 0.0, "c": 0.0}, 1e3), raw, rtol=1e-9)


def test_an_image_the_network_is_unsure_of_lowers_every_columns_confidence():
    """Half the images are shifted: the network's raw confidence there is worth less (outcomes drawn from
    raw**3) and it is lower on every column at once. The noise-only map cannot tell them apart (same
    dose); the image-level feature does, and both halves come out calibrated."""
    from hrtem3d.evaluate.calibrate import fit_platt
    from hrtem3d.evaluate.metrics import expected_calibration_error
    from hrtem3d.segmentation.confidence import apply_calibration, image_features

    rng = np.random.default_rng(2)
    conf, ok, feats, shifted = [], [], [], []
    for i in range(400):
        s = i % 2 == 1
        raw = rng.uniform(0.4, 0.9, 30) if s else rng.uniform(0.5, 0.999, 30)
        right = rng.random(30) < (raw**3 if s else raw)
        f = image_features(raw, noise=0.1)
        conf.append(raw), ok.append(right), shifted.append(np.full(30, s))
        feats.append(np.tile([f["log_noise"], f["image_logit"]], (30, 1)))
    conf, ok, feats, shifted = map(np.concatenate, (conf, ok, feats, shifted))
    a, b, c = fit_platt(conf, ok, feats[:, 0])
    plain = apply_calibration(conf, a, b, c, feats[:, 0])
    a, b, c = fit_platt(conf, ok, feats)
    assert isinstance(c, list) and len(c) == 2 and c[1] > 0
    both = apply_calibration(conf, a, b, c, feats)
    for half in (shifted, ~shifted):
        e_plain = expected_calibration_error(plain[half], ok[half])
        e_both = expected_calibration_error(both[half], ok[half])
        assert e_both < 0.06 and e_both < 0.5 * e_plain, (e_plain, e_both)


def test_the_gates_features_vanish_on_a_reading_at_the_gain_used_and_grow_with_what_was_left_unread():
    from hrtem3d.segmentation.confidence import GATE_FEATURES, RAISED_FEATURES, gate_features

    n = np.array([1, 4, 9])
    ideal = gate_features(1.0, 0.0, 1.0, n)
    assert ideal.shape == (3, len(GATE_FEATURES)) and not ideal.any()
    names = GATE_FEATURES + RAISED_FEATURES
    taken = gate_features(2.0, 0.2, 2.0, n, names=names)  # the reading taken: nothing unread, a raised gain
    unread = gate_features(2.0, 0.2, 1.0, n, names=names)  # the reading left aside (the lattice guard, a low bound)
    k = {name: i for i, name in enumerate(names)}
    assert np.allclose(taken[:, k["unread"]], 0) and np.allclose(taken[:, k["raised"]], np.log(2))
    assert np.allclose(unread[:, k["unread"]], np.log(2 / 1.1)) and np.allclose(unread[:, k["raised"]], 0)
    assert np.allclose(unread[:, k["spread"]], 0.1)  # the spread beyond an ideal reading's 0.1
    assert not gate_features(1.05, 0.08, 1.0, n).any()  # what the gate reads on ideal images: no evidence
    assert unread[0, k["unread_x_log_n"]] == 0 < unread[1, k["unread_x_log_n"]] < unread[2, k["unread_x_log_n"]]
    assert np.allclose(gate_features(0.9, 0.1, 1.0, n)[:, k["unread"]], 0)  # more contrast than simulated: no loss


def test_the_gates_map_lowers_thick_columns_most_where_the_gate_read_a_loss_left_unread():
    import pandas as pd
    import pytest

    from hrtem3d.segmentation.confidence import GATE_FEATURES, apply_gates_map

    cols = pd.DataFrame({"n_atoms": [1, 3, 8], "confidence": [0.9, 0.9, 0.9]})
    cmap = {"a": 1.0, "b": 0.0, "c": [-1.0, 0.0, -2.0, 0.0], "features": list(GATE_FEATURES)}
    same = apply_gates_map(cols, cmap, 1.0, 0.05, 1.0)
    assert np.allclose(same.confidence, 0.9)  # an ideal reading at gain 1: untouched
    low = apply_gates_map(cols, cmap, 2.0, 0.2, 1.0).confidence.to_numpy()
    assert low[0] < 0.9 and low[2] < low[1] < low[0]
    with pytest.raises(ValueError, match="does not know"):
        apply_gates_map(cols, {**cmap, "features": ["unread", "moon_phase"]}, 2.0, 0.2, 1.0)
