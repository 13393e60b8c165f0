"""Readers for microscope image files: one lazy :class:`ImageSource` per file.

Formats (by extension): Gatan ``.dm3``/``.dm4``, FEI TIA ``.ser``/``.emi``, ``.emd`` (Velox and
Berkeley/NCEM, Prismatic), ``.mrc``, ``.tif``/``.tiff`` (ImageJ, Gatan, FEI, TVIPS tags) and ``.npy``.
Pixels are read lazily, frame chunk by frame chunk; arrays are ``[frame, y, x]`` float32; the pixel
size is in Å per pixel. Every problem with the input becomes a one-line
:class:`hrtem3d.errors.HrtemError`.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.io import checks
from hrtem3d.io.checks import (
    MAX_FRAME_PIXELS,
    MAX_SIZE,
    MIN_SIZE,
    PIXEL_SIZE_RANGE_A,
    check_declared_bytes,
    check_finite,
    check_shape,
    is_angle,
    is_energy,
    is_reciprocal,
    is_time,
    is_unitless,
    length_to_A,
    one_line,
    time_to_s,
    validate_pixel_size,
)

__all__ = ["ImageSource", "open_image", "SUPPORTED_EXTENSIONS"]

#: File extension -> (reader key, format name shown to the user).
SUPPORTED_EXTENSIONS: dict[str, tuple[str, str]] = {
    ".dm3": ("dm", "Gatan DM3"),
    ".dm4": ("dm", "Gatan DM4"),
    ".ser": ("tia", "FEI TIA .ser"),
    ".emi": ("tia", "FEI TIA .emi"),
    ".emd": ("emd", "EMD"),
    ".mrc": ("mrc", "MRC"),
    ".tif": ("tiff", "TIFF"),
    ".tiff": ("tiff", "TIFF"),
    ".npy": ("npy", "NumPy .npy"),
}

#: Largest number of pixels :meth:`ImageSource.read_all` returns in one array (2 GiB of float32).
READ_ALL_MAX_PIXELS = 2**29

_OVERRIDE_HINT = "give `pixel_size_A` (Å per pixel)"


# --------------------------------------------------------------------------------------------
# The public result
# --------------------------------------------------------------------------------------------


@dataclass
class ImageSource:
    """A microscope image or movie opened for lazy reading.

    Attributes:
        path: the file given to :func:`open_image`.
        shape: ``(n_frames, ny, nx)``; a single image has ``n_frames == 1``.
        pixel_size_A: pixel size in Å per pixel (x axis when pixels are not square); ``None`` only when
            opened with ``require_pixel_size=False`` and the file has no usable calibration.
        frame_interval_s: time between frames in s, or ``None`` when the file does not say.
        dtype: data type of the pixels in the file (frames are always returned as float32).
        description: format and the signal chosen, e.g.
            ``"EMD (Velox): stack of 2 frames 'Ceta', 3 x 3 int16"``.
        pixel_size_from_file_A: the file's own calibration in Å (``None`` when absent or unusable);
            differs from ``pixel_size_A`` when the caller overrode it.
    """

    path: Path
    shape: tuple[int, ...]
    pixel_size_A: float | None
    frame_interval_s: float | None
    dtype: np.dtype
    description: str
    pixel_size_from_file_A: float | None = None
    _open: Callable[[], contextlib.AbstractContextManager[Any]] = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def n_frames(self) -> int:
        """Number of frames (1 for a single image)."""
        return int(self.shape[0])

    def frames(
        self, start: int = 0, stop: int | None = None, chunk: int = 16
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_frame_index, frames)`` with ``frames`` a float32 array ``[k, ny, nx]``, k <= chunk.

        Reads lazily: only ``chunk`` frames are in memory at a time (TIA files excepted: rosettasciio
        reads a .ser whole). Values are not checked here; call :func:`check_finite` on each frame.
        """
        n = self.n_frames
        stop = n if stop is None else stop
        if chunk < 1:
            raise HrtemError(f"chunk must be at least 1 frame, got {chunk}")
        if not (0 <= start <= n) or not (start <= stop <= n):
            raise HrtemError(
                f"{self.path.name}: frame range {start}..{stop} is outside the {n} frame(s) of the file; "
                f"choose frames between 0 and {n}"
            )
        if start == stop:
            return
        with self._open() as arr:
            for first in range(start, stop, chunk):
                last = min(first + chunk, stop)
                yield first, _read_block(self.path, arr, first, last)

    def read_all(self) -> np.ndarray:
        """Read every frame into one float32 array ``[n_frames, ny, nx]`` (small inputs only).

        Raises HrtemError when any pixel is NaN or Inf, or when the data would exceed
        ``READ_ALL_MAX_PIXELS`` pixels (use :meth:`frames` for long movies).
        """
        total = math.prod(int(s) for s in self.shape)
        if total > READ_ALL_MAX_PIXELS:
            raise HrtemError(
                f"{self.path.name} holds {total} pixels, too many to read at once: read it frame by frame"
            )
        out = np.empty(self.shape, dtype=np.float32)
        for first, block in self.frames():
            for k in range(block.shape[0]):
                check_finite(block[k], first + k, self.path.name)
            out[first : first + block.shape[0]] = block
        return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
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


