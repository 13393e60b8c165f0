"""What a microscope file holds, before it is accepted as an image: signals, their axes, the calibration.

Internal to :mod:`hrtem3d.io`: the format readers (:mod:`hrtem3d.io.formats`) turn what a library gives
into :class:`Signal`; :func:`hrtem3d.io.open_image` asks :func:`what_it_holds` whether a signal is a
real-space image and reads its pixel size (Å) with :func:`pixel_calibration`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.io.checks import (
    is_angle,
    is_energy,
    is_reciprocal,
    is_time,
    is_unitless,
    length_to_A,
    one_line,
    time_to_s,
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence library warnings and log lines while reading: problems surface as HrtemError."""
    loggers = [logging.getLogger(name) for name in ("tifffile", "rsciio", "h5py")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def materialise(block: Any) -> np.ndarray:
    """A lazy block (dask, zarr, memmap slice) as a numpy array, computed in this thread."""
    if hasattr(block, "compute"):
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def read_block(path: Path, arr: Any, first: int, last: int) -> np.ndarray:
    """Frames ``first..last-1`` of ``arr`` as float32 ``[k, ny, nx]``; a library failure becomes HrtemError."""
    try:
        with quiet():
            block = materialise(arr[first:last])
        if block.ndim == 2:
            block = block[None]
        return np.array(block, dtype=np.float32, order="C")
    except HrtemError:
        raise
    except Exception as exc:  # any library failure on bad bytes
        raise HrtemError(
            f"{path.name}: could not read frames {first}..{last - 1} ({one_line(exc)}): the file is "
            "truncated or corrupted; copy or export it again"
        ) from exc


# --------------------------------------------------------------------------------------------
# Signals as the library readers give them
# --------------------------------------------------------------------------------------------


@dataclass
class Signal:
    """One dataset found in a file, before it is accepted as an image or refused."""

    data: Any  # lazy array-like: dask, zarr, memmap; only .shape, .dtype and slicing are used
    axes: list[dict]
    title: str
    signal_type: str = ""
    data_file: Path | None = None  # file that holds the pixels (TIA: the .ser)
    compressed: bool = False
    available_bytes: int | None = None  # room for pixel data in data_file (default: its size)
    data_end: int | None = None  # byte just past the last pixel byte, where the format says (TIFF)


def title_of(sig: dict) -> str:
    """A signal's title (rosettasciio metadata ``General.title`` or the original file name), or ''."""
    md = sig.get("metadata") or {}
    general = md.get("General", {}) if isinstance(md, dict) else {}
    title = general.get("title") or general.get("original_filename") or ""
    return str(title)


def signal_type_of(sig: dict) -> str:
    """A signal's ``Signal.signal_type`` from rosettasciio metadata (e.g. 'EELS'), or ''."""
    md = sig.get("metadata") or {}
    signal = md.get("Signal", {}) if isinstance(md, dict) else {}
    return str(signal.get("signal_type") or "")


def axes_for(shape: tuple[int, ...], axes: list[dict] | None) -> list[dict]:
    """Axes aligned with the array dimensions; navigation flags default to all but the last two."""
    ndim = len(shape)
    if not axes or len(axes) != ndim:
        return [
            {"size": s, "scale": 1.0, "units": None, "navigate": i < ndim - 2} for i, s in enumerate(shape)
        ]
    return list(axes)


def _describe_unit(units: list[object]) -> str:
    for u in units:
        if u not in (None, ""):
            return str(u)
    return "no unit"


def what_it_holds(sig: Signal) -> str | None:
    """``None`` when the signal is a real-space 2D image or a stack of them, else what it is."""
    dtype = np.dtype(sig.data.dtype)
    shape = tuple(int(s) for s in sig.data.shape)
    ndim = len(shape)
    label = f"{sig.signal_type} " if sig.signal_type else ""
    title = sig.title.lower()
    if dtype.names:
        return "a colour (RGB) image"
    if dtype.kind == "c":
        return f"complex-valued data ({dtype}), such as an FFT or a DPC vector image"
    if dtype.kind not in "biuf":
        return f"data of type {dtype}, not pixel intensities"
    if ndim == 0:
        return "a single number"
    axes = axes_for(shape, sig.axes)
    sig_axes = [a for a in axes if not a.get("navigate")]
    if not sig_axes:
        sig_axes = axes[-2:]
    units = [a.get("units") for a in sig_axes]
    if ndim == 1 or len(sig_axes) == 1 or any(is_energy(u) for u in units):
        n_channels = shape[-1]
        unit = next((str(u) for u in units if is_energy(u)), _describe_unit(units))
        positions = math.prod(shape[:-1]) if ndim > 1 else 1
        spectral = any(is_energy(u) for u in units) or any(
            key in sig.signal_type.upper() for key in ("EELS", "EDS", "EDX", "SPECTRUM")
        )
        if positions > 1:
            return (
                f"{label}spectra ({positions} positions x {n_channels} channels in {unit}), a spectrum "
                "image or line scan"
            )
        if spectral:
            return f"a 1D {label}spectrum ({n_channels} channels in {unit})"
        return f"1D data ({n_channels} values), a spectrum or a line profile"
    reciprocal = any(is_reciprocal(u) or is_angle(u) for u in units)
    if reciprocal or "diffraction" in sig.signal_type.lower() or "diffraction" in title:
        unit = _describe_unit(units)
        if "fft" in title:
            return f"an FFT (reciprocal space, axes in {unit})"
        return f"a diffraction pattern (reciprocal space, axes in {unit})"
    if any(is_time(u) for u in units):
        return f"a time-resolved signal (axes in {_describe_unit(units)})"
    if len(sig_axes) == 2 and ndim <= 3:
        return None
    if len(sig_axes) == 3 and ndim == 3:
        return None  # a volume is read as a stack of slices
    if len(sig_axes) == 2:
        scan = " x ".join(str(s) for s in shape[:-2])
        return (
            f"a {ndim}D dataset ({scan} scan positions or planes of {shape[-2]} x {shape[-1]} images, "
            "as in 4D-STEM or a hyperstack)"
        )
    return f"a {ndim}D dataset with {len(sig_axes)} signal axes"


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """A file's pixel size in Å, or None with the reason why not (and a warning, e.g. non-square pixels)."""
    pixel_size_A: float | None  # None when the file has no usable calibration
    problem: str  # why not, for the error message
    warning: str = ""


def _axis_length_A(axis: dict) -> tuple[float | None, str]:
    units = axis.get("units")
    try:
        scale = float(axis.get("scale", 1.0))
    except (TypeError, ValueError):
        scale = float("nan")
    if is_unitless(units):
        return None, "has no spatial calibration (pixel axes without a unit)"
    value = length_to_A(scale, units)
    if value is None:
        return None, f"has pixel axes in '{units}', which is not a length unit"
    if not math.isfinite(value) or value <= 0:
        return None, (
            f"has an invalid calibration of {scale:g} {units} per pixel (a zero or negative cell size "
            "means 'not calibrated')"
        )
    return value, ""


def pixel_calibration(y_axis: dict, x_axis: dict) -> Calibration:
    """The pixel size in Å from the image's two axes (the x axis; a warning when y differs by > 1 %)."""
    x_A, x_problem = _axis_length_A(x_axis)
    y_A, _ = _axis_length_A(y_axis)
    if x_A is None:
        return Calibration(None, x_problem)
    warning = ""
    if y_A is not None and abs(y_A - x_A) > 0.01 * x_A:
        warning = (
            f"pixels are not square (x {x_A:.6g} Å, y {y_A:.6g} Å per pixel); using the x pixel size"
        )
    return Calibration(x_A, "", warning)


def frame_interval(axis: dict) -> float | None:
    """Time between frames in s from a stack's frame axis, or None when it has no time unit."""
    try:
        scale = float(axis.get("scale", float("nan")))
    except (TypeError, ValueError):
        return None
    value = time_to_s(scale, axis.get("units"))
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


