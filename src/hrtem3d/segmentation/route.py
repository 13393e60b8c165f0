"""Which reading an image needs, a static lattice or a vibrating one, told by the shipped vibration gate.

Thermal diffuse scattering (every real specimen at room temperature; frozen phonons in simulation) makes a
thick column look thinner: a counting network trained on static lattices reads it 0.5-1 atom low, one
trained on vibrating lattices reads a static one 0.4 atoms high, and neither network's own features tell
the two apart. The shipped pair answers it per input: the gate (`hrtem3d.model.gate`) gives p(vibrating) of
the whole working image (the same resampling and normalisation as the counting network's), and the image is
read by the static reader (the shipped model) or by the vibrating reader (`weights/vibrating.safetensors`)
when p(vibrating) exceeds the gate's threshold. One encoder pass more per input (a movie decides once).
`SHIPPED_READING` "auto" makes this the default of `segment` and `track` (docs/trust.md, "Static or vibrating").

>>> route = LatticeRoute.shipped()
>>> route.threshold
0.67
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrtem3d.model.gate import VibrationGate, default_gate_path, gate_input, load_gate

#: the readings of the shipped pair, and the one used when none is asked for
READINGS = ("static", "vibrating", "auto")
SHIPPED_READING = "auto"


def vibrating_model_path() -> Path:
    """The shipped vibrating reader: ``hrtem3d/weights/vibrating.safetensors`` (a model with lattice heads,
    read through its vibrating head)."""
    return Path(str(importlib.resources.files("hrtem3d") / "weights" / "vibrating.safetensors"))


@dataclass
class LatticeRoute:
    """The gate and its threshold: `reading(image, pixel_size_A)` says "static" or "vibrating".

    Attributes:
        gate: the classifier; pixel_size_A: its working grid (Å); normalization: its input scheme;
        threshold: p(vibrating) above which an image is read as vibrating (stored in the gate file:
        a high percentile of the gate on static training images, `benchmarks/lattice_route.py --set-threshold`).
    """

    gate: VibrationGate
    pixel_size_A: float
    normalization: str
    threshold: float

    @classmethod
    def shipped(cls, device: str | torch.device | None = None) -> LatticeRoute:
        return cls.from_file(default_gate_path(), device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device | None = None) -> LatticeRoute:
        gate, meta = load_gate(path, device)
        return cls(gate, float(meta["pixel_size_A"]), str(meta["normalization"]), float(meta["threshold"]))

    @torch.inference_mode()
    def p_vibrating(self, image: np.ndarray, pixel_size_A: float, contrast_sign: float = 1.0) -> float:
        """p(vibrating) of an image as recorded (`[y, x]`, `pixel_size_A` Å), through `segment`'s resampling
        and normalisation; `contrast_sign` -1 for an image with dark atoms."""
        x = gate_input(image, pixel_size_A, gate_pixel_A=self.pixel_size_A, normalization=self.normalization,
                       contrast_sign=contrast_sign)
        device = next(self.gate.parameters()).device
        return float(self.gate.p_vibrating(x.to(device))[0])

    def reading(self, p_vibrating: float) -> str:
        """"vibrating" above the threshold, else "static"."""
        return "vibrating" if p_vibrating > self.threshold else "static"
