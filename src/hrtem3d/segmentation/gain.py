"""A real microscope's lost lattice contrast, put back before counting: a gain on the relative contrast.

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

import numpy as np
import pandas as pd

from hrtem3d.segmentation.envelope_check import THIN_LIMIT, TYPICAL_RATIO

GAIN_TRIGGER = THIN_LIMIT  # count_size_ratio below which the contrast scale is raised (below every training particle)
GAIN_TARGET = TYPICAL_RATIO  # count_size_ratio raised to: the training particles' mean
# Confidence of a count made at an estimated gain is at most this: the ratio's ±12 % scatter between shapes
# is ±0.6 atoms on a 5-atom column, which lands on the right integer about half the time.
GAIN_CONFIDENCE_CAP = 0.5
GAIN_STEPS = (1.5, 2.0, 2.5, 3.0)  # gains tried in turn; 3 is the largest Stobbs factor reported


def estimate_gain(ratio_at: Callable[[float], float], *, trigger: float = GAIN_TRIGGER,
                  target: float = GAIN_TARGET, steps: tuple[float, ...] = GAIN_STEPS) -> float:
    """The contrast gain (>= 1) at which a particle's counts read like a typical training particle's.

    Args:
        ratio_at: `count_size_ratio` of the image segmented at a given gain (NaN when too few columns
            to judge: the gain then stays where it is).
        trigger: below this ratio at gain 1 the gain is raised; at or above it (or NaN) 1 is returned
            and `ratio_at` is called once.
        target: the ratio to reach; the gain is interpolated linearly between the two steps around it.
        steps: gains tried in increasing order; the last is returned when even it reads too thin.
    """
    g0, r0 = 1.0, ratio_at(1.0)
    if not r0 < trigger:
        return 1.0
    for g in steps:
        r = ratio_at(g)
        if not np.isfinite(r):
            return g0
        if r >= target:
            return float(g0 + (g - g0) * (target - r0) / (r - r0)) if r > r0 else float(g)
        g0, r0 = g, r
    return float(g0)


def cap_at_estimated_gain(columns: pd.DataFrame) -> pd.DataFrame:
    """The column table with its confidence capped at `GAIN_CONFIDENCE_CAP`: counts made at an estimated gain."""
    if not len(columns):
        return columns
    return columns.assign(confidence=np.minimum(columns["confidence"].to_numpy(float), GAIN_CONFIDENCE_CAP))


def estimated_gain_warning(name: str, gain: float, counted: str = "they were") -> str:
    """The one-line warning for an input whose gain "auto" raised: what happened and what to give instead."""
    return (f"{name}: its columns read far too thin for the particle's size at the simulation's contrast, so "
            f"{counted} counted at {gain:.2f} x the lattice contrast; give --contrast-gain with your microscope's "
            "contrast loss to fix it")


def parse_gain(value: str | float | None) -> float | str:
    """`--contrast-gain` as given: "auto", or a number >= 1 (the factor by which the image's lattice
    contrast is below the simulation's); raises ValueError otherwise."""
    if value is None or str(value).strip().lower() == "auto":
        return "auto"
    g = float(value)
    if not 1.0 <= g <= 10.0:
        raise ValueError(f"contrast gain must be 'auto' or a number from 1 to 10, got {value}")
    return g