def _materialise(block: Any) -> np.ndarray:
    if hasattr(block, "compute"):
        block = block.compute(scheduler="synchronous")
    return np.asarray(block)


def _read_block(path: Path, arr: Any, first: int, last: int) -> np.ndarray:
    try:
        with _quiet():
            block = _materialise(arr[first:last])
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
class _Signal:
    """One dataset found in a file, before it is accepted as an image or refused."""

    data: Any  # lazy array-like: dask, zarr, memmap; only .shape, .dtype and slicing are used
    axes: list[dict]
    title: str
    signal_type: str = ""
    data_file: Path | None = None  # file that holds the pixels (TIA: the .ser)
    compressed: bool = False
    available_bytes: int | None = None  # room for pixel data in data_file (default: its size)
    data_end: int | None = None  # byte just past the last pixel byte, where the format says (TIFF)


def _title_of(sig: dict) -> str:
    md = sig.get("metadata") or {}
    general = md.get("General", {}) if isinstance(md, dict) else {}
    title = general.get("title") or general.get("original_filename") or ""
    return str(title)


def _signal_type_of(sig: dict) -> str:
    md = sig.get("metadata") or {}
    signal = md.get("Signal", {}) if isinstance(md, dict) else {}
    return str(signal.get("signal_type") or "")


def _axes_for(shape: tuple[int, ...], axes: list[dict] | None) -> list[dict]:
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


def _what_it_holds(sig: _Signal) -> str | None:
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
    axes = _axes_for(shape, sig.axes)
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
class _Calibration:
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


def _calibrate(y_axis: dict, x_axis: dict) -> _Calibration:
    x_A, x_problem = _axis_length_A(x_axis)
    y_A, _ = _axis_length_A(y_axis)
    if x_A is None:
        return _Calibration(None, x_problem)
    warning = ""
    if y_A is not None and abs(y_A - x_A) > 0.01 * x_A:
        warning = (
            f"pixels are not square (x {x_A:.6g} Å, y {y_A:.6g} Å per pixel); using the x pixel size"
        )
    return _Calibration(x_A, "", warning)


def _frame_interval(axis: dict) -> float | None:
    try:
        scale = float(axis.get("scale", float("nan")))
    except (TypeError, ValueError):
        return None
    value = time_to_s(scale, axis.get("units"))
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return value


# --------------------------------------------------------------------------------------------
# Format readers: each returns a list of _Signal and a format label
# --------------------------------------------------------------------------------------------


def _rsciio_read(module: str, path: Path, **kwargs: Any) -> list[dict]:
    """Call ``rsciio.<module>.file_reader(path, lazy=True)``, turning any failure into HrtemError."""
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    try:
        with _quiet():
            result = reader(str(path), lazy=True, **kwargs)
    except HrtemError:
        raise
    except Exception as exc:
        raise HrtemError(
            f"{path.name} could not be read as {module} data ({one_line(exc)}): it is truncated, corrupted "
            "or not what its extension says; copy or export it again"
        ) from exc
    if not isinstance(result, list):
        result = [result]
    return result


def _signals_from_rsciio(result: list[dict], data_file: Path, *, compressed: bool = False) -> list[_Signal]:
    signals = []
    for sig in result:
        data = sig.get("data")
        if data is None or not hasattr(data, "shape") or not hasattr(data, "dtype"):
            continue
        tia_file = None
        if data_file.suffix.lower() in (".emi", ".ser"):
            md = sig.get("metadata") or {}
            name = md.get("General", {}).get("original_filename") if isinstance(md, dict) else None
            tia_file = data_file.parent / str(name) if name else None
        signals.append(
            _Signal(
                data=data,
                axes=list(sig.get("axes") or []),
                title=_title_of(sig),
                signal_type=_signal_type_of(sig),
                data_file=tia_file if tia_file is not None and tia_file.is_file() else data_file,
                compressed=compressed,
            )
        )
    return signals


