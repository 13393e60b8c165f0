"""Image gates: what one whole working image says about itself, from a U-Net encoder with attention pooling.

Two are shipped. The vibration gate (one output: the logit of p(vibrating)) and the contrast gate (two
outputs: the mean and log spread of log g, g the factor by which the image's lattice contrast is below the
simulation's; `hrtem3d.segmentation.gain`). Both are the same module, `VibrationGate(config, outputs=...)`.

A static lattice and a vibrating one (thermal diffuse scattering, as in every real specimen at room
temperature) need different readings of a thick column, and the counting network's own features do not tell
them apart. The gate is a classifier trained for that question alone: a U-Net encoder (its own weights),
softmax attention pooling over the bottleneck and a two-layer head giving one logit
(`benchmarks/tds_identifiability.py` trains it; docs/model.md, "Which lattice").

A gate file is a safetensors file whose string metadata is::

    {"format": "hrtem3d-gate", "format_version": "1", "hrtem3d": json.dumps(metadata)}

``metadata`` holds ``unet`` (the encoder's `UNetConfig`; the decoder is never stored), ``pixel_size_A``
(Å, the working grid), ``normalization``, ``outputs`` (1 when absent) and ``threshold`` (the vibration gate:
p(vibrating) above which an image is read as vibrating; the contrast gate: the lower bound of g above which
the contrast is put back), with the training record.

>>> import torch
>>> from hrtem3d.model.unet import UNetConfig
>>> g = VibrationGate(UNetConfig(widths=(4, 8), n_classes=3)).eval()
>>> p = g.p_vibrating(torch.zeros(1, 1, 32, 32))
>>> p.shape, bool(0 < float(p[0]) < 1)
(torch.Size([1]), True)
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hrtem3d.errors import HrtemError
from hrtem3d.fsutil import atomic_write
from hrtem3d.model.unet import UNet, UNetConfig, attention_pool, pad_to_multiple, pick_device

GATE_FORMAT = "hrtem3d-gate"
GATE_FORMAT_VERSION = 1
#: state-dict prefixes of the U-Net that the gate never runs (and never stores)
DECODER = ("unet.up_blocks.", "unet.ups.", "unet.head.", "unet.vibrating_head.", "unet.gate_attn.", "unet.gate.")


class VibrationGate(nn.Module):
    """A U-Net's encoder, attention pooling over its bottleneck, `outputs` numbers for a whole image (one: the
    logit of p(vibrating))."""

    def __init__(self, config: UNetConfig, outputs: int = 1) -> None:
        super().__init__()
        self.unet = UNet(UNetConfig.from_dict({**config.to_dict(), "lattice_heads": False}))  # encoder used only
        c = config.widths[-1]
        self.outputs = outputs
        self.pool = nn.Conv2d(c, 1, 1)
        nn.init.normal_(self.pool.weight, std=0.01)
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[N, outputs]`` of ``[N, 1, H, W]`` normalised working images (any size; padded to the
        pooling grid); ``[N]`` logits for a one-output gate."""
        x = pad_to_multiple(x, self.unet.config.multiple)
        out = self.head(attention_pool(self.unet.encode(x)[-1], self.pool))
        return out[:, 0] if self.outputs == 1 else out

    def p_vibrating(self, x: torch.Tensor) -> torch.Tensor:
        """p(vibrating) ``[N]`` of ``[N, 1, H, W]`` normalised working images."""
        return torch.sigmoid(self(x))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The tensors the gate uses (the U-Net's decoder left out): what a gate file holds."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith(DECODER)}


def save_gate(path: str | os.PathLike, gate: VibrationGate, metadata: dict) -> None:
    """Write a gate file (temporary name, then renamed); ``metadata`` needs ``pixel_size_A``,
    ``normalization`` and ``threshold``; ``unet`` is set here."""
    from safetensors.torch import save_file

    missing = [k for k in ("pixel_size_A", "normalization", "threshold") if k not in metadata]
    if missing:
        raise HrtemError(f"gate metadata lacks {', '.join(missing)}")
    full = {**metadata, "unet": gate.unet.config.to_dict(), "outputs": gate.outputs}
    header = {"format": GATE_FORMAT, "format_version": str(GATE_FORMAT_VERSION), "hrtem3d": json.dumps(full)}
    state = gate.encoder_state()
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))


def load_gate(path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[VibrationGate, dict]:
    """``(gate in eval mode, metadata)`` from a gate file; HrtemError for anything else."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    bad = f"{path} is not an hrtem3d vibration gate (a file written by `save_gate`)"
    if not path.is_file():
        raise HrtemError(f"gate file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
        raise HrtemError(f"{bad}: {str(e).splitlines()[0]}") from None
    if meta.get("format") != GATE_FORMAT or "hrtem3d" not in meta:
        raise HrtemError(bad)
    full = json.loads(meta["hrtem3d"])
    gate = VibrationGate(UNetConfig.from_dict(full["unet"]), outputs=int(full.get("outputs", 1)))
    missing, unexpected = gate.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(DECODER) for k in missing):
        raise HrtemError(f"{bad}: its weights do not fit its configuration")
    return gate.eval().to(pick_device(device)), full


def default_gate_path(kind: str = "vibration") -> Path:
    """A gate shipped with hrtem3d: ``hrtem3d/weights/{kind}_gate.safetensors`` ("vibration" or "contrast")."""
    import importlib.resources

    return Path(str(importlib.resources.files("hrtem3d") / "weights" / f"{kind}_gate.safetensors"))


def gate_input(image: np.ndarray, pixel_size_A: float, *, gate_pixel_A: float, normalization: str,
               contrast_sign: float = 1.0) -> torch.Tensor:
    """``[1, 1, H, W]`` input of a gate from an image as recorded (`[y, x]`, `pixel_size_A` Å): `segment`'s
    resampling to the gate's working grid (`gate_pixel_A`) and normalisation, cropped to whole pooling cells;
    `contrast_sign` -1 for an image with dark atoms."""
    from hrtem3d.data.normalize import normalizer
    from hrtem3d.data.resample import to_working_grid

    work, _ = to_working_grid(np.asarray(image, np.float32), pixel_size_A, gate_pixel_A)
    with warnings.catch_warnings():  # what normalising says of an input, the counting network's own pass says once
        warnings.simplefilter("ignore")
        work = contrast_sign * normalizer(normalization)(work)
    ny, nx = (s - s % 16 for s in work.shape)  # the encoder halves four times
    return torch.from_numpy(np.ascontiguousarray(work[:ny, :nx], np.float32))[None, None]
