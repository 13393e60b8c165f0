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