def _read_dm(path: Path) -> tuple[list[_Signal], str]:
    checks.precheck_dm(path)
    return _signals_from_rsciio(_rsciio_read("digitalmicrograph", path), path), ""


def _read_mrc(path: Path) -> tuple[list[_Signal], str]:
    checks.precheck_mrc(path)
    return _signals_from_rsciio(_rsciio_read("mrc", path), path), ""


def _read_emd(path: Path) -> tuple[list[_Signal], str]:
    names, attrs = checks.precheck_hdf5(path)
    if "Data" in names and "Version" in names:
        flavour = "Velox"
    elif "version_major" in attrs:
        flavour = "Berkeley/NCEM"
    else:
        flavour = ""
    return _signals_from_rsciio(_rsciio_read("emd", path), path, compressed=True), flavour


_SER_NAME = re.compile(r"^(?P<stem>.*)_(?P<index>\d+)\.ser$", re.IGNORECASE)


def _tia_ser_files(emi: Path) -> list[Path]:
    # The same pattern rosettasciio uses to find the .ser files of an .emi.
    return sorted(emi.parent.glob(f"{glob.escape(emi.stem)}_[0-9].ser"))


def _read_tia(path: Path) -> tuple[list[_Signal], str]:
    if path.suffix.lower() == ".emi":
        sers = _tia_ser_files(path)
        if not sers:
            raise HrtemError(
                f"{path.name} holds only TIA metadata and no {path.stem}_1.ser file with the pixels was "
                "found beside it: keep the .emi and its _N.ser files together"
            )
        for ser in sers:
            checks.precheck_ser(ser)
        signals = _signals_from_rsciio(_rsciio_read("tia", path), path)
        if not signals:
            raise HrtemError(f"{path.name}: its .ser files hold no data that could be read")
        return signals, ""
    checks.precheck_ser(path)
    match = _SER_NAME.match(path.name)
    emi = path.parent / f"{match.group('stem')}.emi" if match else None
    if emi is not None and emi.is_file():
        # The .emi says whether the .ser holds an image or a diffraction pattern; read through it.
        try:
            for ser in _tia_ser_files(emi):
                checks.precheck_ser(ser)
            signals = _signals_from_rsciio(_rsciio_read("tia", emi), emi)
        except HrtemError:
            signals = []
        mine = [s for s in signals if s.data_file is not None and s.data_file.name == path.name]
        if mine:
            return mine, f"metadata from {emi.name}"
    signals = _signals_from_rsciio(_rsciio_read("tia", path), path)
    return signals, "no .emi beside it"


def _close_tiff_handles(result: list[dict]) -> None:
    """Close the TiffFile that rosettasciio's lazy TIFF reader leaves open (pixels come from tifffile)."""
    import tifffile

    for sig in result:
        try:
            graph = sig["data"].__dask_graph__()
            for task in dict(graph).values():
                for arg in getattr(task, "args", ()):
                    parent = getattr(getattr(arg, "value", arg), "parent", None)
                    if isinstance(parent, tifffile.TiffFile):
                        parent.close()
        except Exception:  # best effort: an open handle is only a ResourceWarning
            continue


@dataclass
class _TiffInfo:
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    compressed: bool
    flags: str
    imagej: dict


def _tiff_opener(path: Path, ndim: int) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        import tifffile
        import zarr

        try:
            with _quiet():
                tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise HrtemError(
                f"{path.name} could not be opened as TIFF ({one_line(exc)}): copy or export it again"
            ) from exc
        try:
            try:
                with _quiet():
                    store = tif.series[0].aszarr()
                    arr = zarr.open_array(store, mode="r")
            except Exception as exc:
                raise HrtemError(
                    f"{path.name}: the TIFF pixel data could not be opened ({one_line(exc)}): the file is "
                    "truncated or corrupted"
                ) from exc
            yield _AddFrameAxis(arr) if ndim == 2 else arr
        finally:
            tif.close()

    return opener


