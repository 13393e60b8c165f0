"""A real microscope's lost lattice contrast, put back before counting: a gain on the relative contrast.

Two witnesses of the lost contrast, asked in turn by `--contrast-gain auto`: the shipped contrast gate
(`ContrastRead`, a network that reads g from the whole working image: the outline, the edge columns, the
Fresnel fringes and the noise together; docs/model.md, "The contrast gate"), and, where it does not raise
the gain, the particle's counts against its size (`estimate_gain`, below).

Experimental HRTEM images carry 2 to 3 times less lattice contrast than simulations (the Stobbs
factor: thermal diffuse and inelastic scattering, detector MTF, vibration), and a network that reads a
column's thickness from its contrast then reads every column thinner. One image cannot tell a thinner
particle from a lower contrast scale by its contrast alone (a diffuse background lowers the contrast
and leaves the shot noise as it was), but the particle's own shape can: the atoms a convex particle's
columns hold are a steady share of its projected width (`count_size_ratio`: 0.71 ± 0.08 over the
training particles). Multiplying the normalised image by a gain g >= 1 restores the contrast scale; the
noise grows by g with it, as at a dose g² lower, which the network and its confidence map know.

`estimate_gain` raises g from 1 only when the counts at gain 1 read thinner than any training particle
(`GAIN_TRIGGER`, the count check's `THIN_LIMIT`: where `segment` would otherwise warn that the image is
out of the envelope), and then to where they read like a typical one (`GAIN_TARGET`, the training
particles' mean), stepping up and interpolating; a gain below 1 (more contrast than the simulation) is
never taken. The trigger is that strict, and the result only an estimate, because one particle's ratio
is a weak witness: real shapes scatter by ±12 %, as much as the contrast a background takes away, so a
particle flatter than typical is counted too thick once the gain is raised (docs/benchmarks.md, "Twelfth
look"). A user who knows their microscope's contrast loss gives it as a number instead.

Example:
    >>> ratio = lambda g: 0.35 * g  # counts that grow with the gain, as a network's do
    >>> round(estimate_gain(ratio), 2)
    2.0
    >>> estimate_gain(lambda g: 0.55 * g)  # plausible at gain 1: left alone
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hrtem3d.segmentation.envelope_check import THIN_LIMIT, TYPICAL_RATIO

GAIN_TRIGGER = THIN_LIMIT  # count_size_ratio below which the contrast scale is raised (below every training particle)
GAIN_TARGET = TYPICAL_RATIO  # count_size_ratio raised to: the training particles' mean
# Confidence of a count made at an estimated gain is at most this: the ratio's ±12 % scatter between shapes
# is ±0.6 atoms on a 5-atom column, which lands on the right integer about half the time.
GAIN_CONFIDENCE_CAP = 0.5
GAIN_STEPS = (1.5, 2.0, 2.5, 3.0)  # gains tried in turn; 3 is the largest Stobbs factor reported


def estimate_gain(ratio_at: Callable[[float], float], *, trigger: float = GAIN_TRIGGER,
                  target: float = GAIN_TARGET, steps: tuple[float, ...] = GAIN_STEPS, start: float = 1.0) -> float:
    """The contrast gain (>= `start`) at which a particle's counts read like a typical training particle's.

    Args:
        ratio_at: `count_size_ratio` of the image segmented at a given gain (NaN when too few columns
            to judge: the gain then stays where it is).
        trigger: below this ratio at gain `start` the gain is raised; at or above it (or NaN) `start` is
            returned and `ratio_at` is called once.
        target: the ratio to reach; the gain is interpolated linearly between the two steps around it.
        steps: gains tried in increasing order (those above `start`); the last is returned when even it
            reads too thin.
        start: the gain to begin from: 1, or the contrast gate's reading (`ContrastRead`), which the
            particle's counts then only raise further, never lower.
    """
    g0, r0 = float(start), ratio_at(float(start))
    if not r0 < trigger:
        return g0
    for g in (s for s in steps if s > start):
        r = ratio_at(g)
        if not np.isfinite(r):
            return g0
        if r >= target:
            return float(g0 + (g - g0) * (target - r0) / (r - r0)) if r > r0 else float(g)
        g0, r0 = g, r
    return float(g0)


#: the range log sigma (the spread of log g the contrast gate gives) is held to, in training and in reading
LOG_SIGMA_RANGE = (-4.0, 2.0)

#: the contrast gate reads at most this many working pixels a side (51 Å at 0.16 Å: the training fields'
#: size, and every image of the benchmarks), the window with the most contrast in a larger frame
GATE_WINDOW_PX = 320


def busiest_window(x: torch.Tensor, size: int) -> torch.Tensor:
    """The `size` x `size` window (or the whole axis, where shorter) of ``[1, 1, H, W]`` `x` that holds the most
    variance about the image's mean: the particle, in a frame that is mostly vacuum or film. Positions on a
    16-pixel grid, so the window keeps whole pooling cells.

    >>> x = torch.zeros(1, 1, 640, 640); x[..., 400:480, 40:120] = 1
    >>> w = busiest_window(x, 320); w.shape, float(w.sum())
    (torch.Size([1, 1, 320, 320]), 6400.0)
    """
    h, w = x.shape[-2:]
    if h <= size and w <= size:
        return x
    e = (x[0, 0] - x.mean()) ** 2
    sy, sx = min(size, h), min(size, w)
    box = torch.nn.functional.avg_pool2d(e[None, None], (sy, sx), stride=16)[0, 0]  # mean energy per window
    iy, ix = divmod(int(torch.argmax(box)), box.shape[1])
    return x[..., iy * 16:iy * 16 + sy, ix * 16:ix * 16 + sx]


@dataclass
class ContrastRead:
    """The contrast gate and its threshold: `read(image, pixel_size_A)` gives the factor g by which the image's
    lattice contrast is below the simulation's, with its spread; `decide` says whether to act on it.

    Attributes:
        gate: a two-output gate (`hrtem3d.model.gate`: mean and log spread of log g); pixel_size_A: its working
        grid (Å); normalization: its input scheme; threshold: the lower bound exp(mu - sigma) of g above which
        the gain is taken (stored in the gate file: a high percentile of the gate on training images at full
        contrast, so that ideal images are left alone); confidence_map: the gates' confidence map fitted for
        the shipped readers (`segmentation.confidence.apply_gates_map`), None where the file has none.
    """

    gate: torch.nn.Module
    pixel_size_A: float
    normalization: str
    threshold: float
    confidence_map: dict | None = None

    @classmethod
    def shipped(cls, device: str | torch.device | None = None) -> ContrastRead:
        from hrtem3d.model.gate import default_gate_path

        return cls.from_file(default_gate_path("contrast"), device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device | None = None) -> ContrastRead:
        from hrtem3d.model.gate import load_gate

        gate, meta = load_gate(path, device)
        if gate.outputs != 2:
            raise ValueError(f"{path} is a gate with {gate.outputs} output(s); a contrast gate has two")
        return cls(gate, float(meta["pixel_size_A"]), str(meta["normalization"]), float(meta["threshold"]),
                   meta.get("confidence_map"))

    @torch.inference_mode()
    def read(self, image: np.ndarray, pixel_size_A: float, contrast_sign: float = 1.0) -> tuple[float, float]:
        """(g, sigma): the gate's estimate of the contrast loss of an image as recorded (`[y, x]`,
        `pixel_size_A` Å) and the spread of log g."""
        from hrtem3d.model.gate import gate_input

        x = gate_input(image, pixel_size_A, gate_pixel_A=self.pixel_size_A, normalization=self.normalization,
                       contrast_sign=contrast_sign)
        out = self.gate(busiest_window(x, GATE_WINDOW_PX).to(next(self.gate.parameters()).device))[0]
        return float(np.exp(float(out[0]))), float(np.exp(float(out[1].clamp(*LOG_SIGMA_RANGE))))

    def decide(self, g: float, sigma: float) -> float | None:
        """The gain to take from a reading `(g, sigma)`: g when its lower bound exp(log g - sigma) exceeds the
        threshold, else None (the gate cannot tell the contrast from the simulation's)."""
        return g if g * np.exp(-sigma) > self.threshold else None


def cap_at_estimated_gain(columns: pd.DataFrame) -> pd.DataFrame:
    """The column table with its confidence capped at `GAIN_CONFIDENCE_CAP`: counts made at an estimated gain."""
    if not len(columns):
        return columns
    return columns.assign(confidence=np.minimum(columns["confidence"].to_numpy(float), GAIN_CONFIDENCE_CAP))


def estimated_gain_warning(name: str, gain: float, counted: str = "they were") -> str:
    """The one-line warning for an input whose gain "auto" raised: what happened and what to give instead."""
    return (f"{name}: its lattice contrast reads {gain:.2f} x lower than the simulation's (a diffuse background, "
            f"the Stobbs factor), so {counted} counted at that gain, confidence capped at {GAIN_CONFIDENCE_CAP}; "
            "give --contrast-gain with your microscope's contrast loss to fix it")


def parse_gain(value: str | float | None) -> float | str:
    """`--contrast-gain` as given: "auto", or a number >= 1 (the factor by which the image's lattice
    contrast is below the simulation's); raises ValueError otherwise."""
    if value is None or str(value).strip().lower() == "auto":
        return "auto"
    g = float(value)
    if not 1.0 <= g <= 10.0:
        raise ValueError(f"contrast gain must be 'auto' or a number from 1 to 10, got {value}")
    return g
