"""Checks shared by the readers: units, pixel size, array sizes, finite values.

The header guards that run before a library reader are in :mod:`hrtem3d.io.headers`.

Everything here raises :class:`hrtem3d.errors.HrtemError` with a one-line message that says
what is wrong and what to do. Lengths are in Å, times in s.
"""

from __future__ import annotations

import math
import re

import numpy as np

from hrtem3d.errors import HrtemError

#: Accepted pixel sizes (Å per pixel) for a file's calibration or a given ``pixel_size_A``.
PIXEL_SIZE_RANGE_A: tuple[float, float] = (0.001, 100.0)
#: Default smallest image side (pixels) that the analysis accepts.
MIN_SIZE = 8
#: Largest image side (pixels) accepted from a header.
MAX_SIZE = 65536
#: Largest number of pixels in one frame accepted from a header.
MAX_FRAME_PIXELS = 2**31
#: Largest number of frames accepted from a header.
MAX_FRAMES = 2**31
#: How much larger than the file the declared pixel data of a compressed format may be.
MAX_COMPRESSION_RATIO = 1100

# Length units -> Å per unit. Keys are normalised by `normalise_unit`.
_LENGTH_A = {
    "m": 1e10, "meter": 1e10, "meters": 1e10, "metre": 1e10, "metres": 1e10,
    "cm": 1e8,
    "mm": 1e7,
    "um": 1e4, "micron": 1e4, "microns": 1e4, "micrometer": 1e4, "micrometers": 1e4,
    "micrometre": 1e4, "micrometres": 1e4,
    "nm": 10.0, "nanometer": 10.0, "nanometers": 10.0, "nanometre": 10.0, "nanometres": 10.0,
    "a": 1.0, "angstrom": 1.0, "angstroms": 1.0, "ang": 1.0,
    "pm": 0.01, "picometer": 0.01, "picometers": 0.01, "picometre": 0.01, "picometres": 0.01,
}
_TIME_S = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6, "ns": 1e-9,
    "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
_ENERGY = {"ev", "kev", "mev", "electronvolt", "electronvolts"}
_ANGLE = {"rad", "mrad", "urad", "deg", "degree", "degrees"}
_NO_UNIT = {"", "[]", "px", "pixel", "pixels", "<undefined>", "undefined", "none", "au", "a.u."}


def normalise_unit(unit: object) -> str:
    """Return a unit string in a canonical spelling: ``"µm"`` -> ``"um"``, ``"1 / nm"`` -> ``"1/nm"``.

    ``None`` becomes ``""``. Greek mu and the micro sign both become ``u``; the Ångström sign and
    ``Å`` become ``a``; case is folded, except that a lone ``"A"`` is read as Ångström.
    """
    if unit is None:
        return ""
    if isinstance(unit, bytes):
        unit = unit.decode("latin-1", "replace")
    text = str(unit).strip()
    text = text.replace("\\u00B5", "u").replace("\\u00b5", "u")  # ImageJ's escaped micro sign
    text = text.replace("\u00b5", "u").replace("\u03bc", "u")  # micro sign, Greek mu
    text = text.replace("\u212b", "a").replace("\u00c5", "a")  # Ångström sign, A-ring
    text = re.sub(r"\s+", "", text).lower()
    return text


def is_reciprocal(unit: object) -> bool:
    """True for reciprocal-space units such as ``1/nm``, ``1 / µm``, ``nm^-1``, ``1/m``."""
    u = normalise_unit(unit)
    return u.startswith("1/") or u.endswith("^-1") or u.endswith("-1") or u.endswith("\u207b\u00b9")


def is_energy(unit: object) -> bool:
    """True for energy units (spectral axes): eV, keV, ..."""
    return normalise_unit(unit) in _ENERGY


def is_angle(unit: object) -> bool:
    """True for angular units (diffraction-space axes): mrad, rad, deg."""
    return normalise_unit(unit) in _ANGLE


def is_time(unit: object) -> bool:
    """True for time units: s, ms, min, ..."""
    return normalise_unit(unit) in _TIME_S


