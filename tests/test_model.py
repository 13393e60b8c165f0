"""Tests of the model stage: U-Net shapes, sizes, FLOPs and model files."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from hrtem3d.errors import HrtemError
from hrtem3d.labels.scheme import DEFAULT_SCHEME
from hrtem3d.model import (
    FORMAT_VERSION,
    UNet,
    UNetConfig,
    count_flops,
    count_parameters,
    default_model_path,
    load_default_model,
    load_model,
    pick_device,
    plain_unet_reference,
    read_metadata,
    save_model,
)
from hrtem3d.model import io as model_io

SMALL = UNetConfig(n_classes=5, widths=(4, 8, 16))


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------- network


@pytest.mark.parametrize("shape", [(1, 1, 100, 77), (2, 1, 33, 128), (1, 1, 64, 64), (1, 1, 3, 5)])
def test_forward_any_size_default_classes(shape):
    torch.manual_seed(0)
    model = UNet().eval()  # default: 25 classes, 4 levels
    assert model.config.n_classes == DEFAULT_SCHEME.n_classes == 25
    with torch.inference_mode():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 25, shape[2], shape[3])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(n_classes=5, widths=(4, 8, 16), residual=True),
        UNetConfig(n_classes=5, widths=(4, 8, 16), norm="group", dropout=0.2),
        UNetConfig(n_classes=5, widths=(4, 8, 16), upsample="transpose", convs_per_level=3),
        UNetConfig(n_classes=3, widths=(6,), norm="none"),
    ],
)
def test_variants_forward_and_backward(cfg):
    model = UNet(cfg).train()
    x = torch.randn(2, 1, 37, 50)
    out = model(x)
    assert out.shape == (2, cfg.n_classes, 37, 50)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bilinear_up_conv_first_is_exact():
    from hrtem3d.model.unet import Up

    torch.manual_seed(0)
    up = Up(8, 4, "bilinear")
    x = torch.randn(2, 8, 5, 7)
    slow = up.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
    assert torch.allclose(up(x), slow, atol=1e-5)


def test_bad_input_raises_one_line():
    with pytest.raises(HrtemError) as e:
        UNet(SMALL)(torch.randn(1, 2, 16, 16))
    one_line(e)


def test_config_round_trip_and_validation():
    cfg = UNetConfig(n_classes=7, widths=(8, 16), residual=True, dropout=0.1, norm="group")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert UNetConfig.from_dict(d) == cfg
    assert UNetConfig.from_dict({}) == UNetConfig()
    with pytest.raises(ValueError):
        UNetConfig.from_dict({"widths": [8], "nonsense": 1})
    with pytest.raises(ValueError):
        UNetConfig(norm="layer")
    with pytest.raises(ValueError):
        UNetConfig(widths=())


def expected_parameters(c_in: int, widths, n: int, n_classes: int, upsample: str) -> int:
    """Parameter count worked out from the architecture (convs without bias before BN)."""
    total, c = 0, c_in
    for w in widths:  # encoder: n x (3x3 conv, BN weight + bias)
        for i in range(n):
            total += 9 * (c if i == 0 else w) * w + 2 * w
        c = w
    for lo, hi in zip(widths[-2::-1], widths[:0:-1], strict=True):  # decoder, bottom up
        total += (4 if upsample == "transpose" else 1) * hi * lo + lo  # upsampling conv with bias
        total += 9 * (2 * lo) * lo + 2 * lo  # first conv sees the concatenation
        total += (n - 1) * (9 * lo * lo + 2 * lo)
    return total + widths[0] * n_classes + n_classes  # 1x1 head with bias


def test_reference_parameter_count():
    model = plain_unet_reference()
    cfg = model.config
    assert cfg.widths == (16, 32, 64, 128) and cfg.convs_per_level == 2 and cfg.n_classes == 12
    assert cfg.norm == "batch" and not cfg.residual
    n = count_parameters(model)
    assert n == expected_parameters(1, (16, 32, 64, 128), 2, 12, cfg.upsample)
    assert 400_000 < n < 550_000  # a plain 16-32-64-128 U-Net is ~0.45-0.5 M parameters
    t = UNet(UNetConfig(n_classes=12, upsample="transpose"))
    assert count_parameters(t) == expected_parameters(1, (16, 32, 64, 128), 2, 12, "transpose")
    # residual adds one bias-free 1x1 conv per block
    r = UNet(UNetConfig(n_classes=12, residual=True))
    w = (16, 32, 64, 128)
    extra = sum(ci * co for ci, co in zip((1,) + w[:-1], w, strict=True)) + sum(2 * c * c for c in w[:-1])
    assert count_parameters(r) == n + extra


def test_flops_scale_with_area_and_keep_mode():
    model = UNet(UNetConfig(n_classes=12)).train()
    f256 = count_flops(model, (1, 1, 256, 256))
    f512 = count_flops(model, (1, 1, 512, 512))
    assert model.training
    assert 3.9 < f512 / f256 < 4.1
    # the first 3x3 conv alone is 2 * 9 * 16 multiply-adds per pixel
    assert f256 > 2 * 9 * 16 * 256 * 256
    assert 10e9 < f512 < 30e9  # the reference is ~18 GFLOPs on 512^2


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("auto") == pick_device()
    if not torch.cuda.is_available():
        assert pick_device() == torch.device("cpu")
        with pytest.raises(HrtemError) as e:
            pick_device("cuda")
        one_line(e)


# ---------------------------------------------------------------------------- model files


def trained_small_model() -> UNet:
    """A small model whose BN running stats differ from their initial values."""
    torch.manual_seed(1)
    model = UNet(SMALL).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 24, 24) * 3 + 1)
    return model.eval()


META = {
    "class_scheme": {"species": ["Ce", "O"], "max_atoms": [2, 2]},
    "pixel_size_A": 0.16,
    "calibration_temperature": 1.3,
    "training": {"steps": 10, "lr": 1e-3},
}


def test_save_load_round_trip(tmp_path):
    model = trained_small_model()
    path = tmp_path / "m.safetensors"
    save_model(path, model, META)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left

    loaded, meta = load_model(path, device="cpu")
    assert not loaded.training
    assert loaded.config == model.config
    for k, v in META.items():
        assert meta[k] == v
    assert meta["unet"] == model.config.to_dict()
    from hrtem3d import __version__

    assert meta["package_version"] == __version__
    assert read_metadata(path) == meta

    x = torch.randn(2, 1, 45, 31)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))
    for k, v in model.state_dict().items():  # BN running stats included
        assert torch.equal(v, loaded.state_dict()[k]), k

    # the raw file: safetensors with the documented string metadata, no pickle
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
    assert raw["format"] == "hrtem3d-model" and raw["format_version"] == str(FORMAT_VERSION)
    assert json.loads(raw["hrtem3d"]) == meta


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "m.safetensors"

    def failing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError):
        save_model(path, trained_small_model(), META)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temp file

    monkeypatch.undo()
    save_model(path, trained_small_model(), META)
    before = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(OSError):
        save_model(path, UNet(SMALL), {"other": 1})
    assert path.read_bytes() == before  # the previous good file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_unserialisable_metadata(tmp_path):
    with pytest.raises(HrtemError) as e:
        save_model(tmp_path / "m.safetensors", UNet(SMALL), {"bad": object()})
    one_line(e)
    assert list(tmp_path.iterdir()) == []


def write_raw(path, tensors, metadata):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def bad_files(tmp_path):
    """(name, path) of files that must be refused with HrtemError."""
    good = tmp_path / "good.safetensors"
    save_model(good, trained_small_model(), META)
    data = good.read_bytes()
    out = {}

    out["missing"] = tmp_path / "nope.safetensors"
    (p := tmp_path / "empty.safetensors").write_bytes(b"")
    out["empty"] = p
    (p := tmp_path / "random.safetensors").write_bytes(bytes(range(256)) * 10)
    out["random"] = p
    (p := tmp_path / "truncated.safetensors").write_bytes(data[:-100])
    out["truncated"] = p
    (p := tmp_path / "header_cut.safetensors").write_bytes(data[:200])
    out["header_cut"] = p
    (p := tmp_path / "longer.safetensors").write_bytes(data + b"\0" * 16)
    out["longer"] = p
    n = struct.unpack("<Q", data[:8])[0]
    garbled = data[:8] + b"{" * n + data[8 + n :]
    (p := tmp_path / "garbled_header.safetensors").write_bytes(garbled)
    out["garbled_header"] = p
    torch.save(trained_small_model().state_dict(), p := tmp_path / "pickle.safetensors")
    out["pickle"] = p

    tensors = {k: v.contiguous() for k, v in trained_small_model().state_dict().items()}
    meta = {"format": "hrtem3d-model", "format_version": "1"}
    meta["hrtem3d"] = json.dumps({"unet": SMALL.to_dict()})
    write_raw(p := tmp_path / "alien.safetensors", tensors, None)
    out["alien"] = p
    write_raw(p := tmp_path / "alien_meta.safetensors", tensors, {"format": "pt"})
    out["alien_meta"] = p
    write_raw(p := tmp_path / "newer.safetensors", tensors, {**meta, "format_version": "2"})
    out["newer"] = p
    write_raw(p := tmp_path / "bad_json.safetensors", tensors, {**meta, "hrtem3d": "{not json"})
    out["bad_json"] = p
    other = UNetConfig(n_classes=5, widths=(4, 8, 32)).to_dict()
    write_raw(p := tmp_path / "shape.safetensors", tensors, {**meta, "hrtem3d": json.dumps({"unet": other})})
    out["shape_mismatch"] = p
    deeper = UNetConfig(n_classes=5, widths=(4, 8, 16, 32)).to_dict()
    write_raw(p := tmp_path / "keys.safetensors", tensors, {**meta, "hrtem3d": json.dumps({"unet": deeper})})
    out["missing_keys"] = p
    bad_cfg = {**SMALL.to_dict(), "norm": "weird"}
    write_raw(p := tmp_path / "cfg.safetensors", tensors, {**meta, "hrtem3d": json.dumps({"unet": bad_cfg})})
    out["bad_config"] = p
    return out


def test_bad_files_raise_hrtem_error(tmp_path):
    files = bad_files(tmp_path)
    for name, path in files.items():
        with pytest.raises(HrtemError) as e:
            load_model(path)
        msg = one_line(e)
        assert str(path) in msg, name
        if name in ("alien", "alien_meta", "missing", "newer", "shape_mismatch", "missing_keys"):
            key = {
                "alien": "not an hrtem3d model",
                "alien_meta": "not an hrtem3d model",
                "missing": "not found",
                "newer": "upgrade",
                "shape_mismatch": "shape mismatch",
                "missing_keys": "missing",
            }[name]
            assert key in msg, (name, msg)
    # metadata alone is readable where the header is fine
    assert read_metadata(files["shape_mismatch"])["unet"]["widths"] == [4, 8, 32]
    with pytest.raises(HrtemError):
        read_metadata(files["truncated"])


def test_default_model(tmp_path, monkeypatch):
    p = default_model_path()
    assert p.parts[-2:] == ("weights", "default.safetensors")
    assert p.parent.parent.name == "hrtem3d"
    monkeypatch.setattr(model_io, "default_model_path", lambda: tmp_path / "weights" / "default.safetensors")
    with pytest.raises(HrtemError) as e:
        load_default_model()
    assert "default model" in one_line(e)
    save_model(tmp_path / "weights" / "default.safetensors", trained_small_model(), META)
    model, meta = load_default_model("cpu")
    assert model.config == SMALL and meta["pixel_size_A"] == 0.16