class _AddFrameAxis:
    """View of a 2D array-like as ``[1, ny, nx]`` for slicing along the frame axis."""

    def __init__(self, arr: Any) -> None:
        self.arr = arr
        self.shape = (1, *arr.shape)
        self.dtype = arr.dtype

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(1)
        image = _materialise(self.arr[...])
        return image[None][start:stop]


@contextlib.contextmanager
def _log_records(name: str) -> Iterator[list[str]]:
    """Collect the WARNING and ERROR messages of logger ``name`` instead of printing them."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger(name)
    handler = _Collect(logging.WARNING)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _tiff_data_end(series: Any) -> int:
    """Byte offset just past the last pixel byte of a tifffile series."""
    if getattr(series, "dataoffset", None) is not None:
        return int(series.dataoffset) + int(series.nbytes)
    end = 0
    for page in series.pages:
        if page is None:
            continue
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            end = max(end, int(offset) + int(count))
    return end


def _read_tiff(path: Path) -> tuple[list[_Signal], str, _TiffInfo]:
    import tifffile

    try:
        with _quiet(), _log_records("tifffile") as records, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise HrtemError(
                    f"{path.name} holds no image data: it is truncated or corrupted; copy or export it again"
                )
            series = tif.series[0]
            keyframe = series.keyframe
            info = _TiffInfo(
                shape=tuple(int(s) for s in series.shape),
                axes=str(series.axes),
                dtype=np.dtype(series.dtype),
                compressed=int(keyframe.compression) != 1,
                flags=",".join(sorted(f for f in tif.flags if f not in ("uniform", "shaped"))),
                imagej=dict(tif.imagej_metadata or {}),
            )
            data_end = _tiff_data_end(series)
    except HrtemError:
        raise
    except Exception as exc:
        raise HrtemError(
            f"{path.name} could not be read as TIFF ({one_line(exc)}): it is truncated, corrupted or not a "
            "TIFF; copy or export it again"
        ) from exc
    broken = [r for r in records if "TiffPages" in r]
    if broken:
        # tifffile drops the pages after a broken link and goes on: a truncated stack would read
        # as fewer frames without a word.
        raise HrtemError(
            f"{path.name}: the chain of TIFF pages is broken ({broken[0][:80]}): the file is truncated or "
            "corrupted; copy or export it again"
        )
    result = _rsciio_read("tiff", path)
    _close_tiff_handles(result)
    meta = result[0] if result else {}
    axes = list(meta.get("axes") or [])
    # rosettasciio reads ImageJ units only when they are "micron": fill in the others (nm, Å, ...).
    unit = info.imagej.get("unit")
    if unit and len(axes) >= 2:
        for axis in axes[-2:]:
            if is_unitless(axis.get("units")):
                axis["units"] = unit
    finterval = info.imagej.get("finterval")
    if finterval and len(axes) == 3 and is_unitless(axes[0].get("units")):
        axes[0] = {**axes[0], "scale": finterval, "units": info.imagej.get("tunit") or "s"}
        if not is_time(axes[0]["units"]):
            axes[0]["units"] = "s"
    # Pixels come from tifffile; align the metadata axes with tifffile's shape.
    if len(axes) != len(info.shape):
        tail = axes[-2:] if len(axes) >= 2 else []
        axes = _axes_for(info.shape, None)
        if tail and len(info.shape) >= 2:
            axes[-2:] = [{**tail[0], "navigate": False}, {**tail[1], "navigate": False}]
    lazy_shape = _ShapeOnly(info.shape, info.dtype)
    signal = _Signal(
        data=lazy_shape,
        axes=axes,
        title=_title_of(meta) if meta else "",
        signal_type="",
        data_file=path,
        compressed=info.compressed,
        data_end=data_end,
    )
    if "S" in info.axes:
        rgb = np.dtype([("R", info.dtype), ("G", info.dtype), ("B", info.dtype)])
        signal.data = _ShapeOnly(info.shape, rgb)
    return [signal], info.flags, info


@dataclass
class _ShapeOnly:
    """Shape and dtype of data that is opened later (TIFF pixels via tifffile)."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _npy_header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                shape, fortran, dtype = fmt._read_array_header(f, version)  # noqa: SLF001 (v3 header)
            offset = f.tell()
    except Exception as exc:
        raise HrtemError(
            f"{path.name} is not a readable .npy file ({one_line(exc)}): save it again with numpy.save"
        ) from exc
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), offset


