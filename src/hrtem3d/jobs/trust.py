"""How far to trust one file: the pixel size used and where it came from, the lattice check, the envelope check.

`assess_frame` runs once per file on its first frame (under a second for a 512 x 512 image). With
`--pixel-size lattice` the pixel size is measured from the CeO2 [110] lattice; otherwise the given or
file calibration is checked against it (a disagreement beyond 2 % is a warning), and the image is
checked against the model's envelope (out of it: a warning and column confidence capped).

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.lattice import lattice_image
    >>> t = assess_frame(lattice_image((256, 256), 0.1, rng=np.random.default_rng(0)), 0.11, source="file")
    >>> t.pixel_size_A, len(t.warnings) > 0
    (0.11, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.segmentation.envelope_check import (
    CONFIDENCE_CAP,
    EnvelopeCheck,
    cap_confidence,
    check_envelope,
    reconsider,
)
from hrtem3d.segmentation.lattice import LatticeCheck, LatticeFit, check_pixel_size, measure_lattice
from hrtem3d.segmentation.spectrum import image_spectrum

LATTICE = "lattice"


@dataclass
class Trust:
    """What `hrtem3d segment` reports about one file (written to `trust.json`).

    Attributes:
        pixel_size_A: the pixel size used (Å).
        source: "given" (by the caller), "file" (the file's calibration) or "lattice" (measured).
        file_pixel_size_A: the file's own calibration (Å), None when it has none.
        lattice: the stated pixel size against the lattice (None with --pixel-size lattice).
        measured: the lattice fit behind --pixel-size lattice (None otherwise).
        envelope: the out-of-envelope check.
        notes: the calibration's warnings (pixel size against the lattice, non-square pixels), one line each.
        name: the input's name, which starts the envelope's warning line.
    """

    pixel_size_A: float
    source: str
    file_pixel_size_A: float | None = None
    lattice: LatticeCheck | None = None
    measured: LatticeFit | None = None
    envelope: EnvelopeCheck | None = None
    notes: list[str] = field(default_factory=list)
    name: str = "image"

    @property
    def in_envelope(self) -> bool:
        return self.envelope is None or self.envelope.in_envelope

    @property
    def warnings(self) -> list[str]:
        """Every warning, one line each: the calibration's, then the envelope's (while out of it)."""
        return self.notes + ([] if self.in_envelope else [f"{self.name}: {self.envelope.warning}"])

    def to_dict(self) -> dict:
        return {"pixel_size_A": self.pixel_size_A, "pixel_size_source": self.source,
                "file_pixel_size_A": self.file_pixel_size_A, "in_envelope": self.in_envelope,
                "warnings": self.warnings,
                "lattice_check": self.lattice.to_dict() if self.lattice else None,
                "lattice_measured": self.measured.to_dict() if self.measured else None,
                "envelope": self.envelope.to_dict() if self.envelope else None}

    def reconsider(self, columns) -> Trust:
        """This verdict again, knowing the columns the model found in the same frame (Å coordinates):
        a frame warned only for a lattice too faint to see in its spectrum, whose Ce columns sit on the
        CeO2 [110] lattice, is taken back into the envelope, and a frame whose Ce columns read far thinner
        than a particle of their number holds is put out of it (`segmentation.envelope_check.reconsider`)."""
        if self.envelope is not None:
            self.envelope = reconsider(self.envelope, columns)
        return self

    def cap(self, columns, confidence: np.ndarray):
        """The column table and confidence map with confidence capped when out of the envelope."""
        if self.in_envelope:
            return columns, confidence
        return cap_confidence(columns, self.envelope), np.minimum(confidence, np.float32(CONFIDENCE_CAP))


def parse_pixel_size(value: str | float | None) -> float | str | None:
    """A pixel-size argument: None, "lattice", or a positive number of Å (one-line error otherwise)."""
    if value is None or isinstance(value, float | int):
        return value
    if value.strip().lower() == LATTICE:
        return LATTICE
    try:
        return float(value)
    except ValueError:
        raise HrtemError(f"`pixel_size_A` must be a number of Å per pixel or 'lattice', got {value!r}",
                         param="pixel_size_A") from None


def assess_frame(frame: np.ndarray, pixel_size_A: float | None, source: str, name: str = "image",
                 file_pixel_size_A: float | None = None) -> Trust:
    """Decide the pixel size (Å) and check `frame` `[y, x]`; `source` "lattice" measures it, else checks it."""
    frame = np.asarray(frame, np.float32)
    spec = image_spectrum(frame)  # one power spectrum for every lattice fitted below
    warnings: list[str] = []
    if source == LATTICE:
        fit = measure_lattice(frame, spectrum=spec)
        if not fit.confident:
            raise HrtemError(f"{name}: no CeO2 [110] lattice clear enough to measure the pixel size "
                             f"({fit.n_reflections} spots); give `pixel_size_A` in Å", param="pixel_size_A")
        px = fit.pixel_size_A
        if abs(fit.pixel_size_x_A / fit.pixel_size_y_A - 1) > 0.02:
            warnings.append(f"{name}: pixels look non-square ({fit.pixel_size_x_A:.4g} Å along x, "
                            f"{fit.pixel_size_y_A:.4g} Å along y); their mean {px:.4g} Å is used")
        lat = check_pixel_size(frame, px, spectrum=spec)
        env = check_envelope(frame, px, lattice=lat, spectrum=spec)
        t = Trust(float(px), LATTICE, file_pixel_size_A, None, fit, env, warnings, name)
    else:
        lat = check_pixel_size(frame, pixel_size_A, spectrum=spec)
        if lat.disagrees:
            warnings.append(f"{name}: {lat.message}")
        env = check_envelope(frame, pixel_size_A, lattice=lat, spectrum=spec)
        t = Trust(float(pixel_size_A), source, file_pixel_size_A, lat, None, env, warnings, name)
    return t


def lattice_record(reading: str | None, p_vibrating: float | None) -> dict:
    """What trust.json says of the lattice reading: the reading used, and the gate's p(vibrating) when it chose."""
    out = {"lattice_reading": reading} if reading else {}
    if p_vibrating is not None:
        out["p_vibrating"] = round(float(p_vibrating), 3)
    return out