def is_unitless(unit: object) -> bool:
    """True when an axis carries no physical unit (None, empty, ``[]``, ``px``)."""
    return normalise_unit(unit) in _NO_UNIT


def length_to_A(scale: float, unit: object) -> float | None:
    """Convert ``scale`` given in ``unit`` (m, mm, µm/um, nm, Å/A, pm, ...) to Å.

    Returns ``None`` when ``unit`` is not a length unit this module knows.
    """
    factor = _LENGTH_A.get(normalise_unit(unit))
    if factor is None:
        return None
    return float(scale) * factor


def time_to_s(scale: float, unit: object) -> float | None:
    """Convert a time step ``scale`` in ``unit`` (s, ms, us, min, h) to s; ``None`` if not a time unit."""
    factor = _TIME_S.get(normalise_unit(unit))
    if factor is None:
        return None
    return float(scale) * factor


def validate_pixel_size(
    value: object,
    *,
    what: str = "`pixel_size_A`",
    range_A: tuple[float, float] = PIXEL_SIZE_RANGE_A,
) -> float:
    """Check a pixel size in Å per pixel (for example a ``pixel_size_A`` argument) and return it as float.

    It must be a finite number within ``range_A`` (default 0.001..100 Å). Raises HrtemError otherwise
    (``param`` "pixel_size_A"); ``what`` names the value in the message.

    Example:
        >>> validate_pixel_size("0.1")
        0.1
    """
    lo, hi = range_A
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HrtemError(
            f"{what} {value!r} is not a number: give the pixel size in Å per pixel, e.g. 0.1",
            param="pixel_size_A",
        ) from None
    if not math.isfinite(number) or number <= 0 or not (lo <= number <= hi):
        raise HrtemError(
            f"{what} {value!r} Å is not a usable pixel size: give a value between {lo:g} and {hi:g} Å "
            f"per pixel, e.g. 0.1",
            param="pixel_size_A",
        )
    return number


def check_finite(frame: np.ndarray, index: int = 0, name: str = "") -> None:
    """Raise HrtemError if ``frame`` (any array) holds NaN or Inf; ``index`` is its frame number.

    Integer arrays are always finite and are not scanned.
    """
    arr = np.asarray(frame)
    if arr.dtype.kind not in "fc":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    where = f"{name}: " if name else ""
    raise HrtemError(
        f"{where}frame {index} holds {bad} NaN/Inf pixel value(s) out of {finite.size}: the data are "
        "damaged or were exported with invalid pixels; fix or drop that frame"
    )


def check_shape(
    name: str,
    shape: tuple[int, int, int],
    *,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> None:
    """Check a declared ``(n_frames, ny, nx)`` shape before any pixel is read."""
    n, ny, nx = (int(s) for s in shape)
    if n <= 0 or ny <= 0 or nx <= 0:
        raise HrtemError(f"{name} holds no pixels (shape {n} x {ny} x {nx}): the file is empty or corrupted")
    if ny > max_size or nx > max_size or ny * nx > max_frame_pixels or n > MAX_FRAMES:
        raise HrtemError(
            f"{name} declares {n} frame(s) of {ny} x {nx} pixels, beyond the limits ({max_size} pixels a "
            f"side, {max_frame_pixels} pixels a frame): the header is corrupted or this is not an image"
        )
    if ny < min_size or nx < min_size:
        raise HrtemError(
            f"{name} holds images of only {ny} x {nx} pixels; at least {min_size} x {min_size} are needed "
            "for analysis: give a larger image"
        )


def check_declared_bytes(name: str, declared: int, available: int, *, compressed: bool = False) -> None:
    """Refuse a header that declares more pixel data than the file can hold (truncated or corrupted)."""
    limit = available * (MAX_COMPRESSION_RATIO if compressed else 1)
    if declared > limit:
        raise HrtemError(
            f"{name} declares {declared} bytes of pixel data but the file holds only {available} bytes: "
            "it is truncated or corrupted; copy or export it again"
        )


def one_line(exc: BaseException, limit: int = 160) -> str:
    """A library exception as a short single line: ``TypeName: message``."""
    text = re.sub(r"\s+", " ", str(exc)).strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