def _read_npy(path: Path) -> tuple[list[_Signal], str, Callable[[], contextlib.AbstractContextManager[Any]]]:
    shape, fortran, dtype, offset = _npy_header(path)
    if dtype.hasobject:
        raise HrtemError(
            f"{path.name} holds Python objects, not pixel values: save a numeric array with numpy.save"
        )
    if any(s < 0 for s in shape):
        raise HrtemError(f"{path.name} declares a negative size {shape}: the file is corrupted")
    signal = _Signal(
        data=_ShapeOnly(shape, dtype),
        axes=_axes_for(shape, None),
        title=path.stem,
        data_file=path,
        available_bytes=path.stat().st_size - offset,
    )

    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise HrtemError(
                f"{path.name} could not be mapped ({one_line(exc)}): the file is truncated or corrupted"
            ) from exc
        yield arr[None] if arr.ndim == 2 else arr

    return [signal], "", opener


def _dask_opener(data: Any, path: Path) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    arr3d = data[None] if len(data.shape) == 2 else data

    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        npartitions = getattr(arr3d, "npartitions", None)
        if npartitions == 1 and arr3d.shape[0] > 1:
            # One block (e.g. TIA, read whole by rosettasciio): load it once, not once per chunk.
            yield _read_block(path, arr3d, 0, arr3d.shape[0])
        else:
            yield arr3d

    return opener


# --------------------------------------------------------------------------------------------
# open_image
# --------------------------------------------------------------------------------------------


def _refusal(path: Path, signals: list[_Signal], reasons: list[str]) -> HrtemError:
    if len(signals) == 1:
        return HrtemError(
            f"{path.name} holds {reasons[0]}, not a real-space image or image stack: give an HRTEM image "
            "or movie"
        )
    pairs = enumerate(zip(signals, reasons, strict=True))
    listed = "; ".join(f"'{s.title or i}': {r}" for i, (s, r) in pairs)
    return HrtemError(
        f"{path.name} holds {len(signals)} signals and none is a real-space image or image stack "
        f"({listed}): give an HRTEM image or movie"
    )


