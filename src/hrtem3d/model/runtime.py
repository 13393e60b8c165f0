"""Run a network for inference: ONNX Runtime on the CPU, PyTorch on CUDA or the CPU.

`make_engine(net)` returns an `Engine`: a function from a batch of working images `[N, 1, H, W]`
(float32 torch tensor, any H and W) to class logits `[N, C, H, W]` (float32, contiguous, on the CPU).
Backends (measured in docs/benchmarks.md, "Inference backends"):

- ``"onnx"``: the U-Net exported once to ONNX (cached on disk by the weights' hash) and run by ONNX
  Runtime, BatchNorm, ReLU and convolutions fused: about 0.55x PyTorch eager's time on 2 CPU cores,
  logits equal to 1e-5.
- ``"torch"``: PyTorch eager, BatchNorm folded into the convolutions, channels_last, float32;
  ``half=True`` runs it under float16 autocast (opt-in: emulated on the CPU, float16 changed 9 to 12 %
  of the shipped model's depths, so it is not the default until measured on a GPU).
- ``"int8"``: the ONNX graph with int8 weights and activations (ONNX Runtime static quantisation,
  per-channel weights, activation ranges from `calibration` working images). Opt-in: see the
  benchmark for its accuracy cost.
- ``"auto"`` (default): ``"torch"`` on CUDA, ``"onnx"`` on the CPU for a `UNet`, ``"torch"`` for
  any other network.

>>> import torch
>>> from hrtem3d.model.unet import UNet, UNetConfig
>>> net = UNet(UNetConfig(widths=(4, 8), n_classes=3)).eval()
>>> run = make_engine(net, backend="onnx")
>>> x = torch.randn(2, 1, 30, 44)
>>> run.backend, tuple(run(x).shape)
('onnx', (2, 3, 30, 44))
>>> bool(torch.allclose(run(x), net(x), atol=1e-4))
True
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hrtem3d.errors import HrtemError
from hrtem3d.model.unet import UNet, fold_batchnorm, pad_to_multiple

BACKENDS = ("auto", "onnx", "torch", "int8")


@dataclass
class Engine:
    """A network ready to run. `backend` names what runs ("onnx", "int8", "torch", "torch-cuda-fp16"...)."""

    backend: str
    run: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def make_engine(net: nn.Module, *, backend: str = "auto", device: torch.device | str = "cpu",
                threads: int | None = None, half: bool = False, compile: bool = False,
                calibration: Sequence[np.ndarray] | None = None) -> Engine:
    """The fastest faithful way to run `net` (an eval-mode network giving logits) on `device`.

    Args:
        net: a `UNet` (every backend) or any module mapping `[N, 1, H, W]` to `[N, C, H, W]` ("torch").
        backend: "auto", "onnx", "torch" or "int8" (see the module docstring).
        device: where "torch" runs; ONNX backends always run on the CPU.
        threads: CPU threads (None: torch's current setting).
        half: float16 autocast for "torch" (off by default, see above).
        compile: "torch" through `torch.compile` (a compile per new input size).
        calibration: working images `[H, W]` (normalised, at the model's pixel size) whose activation
            ranges set the int8 scales; needed for "int8".
    """
    if backend not in BACKENDS:
        raise HrtemError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}", param="backend")
    device = torch.device(device)
    is_unet = isinstance(net, UNet)
    if backend == "auto":
        backend = "onnx" if device.type == "cpu" and is_unet and not compile else "torch"
    if backend in ("onnx", "int8"):
        if not is_unet:
            raise HrtemError(f"the {backend} backend runs hrtem3d's U-Net only; use backend 'torch' for "
                             f"a {type(net).__name__}", param="backend")
        if backend == "int8" and not calibration:
            raise HrtemError("the int8 backend needs calibration images (working images of the kind "
                             "to be segmented)", param="backend")
        return _onnx_engine(net, threads=threads, calibration=calibration if backend == "int8" else None)
    return _torch_engine(net, device=device, half=half, compile=compile)


def _torch_engine(net: nn.Module, *, device: torch.device, half: bool, compile: bool) -> Engine:
    model = fold_batchnorm(net) if isinstance(net, UNet) else net
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    runner = torch.compile(model, dynamic=False) if compile else model
    dtype = torch.float16 if half else None

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=half):
            y = runner(x)
        return y.float().contiguous().cpu()

    name = "torch" if device.type == "cpu" else f"torch-{device.type}"
    return Engine(name + ("-fp16" if half else ""), run)


def _onnx_engine(net: UNet, *, threads: int | None, calibration: Sequence[np.ndarray] | None) -> Engine:
    import onnxruntime as ort

    graph = onnx_graph(net)
    if calibration is not None:
        graph = _quantize(graph, calibration, net.config.multiple)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    # no busy-waiting of its threads after a run: on 2 cores they would take the CPU from what follows
    # (softmax, column finding, drift); `track` segmented 13 % faster without it (docs/benchmarks.md)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    m = net.config.multiple

    def run(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x.detach().float().cpu(), m).contiguous().numpy()
        y = session.run(None, {"x": xp})[0]
        return torch.from_numpy(np.ascontiguousarray(y[..., :h, :w]))

    return Engine("int8" if calibration is not None else "onnx", run)


class _Body(nn.Module):
    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.body(x)


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$HRTEM3D_CACHE``, else ``$XDG_CACHE_HOME/hrtem3d`` (``~/.cache``)."""
    if os.environ.get("HRTEM3D_CACHE"):
        return Path(os.environ["HRTEM3D_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hrtem3d"


def weights_hash(net: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the network's architecture, weights and buffers, and the torch version."""
    h = hashlib.sha256(torch.__version__.encode())
    h.update(repr(getattr(net, "config", type(net).__name__)).encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_GRAPHS: dict[str, bytes] = {}


def onnx_graph(net: UNet) -> bytes:
    """The network's ONNX graph (any batch, any sides that are multiples of ``config.multiple``), exported
    once per set of weights: kept in memory and in `cache_dir()` (written to a temporary name, then renamed;
    a damaged cache file is exported again; an unwritable cache only costs the export, about a second)."""
    key = weights_hash(net)
    if key in _GRAPHS:
        return _GRAPHS[key]
    path = cache_dir() / f"unet-{key}.onnx"
    graph = _read_valid(path)
    if graph is None:  # not cached, or a damaged file: export (again)
        graph = _export(net)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(graph)
            os.replace(tmp, path)
        except OSError:
            pass
    _GRAPHS[key] = graph
    return graph


def _read_valid(path: Path) -> bytes | None:
    """The cached graph at `path` if it reads and passes the ONNX checker, else None."""
    import onnx

    try:
        graph = path.read_bytes()
        onnx.checker.check_model(onnx.load_model_from_string(graph))
    except Exception:  # missing, unreadable, truncated or not ONNX at all
        return None
    return graph


def forget_graph(net: UNet) -> None:
    """Drop the network's exported graph from memory and from `cache_dir()` (the next use exports again)."""
    key = weights_hash(net)
    _GRAPHS.pop(key, None)
    (cache_dir() / f"unet-{key}.onnx").unlink(missing_ok=True)


def _export(net: UNet) -> bytes:
    body = _Body(fold_batchnorm(net)).eval()
    m = net.config.multiple
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice; its graph is what we need
        warnings.simplefilter("ignore")
        torch.onnx.export(body, (torch.zeros(1, net.config.in_channels, 2 * m, 2 * m),), buf, dynamo=False,
                          input_names=["x"], output_names=["y"], opset_version=17,
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    return buf.getvalue()


def _quantize(graph: bytes, calibration: Sequence[np.ndarray], multiple: int) -> bytes:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations) of an ONNX graph."""
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    batches = [pad_to_multiple(torch.from_numpy(np.asarray(c, np.float32))[None, None], multiple).numpy()
               for c in calibration]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            b = next(self.it, None)
            return None if b is None else {"x": b}

    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "f32.onnx", Path(d) / "int8.onnx"
        src.write_bytes(graph)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process goes to the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        return dst.read_bytes()
