"""benchmarks/lattice_route.py: each image routed to a static or a vibrating reader by a vibration classifier."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_robustness  # noqa: E402
import lattice_route  # noqa: E402
from tds_identifiability import VibrationClassifier, encoder_state, load_classifier  # noqa: E402

from hrtem3d.model.io import load_model  # noqa: E402


@pytest.fixture(scope="module")
def gate_file(tiny_model, tmp_path_factory):
    torch.manual_seed(0)
    net = VibrationClassifier(load_model(tiny_model, "cpu")[0])
    path = tmp_path_factory.mktemp("gate") / "gate.safetensors"
    save_file(encoder_state(net), str(path),
              metadata={"init": str(tiny_model), "steps": "0", "scope": "False"})
    return path


def _image() -> np.ndarray:
    """A lattice of bright blobs at 0.16 Å a pixel, with shot noise."""
    y, x = np.mgrid[:96, :96]
    lattice = 1 + 0.3 * (np.cos(2 * np.pi * x / 12) * np.cos(2 * np.pi * y / 17)) ** 2
    return np.random.default_rng(3).poisson(400 * lattice).astype(np.float32)


@pytest.mark.parametrize("threshold, reader", [(0.0, "vibrating"), (1.0, "static")])
def test_each_image_goes_to_the_reader_its_gate_chooses(gate_file, tiny_model, threshold, reader):
    spec = f"route={gate_file},{tiny_model},default,{threshold}"
    routed = bench_robustness.load_segmenter(spec, threads=1)
    assert isinstance(routed, lattice_route.RoutedSegmenter) and routed.threshold == threshold
    image = _image()
    got = routed.segment(image, 0.16).columns
    want = getattr(routed, reader).segment(image, 0.16).columns
    other = getattr(routed, {"static": "vibrating", "vibrating": "static"}[reader]).segment(image, 0.16).columns
    assert not want.equals(other)  # the two readers disagree on this image, so the route is visible
    pd.testing.assert_frame_equal(got, want)
    assert len(routed.p_vibrating) == 1 and 0.0 < routed.p_vibrating[0] < 1.0
    # the same image gets the same answer: the gate is deterministic and sees segment's working image
    assert routed.gate.p_of(image, 0.16) == pytest.approx(routed.p_vibrating[0])


def test_a_routed_pair_is_named_by_its_gate_and_threshold(gate_file, tiny_model):
    assert bench_robustness.model_name(f"route={gate_file},{tiny_model},default") == "route:gate"
    assert bench_robustness.model_name(f"route={gate_file},{tiny_model},default,0.7") == "route:gate@0.7"
    assert not lattice_route.is_route(str(tiny_model))


def test_the_saved_classifier_is_its_encoder_and_head_only(gate_file, tiny_model):
    torch.manual_seed(1)
    other = VibrationClassifier(load_model(tiny_model, "cpu")[0])
    loaded = load_classifier(VibrationClassifier(load_model(tiny_model, "cpu")[0]), gate_file)
    torch.manual_seed(0)
    saved = VibrationClassifier(load_model(tiny_model, "cpu")[0])  # the fixture's weights
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), saved.eval()(x))
        assert not torch.allclose(other.eval()(x), saved(x))
    wrong = {k: v for k, v in saved.state_dict().items() if k.startswith("head.")}  # the encoder missing
    bad = gate_file.parent / "bad.safetensors"
    save_file(wrong, str(bad))
    with pytest.raises(ValueError, match="not a classifier"):
        load_classifier(VibrationClassifier(load_model(tiny_model, "cpu")[0]), bad)