def open_image(
    path: str | Path,
    pixel_size_A: float | None = None,
    *,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    pixel_size_range_A: tuple[float, float] = PIXEL_SIZE_RANGE_A,
    require_pixel_size: bool = True,
) -> ImageSource:
    """Open a microscope image or image stack for lazy reading.

    Args:
        path: ``.dm3 .dm4 .ser .emi .emd .mrc .tif .tiff .npy`` file.
        pixel_size_A: pixel size in Å per pixel; overrides the file's calibration (required for
            ``.npy`` and for files without a usable calibration).
        min_size: smallest accepted image side in pixels (default 8; 1 reads anything).
        max_size: largest accepted image side in pixels, from the header (default 65536).
        max_frame_pixels: largest accepted number of pixels in one frame (default 2**31).
        pixel_size_range_A: accepted pixel sizes in Å (default 0.001..100), for the file's calibration
            and for ``pixel_size_A``.
        require_pixel_size: with False, a file without a usable calibration (none, or outside
            ``pixel_size_range_A``) opens all the same, with ``pixel_size_A`` None: for a caller that
            measures the pixel size itself (e.g. from the lattice). ``pixel_size_from_file_A`` still
            holds the file's own calibration when it has one.

    Returns:
        an :class:`ImageSource` whose ``shape`` is ``(n_frames, ny, nx)``.

    Raises:
        HrtemError: missing file, unknown extension, corrupted or truncated file, spectra, diffraction
            patterns, complex data, 4D data, absurd sizes, missing/absurd calibration, NaN/Inf in a
            single image. A file with several signals yields its first real-space image or stack.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "frame.npy")
        >>> np.save(p, np.zeros((16, 16), np.float32))  # a .npy carries no calibration
        >>> open_image(p, 0.1).pixel_size_A, open_image(p, require_pixel_size=False).pixel_size_A
        (0.1, None)
    """
    path = Path(path)
    if pixel_size_A is not None:
        pixel_size_A = validate_pixel_size(pixel_size_A, range_A=pixel_size_range_A)
    if not path.exists():
        raise HrtemError(f"{path} does not exist: check the path")
    if not path.is_file():
        raise HrtemError(f"{path} is not a file: give an image file")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        known = " ".join(sorted(SUPPORTED_EXTENSIONS))
        raise HrtemError(f"{path.name}: unknown file type '{ext or '(none)'}'; supported: {known}")
    if path.stat().st_size == 0:
        raise HrtemError(f"{path.name} is empty (0 bytes): copy or export it again")
    key, format_name = SUPPORTED_EXTENSIONS[ext]
    opener: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
    if key == "dm":
        signals, flavour = _read_dm(path)
    elif key == "mrc":
        signals, flavour = _read_mrc(path)
    elif key == "emd":
        signals, flavour = _read_emd(path)
    elif key == "tia":
        signals, flavour = _read_tia(path)
    elif key == "tiff":
        signals, flavour, tiff_info = _read_tiff(path)
        opener = _tiff_opener(path, len(tiff_info.shape))
    else:
        signals, flavour, opener = _read_npy(path)
    if flavour:
        format_name = f"{format_name} ({flavour})"
    if not signals:
        raise HrtemError(f"{path.name} holds no data that could be read: copy or export it again")

    reasons = [_what_it_holds(s) for s in signals]
    chosen = next((i for i, r in enumerate(reasons) if r is None), None)
    if chosen is None:
        raise _refusal(path, signals, [r or "" for r in reasons])
    sig = signals[chosen]
    data_shape = tuple(int(s) for s in sig.data.shape)
    shape3 = (1, *data_shape) if len(data_shape) == 2 else data_shape
    check_shape(path.name, shape3, min_size=min_size, max_size=max_size, max_frame_pixels=max_frame_pixels)
    data_file = sig.data_file or path
    declared = math.prod(shape3) * np.dtype(sig.data.dtype).itemsize
    available = data_file.stat().st_size if sig.available_bytes is None else sig.available_bytes
    check_declared_bytes(path.name, declared, available, compressed=sig.compressed)
    if sig.data_end is not None and sig.data_end > data_file.stat().st_size:
        raise HrtemError(
            f"{path.name}: its pixel data run to byte {sig.data_end} but the file has "
            f"{data_file.stat().st_size} bytes: it is truncated or corrupted; copy or export it again"
        )

    axes = _axes_for(data_shape, sig.axes)
    calibration = _calibrate(axes[-2], axes[-1])
    file_px = calibration.pixel_size_A
    lo, hi = pixel_size_range_A
    pixel: float | None
    if pixel_size_A is None and not require_pixel_size:
        pixel = file_px if file_px is not None and lo <= file_px <= hi else None
        if pixel is not None and calibration.warning:
            warnings.warn(f"{path.name}: {calibration.warning}", stacklevel=2)
    elif pixel_size_A is None:
        if file_px is None:
            raise HrtemError(f"{path.name} {calibration.problem}: {_OVERRIDE_HINT}", param="pixel_size_A")
        if not (lo <= file_px <= hi):
            hint = ""
            if key == "tia" and file_px > 1e7:
                hint = " (TIA stores diffraction calibrations in 1/m; is this a diffraction pattern?)"
            raise HrtemError(
                f"{path.name} is calibrated at {file_px:.6g} Å per pixel, outside {lo:g}..{hi:g} Å for "
                f"atomic-resolution images{hint}: check the file, or {_OVERRIDE_HINT} to override",
                param="pixel_size_A",
            )
        if calibration.warning:
            warnings.warn(f"{path.name}: {calibration.warning}", stacklevel=2)
        pixel = file_px
    else:
        pixel = pixel_size_A

    interval = _frame_interval(axes[0]) if len(data_shape) == 3 else None
    kind = "image" if shape3[0] == 1 else f"stack of {shape3[0]} frames"
    title = f" '{sig.title}'" if sig.title else ""
    description = f"{format_name}: {kind}{title}, {shape3[1]} x {shape3[2]} {np.dtype(sig.data.dtype)}"
    if len(signals) > 1:
        others = [f"'{s.title or i}'" for i, s in enumerate(signals) if i != chosen]
        description += f" (signal {chosen + 1} of {len(signals)}; the file also holds {', '.join(others)})"
    if pixel_size_A is not None:
        description += " [pixel size given by the user]"
    if opener is None:
        opener = _dask_opener(sig.data, path)
    source = ImageSource(
        path=path,
        shape=shape3,
        pixel_size_A=None if pixel is None else float(pixel),
        frame_interval_s=interval,
        dtype=np.dtype(sig.data.dtype),
        description=description,
        pixel_size_from_file_A=file_px,
        _open=opener,
    )
    if source.n_frames == 1:
        # A single image is read now: a truncated file or a NaN pixel is reported at open time.
        for first, block in source.frames():
            check_finite(block[0], first, path.name)
    return source
