"""benchmarks/both_readings.py: both readings of the shipped pair averaged by the vibration gate's p."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_robustness  # noqa: E402
import both_readings  # noqa: E402


def test_reported_class_takes_its_calibrated_confidence_and_the_rest_keeps_its_proportions():
    raw = np.array([[0.5, 0.3, 0.2, 0.0], [0.1, 0.1, 0.7, 0.1]])
    out = both_readings.with_distribution(raw, np.array([0, 2]), np.array([0.9, 0.4]))
    assert np.allclose(out.sum(1), 1)
    assert out[0, 0] == pytest.approx(0.9) and out[1, 2] == pytest.approx(0.4)
    assert out[0, 1] / out[0, 2] == pytest.approx(1.5)
    assert out[1, 0] == pytest.approx(out[1, 3]) and out[1, 0] == pytest.approx(0.2)


def test_weight_is_p_itself_by_default_and_moves_with_its_shift():
    p = np.array([0.1, 0.5, 0.9])
    assert np.allclose(both_readings.weight(p), p)
    assert (both_readings.weight(p, 1.0, -2.0) < p).all()
    assert both_readings.weight(np.array([0.5]), 3.0, 0.0)[0] == pytest.approx(0.5)


def _table(rng: np.random.Generator, n_images: int = 40) -> pd.DataFrame:
    """Ce columns whose truth is the static reading's count on images with p < 0.5 and the vibrating one's
    above: the vibrating reading should get a weight that rises with p more steeply than p itself."""
    rows = []
    for i in range(n_images):
        p = rng.uniform(0.05, 0.95)
        for _ in range(20):
            s = int(rng.integers(2, 8))
            v = s + 1
            truth = v if p > 0.5 else s
            row = {"species": "Ce", "n_atoms": truth, "s_pred_n": s, "v_pred_n": v, "s_confidence": 0.8,
                   "v_confidence": 0.8, "source": "synthetic", "case": i, "dose": 1000.0, "p_vibrating": p,
                   "routed": "vibrating" if p > 0.67 else "static"}
            for r, k in (("s", s), ("v", v)):
                probs = np.full(12, 0.01)
                probs[k - 1] = 0.89
                row.update({f"{r}_p_{c + 1}": probs[c] for c in range(12)})
            rows.append(row)
    return pd.DataFrame(rows)


def test_fitted_weight_follows_which_reading_is_right(tmp_path, capsys):
    path = tmp_path / "fit.parquet"
    _table(np.random.default_rng(0)).to_parquet(path)
    scale, shift = both_readings.fit_weight(path)
    assert scale > 2  # steeper than p itself: the synthetic truth switches at p = 0.5
    assert abs(shift) < 1
    both_readings.summary(path, scale, shift)
    out = capsys.readouterr().out
    assert "synthetic" in out and "best of two" in out


def test_benchmark_names_and_refuses_a_vibration_gate_for_a_model_without_the_pair(tiny_model):
    assert bench_robustness.model_name("default!vgate=/a/vg.safetensors") == "default!vgate=vg"
    assert bench_robustness.model_name("default!gate=/a/cg.safetensors!nogatesmap") == "default!gate=cg!nogatesmap"
    with pytest.raises(SystemExit, match="routes the shipped pair"):
        bench_robustness.load_segmenter(f"{tiny_model}!vgate=whatever.safetensors", 1)


def test_fitting_draws_cycle_the_particles_and_place_the_truth_in_the_draws_frame(tiny_store):
    from gate_confidence import fitting_draws

    from hrtem3d.data import store

    n_structures = len(store.completed(store.open_store(tiny_store)))
    draws = list(fitting_draws(tiny_store, n_structures + 1, background=(0.5, 0.5)))
    assert [i for i, *_ in draws] == list(range(n_structures + 1))
    assert draws[0][1] == draws[-1][1]  # the particles in turn
    for _, _, d, truth in draws:
        assert {"species", "n_atoms", "x_A", "y_A"} <= set(truth.columns)
        assert d["counts"].ndim == 2 and d["native_pixel_A"] > 0
    _, _, d, _ = draws[0]
    raw = store.read_columns(next(g for g in store.structure_groups(store.open_store(tiny_store))
                                  if int(g.attrs["index"]) == draws[0][1]))
    assert np.allclose(draws[0][3].x_A, raw.x_A - d["origin_A"][1])
    assert all(t is None for *_, t in fitting_draws(tiny_store, 2, truth=False))
