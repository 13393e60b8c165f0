"""Is an image inside what the model can handle? A cheap check before trusting its counts.

The model was trained on CeO2 in [110] imaged in HRTEM at pixel sizes whose calibration is off by
a few per cent at most (`simulate.scope.ScopeEnvelope`: 3 % r.m.s.). An image is out of the
envelope when the power spectrum shows no CeO2 [110] reflection set near the stated pixel size
(another zone axis: [100] shows a square {200}/{220} pattern and [111] a hexagonal {220} one,
both without the odd reflections of [110]; another material such as gold, a = 4.08 Å, puts its
spots elsewhere; a bare support film or a STEM image of another crystal shows none), or when the
lattice is found but says the stated pixel size is off by more than `PIXEL_LIMIT` (8 %, beyond the
training's calibration spread). Then every column's confidence is capped at `CONFIDENCE_CAP` and a
one-line warning is given.

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.lattice import lattice_image
    >>> img = lattice_image((256, 256), 0.1, rng=np.random.default_rng(0))
    >>> check_envelope(img, 0.1).in_envelope, check_envelope(img, 0.125).in_envelope
    (True, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from hrtem3d.segmentation.lattice import TOLERANCE, LatticeCheck, check_pixel_size, measure_lattice
from hrtem3d.segmentation.spectrum import Spectrum, image_spectrum
from hrtem3d.structure.material import CERIA, GOLD, Material

PIXEL_LIMIT = 0.08      # a lattice this far (relative) from the stated pixel size is outside training
CONFIDENCE_CAP = 0.2    # column confidence on an out-of-envelope image is at most this
ALTERNATIVES = ((CERIA, (1, 0, 0)), (CERIA, (1, 1, 1)), (GOLD, (1, 1, 0)))
"""Patterns fitted beside CeO2 [110] at the stated pixel size; one that explains more spots wins."""


@dataclass
class EnvelopeCheck:
    """The verdict on one image.

    Attributes:
        in_envelope: False when the image looks unlike anything the model was trained on.
        reasons: why not, one short phrase each.
        lattice: the pixel-size check against the lattice (`segmentation.lattice.LatticeCheck`).
        pixel_size_A: the pixel size the check was made at (Å).
    """

    in_envelope: bool
    reasons: list[str] = field(default_factory=list)
    lattice: LatticeCheck | None = None
    pixel_size_A: float = float("nan")

    @property
    def warning(self) -> str:
        """One line for the user; empty inside the envelope."""
        if self.in_envelope:
            return ""
        return (f"out of the model's envelope ({'; '.join(self.reasons)}): counts are unreliable, "
                f"confidence capped at {CONFIDENCE_CAP:g}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lattice"] = self.lattice.to_dict() if self.lattice else None
        d["warning"] = self.warning
        return d


def check_envelope(image: np.ndarray, pixel_size_A: float, material: Material = CERIA,
                   lattice: LatticeCheck | None = None, *, spectrum: Spectrum | None = None) -> EnvelopeCheck:
    """Check `image` `[y, x]` at `pixel_size_A` (Å) against the envelope; `lattice` reuses a check already made.

    The image's power spectrum is computed once (or `spectrum`, the image's `image_spectrum`, is used) and
    shared by the CeO2 [110] fit and every rival pattern.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(3)
        >>> check_envelope(rng.normal(size=(256, 256)), 0.1).reasons
        ['no CeO2 [110] lattice near 0.1 Å/px']
    """
    spec = spectrum or image_spectrum(image)
    lat = lattice or check_pixel_size(image, pixel_size_A, material=material, spectrum=spec)
    zone = _zone(material.zone_axis)
    reasons = []
    own = 0.0
    if lat.fit.found:  # a CeO2 fit far from the stated pixel size loses a tie to a rival that is near it
        near = abs(pixel_size_A / lat.fit.pixel_size_A - 1) <= PIXEL_LIMIT
        own = lat.fit.score - (0.0 if near else 0.5)
    rival = _best_rival(image, spec, pixel_size_A, own, strict=lat.fit.confident)
    if rival:
        reasons.append(f"the lattice looks like {rival}, not {material.name} {zone}")
    else:
        f = lat.fit
        dev = max(pixel_size_A / f.pixel_size_x_A - 1, pixel_size_A / f.pixel_size_y_A - 1, key=abs) if f.found \
            else float("nan")
        if f.confident and abs(dev) > PIXEL_LIMIT:
            reasons.append(f"the lattice says the pixel size is {dev:+.0%} off")
        elif not abs(dev) <= PIXEL_LIMIT:  # none found, or a weak fit far from the stated size
            reasons.append(f"no {material.name} {zone} lattice near {pixel_size_A:.4g} Å/px")
    return EnvelopeCheck(not reasons, reasons, lat, float(pixel_size_A))


def _zone(z) -> str:
    return "[" + "".join(str(v) for v in z) + "]"


def _best_rival(image: np.ndarray, spec: Spectrum, pixel_size_A: float, own: float, strict: bool = True) -> str:
    """Name of the alternative pattern found near `pixel_size_A` whose `LatticeFit.score` beats `own`, or "".
    With `strict` (the CeO2 fit itself is clear) the rival must be clear too (`LatticeFit.confident`)."""
    best, name = own, ""
    for mat, zone in ALTERNATIVES:
        fit = measure_lattice(image, pixel_size_A, material=mat, zone=zone, search=PIXEL_LIMIT, spectrum=spec)
        if (fit.confident or (fit.found and not strict)) and fit.score > best:
            best, name = fit.score, f"{mat.name} {_zone(zone)}"
    return name


def cap_confidence(columns: pd.DataFrame, check: EnvelopeCheck) -> pd.DataFrame:
    """The column table with confidence capped at `CONFIDENCE_CAP` when `check` is out of the envelope."""
    if check.in_envelope or "confidence" not in columns:
        return columns
    return columns.assign(confidence=np.minimum(columns["confidence"].to_numpy(), CONFIDENCE_CAP))


__all__ = ["CONFIDENCE_CAP", "PIXEL_LIMIT", "TOLERANCE", "EnvelopeCheck", "cap_confidence", "check_envelope"]
