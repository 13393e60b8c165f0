"""benchmarks/soup.py: models fine-tuned from one parent, interpolated in weight space."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import soup  # noqa: E402

from hrtem3d.model.io import load_model, save_model  # noqa: E402
from hrtem3d.model.unet import UNet, UNetConfig  # noqa: E402

CFG = UNetConfig(in_channels=1, n_classes=5, widths=(4, 8))


def _net(seed: int, tmp: Path, name: str, temperature: float, config: UNetConfig = CFG) -> Path:
    torch.manual_seed(seed)
    net = UNet(config)
    with torch.no_grad():  # running statistics away from their defaults, so they are averaged visibly
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = tmp / f"{name}.safetensors"
    save_model(path, net, {"temperature": temperature, "normalization": "relative",
                           "detection_threshold": {"Ce": 0.8, "O": 0.7},
                           "column_calibration": {"a": 1.0, "b": 0.0, "c": 0.0},
                           "calibration_by_lattice": {"static": {"detection_threshold": {"Ce": 0.9, "O": 0.9}}}})
    return path


def test_the_soup_is_the_weighted_mean_of_every_float_tensor(tmp_path):
    a, b = _net(0, tmp_path, "a", 0.9), _net(1, tmp_path, "b", 1.3)
    out = tmp_path / "soup.safetensors"
    soup.main([str(a), str(b), "--weights", "1,3", "--out", str(out)])
    mixed, meta = load_model(out, device="cpu")
    sa, sb = load_model(a, device="cpu")[0].state_dict(), load_model(b, device="cpu")[0].state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert any("running_var" in k for k in floats)
    for k in floats:
        torch.testing.assert_close(mixed.state_dict()[k], 0.25 * sa[k] + 0.75 * sb[k])
    assert not torch.equal(mixed.state_dict()[floats[0]], sa[floats[0]])
    assert meta["temperature"] == pytest.approx(0.25 * 0.9 + 0.75 * 1.3)
    assert [s["weight"] for s in meta["soup"]] == pytest.approx([0.25, 0.75])
    # the parents' calibration does not describe the soup: it must be calibrated afresh
    assert "detection_threshold" not in meta and "column_calibration" not in meta
    assert "calibration_by_lattice" not in meta  # a lattice reading's own thresholds would be preferred


def test_a_soup_of_one_weight_is_that_model(tmp_path):
    a, b = _net(0, tmp_path, "a", 1.0), _net(1, tmp_path, "b", 1.0)
    net, _ = soup.soup([str(a), str(b)], [1.0, 0.0])
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), load_model(a, device="cpu")[0](x))


def test_models_of_different_networks_are_refused(tmp_path):
    a = _net(0, tmp_path, "a", 1.0)
    b = _net(1, tmp_path, "b", 1.0, UNetConfig(in_channels=1, n_classes=5, widths=(4, 16)))
    with pytest.raises(SystemExit, match="network configuration"):
        soup.soup([str(a), str(b)], [0.5, 0.5])
    with pytest.raises(SystemExit, match="one weight a model"):
        soup.soup([str(a), str(a)], [1.0])


def test_a_layer_wise_soup_takes_each_prefix_from_its_own_weights(tmp_path):
    a, b = _net(0, tmp_path, "a", 1.0), _net(1, tmp_path, "b", 1.0)
    out = tmp_path / "layers.safetensors"
    # everything from a, the first encoder level from b, its first conv's weight half and half
    soup.main([str(a), str(b), "--weights", "1,0", "--layer", "down.0.=0,1", "--layer", "down.0.body.0.=1,1",
               "--out", str(out)])
    mixed = load_model(out, device="cpu")[0].state_dict()
    sa, sb = load_model(a, device="cpu")[0].state_dict(), load_model(b, device="cpu")[0].state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    first = [k for k in floats if k.startswith("down.0.")]
    assert first and len(first) < len(floats)
    for k in floats:
        if k.startswith("down.0.body.0."):
            expected = 0.5 * sa[k] + 0.5 * sb[k]
        elif k.startswith("down.0."):
            expected = sb[k]
        else:
            expected = sa[k]
        torch.testing.assert_close(mixed[k], expected)
    with pytest.raises(SystemExit, match="no tensor of the network starts with"):
        soup.soup([str(a), str(b)], [1.0, 0.0], {"encoder.9.": [0.0, 1.0]})
    with pytest.raises(SystemExit, match="for down.0."):
        soup.soup([str(a), str(b)], [1.0, 0.0], {"down.0.": [1.0]})
