"""Inference backends (`hrtem3d.model.runtime`): ONNX Runtime and PyTorch give the same logits, the exported graph
is cached by the weights' hash, int8 stays close, and the shipped model's columns do not depend on the backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.transform import resize

from hrtem3d.errors import HrtemError
from hrtem3d.model import runtime
from hrtem3d.model.runtime import forget_graph, make_engine, onnx_graph, weights_hash
from hrtem3d.model.unet import UNet, UNetConfig, fold_batchnorm
from hrtem3d.segmentation.segmenter import Segmenter, to_input_grid


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = UNet(UNetConfig(widths=(4, 8, 8), n_classes=5))
    with torch.no_grad():  # BatchNorm statistics away from (0, 1), so folding them is really tested
        for m in n.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return n.eval()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HRTEM3D_CACHE", str(tmp_path / "cache"))
    runtime._GRAPHS.clear()
    yield
    runtime._GRAPHS.clear()


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 1, 37, 50), (1, 1, 5, 9)])
def test_onnx_and_torch_backends_match_the_network(net, shape):
    x = torch.randn(*shape)
    with torch.inference_mode():
        want = net(x)
    for backend in ("onnx", "torch"):
        got = make_engine(net, backend=backend)(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert torch.allclose(got, want, atol=2e-4), (backend, (got - want).abs().max())


def test_folding_batchnorm_leaves_the_original_untouched(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_graph_is_cached_by_weights_and_reexported_when_damaged(net, tmp_path, monkeypatch):
    graph = onnx_graph(net)
    files = list((tmp_path / "cache").glob("unet-*.onnx"))
    assert len(files) == 1 and files[0].read_bytes() == graph and weights_hash(net) in files[0].name
    runtime._GRAPHS.clear()
    export = runtime._export
    monkeypatch.setattr(runtime, "_export", lambda n: pytest.fail("exported again although cached"))
    assert onnx_graph(net) == graph  # read back from disk
    with torch.no_grad():  # other weights: another key, so a stale graph is never used
        net.head.bias += 1.0
    assert weights_hash(net) not in files[0].name
    monkeypatch.setattr(runtime, "_export", export)  # (not undo(): that would drop the private cache too)
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(make_engine(net, backend="onnx")(x), net(x), atol=2e-4)
    # a damaged cache file is exported again, not trusted
    forget_graph(net)
    runtime._GRAPHS.clear()
    onnx_graph(net)
    runtime._GRAPHS.clear()
    damaged = tmp_path / "cache" / f"unet-{weights_hash(net)}.onnx"
    damaged.write_bytes(b"not an onnx graph")
    with torch.inference_mode():
        assert torch.allclose(make_engine(net, backend="onnx")(x), net(x), atol=2e-4)
    assert damaged.read_bytes() != b"not an onnx graph"
    # ... a truncated one too, and the int8 path (which quantises the cached graph) recovers alike
    runtime._GRAPHS.clear()
    damaged.write_bytes(damaged.read_bytes()[:1000])
    calib = [np.zeros((16, 16), np.float32), np.ones((16, 16), np.float32)]
    assert make_engine(net, backend="int8", calibration=calib)(x).shape == (1, 5, 16, 16)
    assert len(damaged.read_bytes()) > 1000


def test_unwritable_cache_only_costs_the_export(net, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HRTEM3D_CACHE", str(blocker / "sub"))  # a path under a file: cannot be created
    x = torch.randn(1, 1, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(make_engine(net, backend="onnx")(x), net(x), atol=2e-4)


def test_int8_is_close_and_needs_calibration(net):
    with pytest.raises(HrtemError, match="calibration"):
        make_engine(net, backend="int8")
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((48, 48)).astype(np.float32) for _ in range(2)]
    eng = make_engine(net, backend="int8", calibration=calib)
    x = torch.from_numpy(rng.standard_normal((1, 1, 48, 48)).astype(np.float32))
    with torch.inference_mode():
        want = net(x)
    got = eng(x)
    assert eng.backend == "int8" and got.shape == want.shape
    r = np.corrcoef(got.numpy().ravel(), want.numpy().ravel())[0, 1]
    assert 0.98 < r < 1.0 - 1e-9, r  # close, and really quantised (not the float graph)


def test_backend_errors_are_one_line():
    with pytest.raises(HrtemError, match="backend must be one of"):
        make_engine(torch.nn.Conv2d(1, 2, 1), backend="tensorrt")
    with pytest.raises(HrtemError, match="U-Net only"):
        make_engine(torch.nn.Conv2d(1, 2, 1), backend="onnx")
    eng = make_engine(torch.nn.Conv2d(1, 2, 1), backend="auto")  # any other network runs in PyTorch
    assert eng.backend == "torch" and eng(torch.zeros(1, 1, 4, 4)).shape == (1, 2, 4, 4)


def test_input_grid_maps_match_skimage_resize():
    rng = np.random.default_rng(1)
    for shape, target in (((64, 64), (128, 128)), ((37, 53), (80, 101)), ((40, 40), (30, 50))):
        lab = rng.integers(0, 25, shape).astype(np.uint8)
        want = resize(lab, target, order=0, preserve_range=True, anti_aliasing=False).astype(np.uint8)
        assert np.array_equal(to_input_grid(lab, target, order=0), want)
        smooth = resize(rng.random((8, 8)), shape, order=3).astype(np.float32)  # smooth: edges do not dominate
        want = resize(smooth, target, order=1, preserve_range=True)
        got = to_input_grid(smooth, target, order=1)
        inner = (slice(2, -2), slice(2, -2))
        assert got.dtype == np.float32 and np.abs(got - want)[inner].max() < 0.02


def test_shipped_model_columns_do_not_depend_on_the_backend(shipped_movie):
    m = shipped_movie
    tables = {b: Segmenter(contrast="bright", backend=b).segment(m.frames[0], m.pixel_size_A).columns
              for b in ("torch", "onnx")}
    a, b = tables["torch"], tables["onnx"]
    assert len(a) > 50 and len(a) == len(b)
    assert np.abs(a.x_px.to_numpy() - b.x_px.to_numpy()).max() < 0.01
    assert (a.n_atoms.to_numpy() == b.n_atoms.to_numpy()).all() and (a.species == b.species).all()
    assert np.abs(a.confidence.to_numpy() - b.confidence.to_numpy()).max() < 1e-3


def test_a_network_with_global_context_exports_and_depends_on_the_whole_input():
    import copy

    torch.manual_seed(1)
    net = UNet(UNetConfig(widths=(4, 8, 8), n_classes=5, global_context=True)).eval()
    with torch.no_grad():  # away from the identity it starts as
        for p in net.context.parameters():
            p.normal_(0, 0.5)
    plain = copy.deepcopy(net)
    plain.context = None
    x = torch.randn(2, 1, 40, 48)
    far = x.clone()
    far[..., :, 40:] = 20 * torch.randn(2, 1, 40, 8)  # 36+ pixels from the corner: beyond the receptive radius (29)
    with torch.inference_mode():
        want = net(x)
        moved = (net(far) - want)[..., :4, :4].abs().max()
        local = (plain(far) - plain(x))[..., :4, :4].abs().max()
    assert moved > 1e-5 and local == 0
    for backend in ("onnx", "torch"):
        got = make_engine(net, backend=backend)(x)
        assert torch.allclose(got, want, atol=2e-4), (backend, (got - want).abs().max())


def test_a_network_with_lattice_heads_exports_its_mixture_and_the_gate_picks_a_reading():
    from hrtem3d.model.unet import mix_lattice_hypotheses

    torch.manual_seed(2)
    net = UNet(UNetConfig(widths=(4, 8, 8), n_classes=5, lattice_heads=True)).eval()
    x = torch.randn(2, 1, 40, 48)
    with torch.inference_mode():
        static, vibrating, gate = net(x, hypotheses=True)
        want = net(x)
        for p in net.gate.parameters():  # a gate sure of a static lattice: the static reading alone
            p.zero_()
        net.gate[2].bias.fill_(-40.0)
        sure = net(x)
    assert static.shape == vibrating.shape == want.shape == (2, 5, 40, 48) and gate.shape == (2,)
    assert torch.allclose(torch.logsumexp(want, 1), torch.zeros(2, 40, 48), atol=1e-5)  # log-probabilities
    assert torch.allclose(want, mix_lattice_hypotheses(static, vibrating, gate), atol=1e-5)
    assert not torch.allclose(torch.softmax(want, 1), torch.softmax(static, 1), atol=1e-3)  # two readings mixed
    assert torch.allclose(torch.softmax(sure, 1), torch.softmax(static, 1), atol=1e-5)
    for backend in ("onnx", "torch"):
        got = make_engine(net, backend=backend)(x)
        assert torch.allclose(got, sure, atol=2e-4), (backend, (got - sure).abs().max())


def test_a_fixed_lattice_reading_is_that_head_alone_and_needs_a_model_with_heads(tmp_path):
    from hrtem3d.labels import ClassScheme
    from hrtem3d.model.io import save_model
    from hrtem3d.model.unet import fix_lattice

    torch.manual_seed(3)
    net = UNet(UNetConfig(widths=(4, 8), n_classes=25, lattice_heads=True)).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        static, vibrating, _ = net(x, hypotheses=True)
        for kind, want in (("static", static), ("vibrating", vibrating)):
            got = torch.softmax(fix_lattice(net, kind)(x), 1)
            assert torch.allclose(got, torch.softmax(want, 1), atol=1e-6), kind
    assert fix_lattice(net, "auto") is net
    path = tmp_path / "heads.safetensors"
    own = {"a": 2.0, "b": 0.0, "c": 0.0}
    save_model(path, net, {"scheme": ClassScheme().to_dict(), "pixel_size_A": 0.16, "default_lattice": "static",
                           "column_calibration": {"a": 1.0, "b": 0.0, "c": 0.0},
                           "calibration_by_lattice": {"static": {"column_calibration": own}}})
    seg = Segmenter(path, backend="torch")
    assert seg.lattice == "static" and seg.calibration == own  # the file's default reading, with its own map
    assert Segmenter(path, backend="torch", lattice="vibrating").calibration["a"] == 1.0  # none of its own
    image = np.random.default_rng(0).poisson(40, (64, 64)).astype(np.float32)
    with torch.inference_mode():
        work = torch.from_numpy(seg.segment(image, 0.16).working_image)[None, None]
        assert torch.allclose(seg.model(work), fix_lattice(net, "static")(work), atol=1e-5)
    # the reading used is reported beside the image's checks
    import json

    from typer.testing import CliRunner

    from hrtem3d.cli import app

    np.save(tmp_path / "img.npy", image)
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "img.npy"), "--pixel-size", "0.16", "--model", str(path),
                                 "--lattice", "vibrating", "--out", str(tmp_path / "out"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "img" / "trust.json").read_text())["lattice_reading"] == "vibrating"
    plain = UNet(UNetConfig(widths=(4, 8), n_classes=25)).eval()
    with pytest.raises(HrtemError, match="one kind of lattice"):
        fix_lattice(plain, "vibrating")
    with pytest.raises(HrtemError, match="lattice must be one of"):
        fix_lattice(net, "frozen")
