"""Format readers: each turns one kind of microscope file into :class:`~hrtem3d.io.signals.Signal`.

Internal to :mod:`hrtem3d.io`. DM3/DM4, MRC, EMD and TIA through rosettasciio (lazily); TIFF through
tifffile and zarr (rosettasciio for its metadata only); ``.npy`` through a memory map. Every library
failure becomes a one-line :class:`hrtem3d.errors.HrtemError`.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.io import headers
from hrtem3d.io.checks import is_time, is_unitless, one_line
from hrtem3d.io.signals import (
    Signal,
    axes_for,
    materialise,
    quiet,
    read_block,
    signal_type_of,
    title_of,
)

# --------------------------------------------------------------------------------------------
# Format readers: each returns a list of Signal and a format label
# --------------------------------------------------------------------------------------------


def _rsciio_read(module: str, path: Path, **kwargs: Any) -> list[dict]:
    """Call ``rsciio.<module>.file_reader(path, lazy=True)``, turning any failure into HrtemError."""
    reader = importlib.import_module(f"rsciio.{module}").file_reader
    try:
        with quiet():
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


def _signals_from_rsciio(result: list[dict], data_file: Path, *, compressed: bool = False) -> list[Signal]:
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
            Signal(
                data=data,
                axes=list(sig.get("axes") or []),
                title=title_of(sig),
                signal_type=signal_type_of(sig),
                data_file=tia_file if tia_file is not None and tia_file.is_file() else data_file,
                compressed=compressed,
            )
        )
    return signals


def read_dm(path: Path) -> tuple[list[Signal], str]:
    """Signals of a Gatan DM3/DM4 file (header guarded first) and its format flavour ('')."""
    headers.precheck_dm(path)
    return _signals_from_rsciio(_rsciio_read("digitalmicrograph", path), path), ""


def read_mrc(path: Path) -> tuple[list[Signal], str]:
    """Signals of an MRC file (header guarded first) and its format flavour ('')."""
    headers.precheck_mrc(path)
    return _signals_from_rsciio(_rsciio_read("mrc", path), path), ""


def read_emd(path: Path) -> tuple[list[Signal], str]:
    """Signals of an EMD file (HDF5 walked first) and its flavour: 'Velox', 'Berkeley/NCEM' or ''."""
    names, attrs = headers.precheck_hdf5(path)
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


def read_tia(path: Path) -> tuple[list[Signal], str]:
    """Signals of a TIA .emi or .ser (read through the .emi beside a .ser when there is one) and a note."""
    if path.suffix.lower() == ".emi":
        sers = _tia_ser_files(path)
        if not sers:
            raise HrtemError(
                f"{path.name} holds only TIA metadata and no {path.stem}_1.ser file with the pixels was "
                "found beside it: keep the .emi and its _N.ser files together"
            )
        for ser in sers:
            headers.precheck_ser(ser)
        signals = _signals_from_rsciio(_rsciio_read("tia", path), path)
        if not signals:
            raise HrtemError(f"{path.name}: its .ser files hold no data that could be read")
        return signals, ""
    headers.precheck_ser(path)
    match = _SER_NAME.match(path.name)
    emi = path.parent / f"{match.group('stem')}.emi" if match else None
    if emi is not None and emi.is_file():
        # The .emi says whether the .ser holds an image or a diffraction pattern; read through it.
        try:
            for ser in _tia_ser_files(emi):
                headers.precheck_ser(ser)
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
class TiffInfo:
    """What tifffile says of a TIFF's first series: shape, axes letters, dtype, compression, flags, ImageJ tags."""

    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    compressed: bool
    flags: str
    imagej: dict


def tiff_opener(path: Path, ndim: int) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A context manager factory that opens the TIFF's pixels lazily (tifffile as zarr) as ``[frame, y, x]``."""
    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        import tifffile
        import zarr

        try:
            with quiet():
                tif = tifffile.TiffFile(path)
        except Exception as exc:
            raise HrtemError(
                f"{path.name} could not be opened as TIFF ({one_line(exc)}): copy or export it again"
            ) from exc
        try:
            try:
                with quiet():
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
        image = materialise(self.arr[...])
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


def read_tiff(path: Path) -> tuple[list[Signal], str, TiffInfo]:
    """The TIFF's one signal (shape, calibration; pixels come later from :func:`tiff_opener`), flags, layout."""
    import tifffile

    try:
        with quiet(), _log_records("tifffile") as records, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise HrtemError(
                    f"{path.name} holds no image data: it is truncated or corrupted; copy or export it again"
                )
            series = tif.series[0]
            keyframe = series.keyframe
            info = TiffInfo(
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
        axes = axes_for(info.shape, None)
        if tail and len(info.shape) >= 2:
            axes[-2:] = [{**tail[0], "navigate": False}, {**tail[1], "navigate": False}]
    lazy_shape = ShapeOnly(info.shape, info.dtype)
    signal = Signal(
        data=lazy_shape,
        axes=axes,
        title=title_of(meta) if meta else "",
        signal_type="",
        data_file=path,
        compressed=info.compressed,
        data_end=data_end,
    )
    if "S" in info.axes:
        rgb = np.dtype([("R", info.dtype), ("G", info.dtype), ("B", info.dtype)])
        signal.data = ShapeOnly(info.shape, rgb)
    return [signal], info.flags, info


@dataclass
class ShapeOnly:
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


def read_npy(path: Path) -> tuple[list[Signal], str, Callable[[], contextlib.AbstractContextManager[Any]]]:
    """A .npy file's one signal (from its header), '' and an opener that memory-maps it."""
    shape, fortran, dtype, offset = _npy_header(path)
    if dtype.hasobject:
        raise HrtemError(
            f"{path.name} holds Python objects, not pixel values: save a numeric array with numpy.save"
        )
    if any(s < 0 for s in shape):
        raise HrtemError(f"{path.name} declares a negative size {shape}: the file is corrupted")
    signal = Signal(
        data=ShapeOnly(shape, dtype),
        axes=axes_for(shape, None),
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


def dask_opener(data: Any, path: Path) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """An opener for a lazy (dask) array from rosettasciio, as ``[frame, y, x]``."""
    arr3d = data[None] if len(data.shape) == 2 else data

    @contextlib.contextmanager
    def opener() -> Iterator[Any]:
        npartitions = getattr(arr3d, "npartitions", None)
        if npartitions == 1 and arr3d.shape[0] > 1:
            # One block (e.g. TIA, read whole by rosettasciio): load it once, not once per chunk.
            yield read_block(path, arr3d, 0, arr3d.shape[0])
        else:
            yield arr3d

    return opener


