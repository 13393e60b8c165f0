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
from tds_identifiability import gate_from  # noqa: E402

from hrtem3d.errors import HrtemError  # noqa: E402
from hrtem3d.model.gate import load_gate, save_gate  # noqa: E402


@pytest.fixture(scope="module")
def gate_file(tiny_model, tmp_path_factory):
    torch.manual_seed(0)
    gate, meta = gate_from(tiny_model)
    torch.nn.init.normal_(gate.pool.weight)  # not the plain mean: the attention pooling matters
    path = tmp_path_factory.mktemp("gate") / "gate.safetensors"
    save_gate(path, gate, {**meta, "threshold": 0.5, "steps": 0})
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
    assert routed.gate.p_vibrating(image, 0.16) == pytest.approx(routed.p_vibrating[0])


def test_a_routed_pair_is_named_by_its_gate_and_threshold(gate_file, tiny_model):
    assert bench_robustness.model_name(f"route={gate_file},{tiny_model},default") == "route:gate"
    assert bench_robustness.model_name(f"route={gate_file},{tiny_model},default,0.7") == "route:gate@0.7"
    assert not lattice_route.is_route(str(tiny_model))


def test_the_gate_file_keeps_its_encoder_head_and_threshold_only(gate_file, tiny_model, tmp_path):
    from hrtem3d.model.io import load_model

    gate, meta = load_gate(gate_file)
    assert meta["threshold"] == 0.5 and meta["pixel_size_A"] == 0.16
    assert not any(k.startswith(("unet.up_blocks.", "unet.head.")) for k in gate.encoder_state())
    trained = gate_from(tiny_model)[0].eval()  # the counting model's encoder, untrained pool and head
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        first = load_model(tiny_model, "cpu")[0].encode(x)[-1]
        assert torch.allclose(trained.unet.encode(x)[-1], first)  # the encoder is the model's
        assert not torch.allclose(gate(x), trained(x))  # the saved pool differs from a fresh one
        again, _ = load_gate(gate_file)
        assert torch.allclose(again(x), gate(x))
    bad = tmp_path / "bad.safetensors"
    save_file({k: v for k, v in gate.state_dict().items() if k.startswith("head.")}, str(bad))
    with pytest.raises(HrtemError, match="not an hrtem3d vibration gate"):
        load_gate(bad)  # no gate metadata
    with pytest.raises(HrtemError, match="not an hrtem3d vibration gate"):
        load_gate(tiny_model)  # a counting model is not a gate
