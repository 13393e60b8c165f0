"""Readers for microscope image files: one lazy :class:`ImageSource` per file.

Formats (by extension): Gatan ``.dm3``/``.dm4``, FEI TIA ``.ser``/``.emi``, ``.emd`` (Velox and
Berkeley/NCEM, Prismatic), ``.mrc``, ``.tif``/``.tiff`` (ImageJ, Gatan, FEI, TVIPS tags) and ``.npy``.
Pixels are read lazily, frame chunk by frame chunk; arrays are ``[frame, y, x]`` float32; the pixel
size is in Å per pixel. Every problem with the input becomes a one-line
:class:`hrtem3d.errors.HrtemError`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.io.checks import (
    MAX_FRAME_PIXELS,
    MAX_SIZE,
    MIN_SIZE,
    PIXEL_SIZE_RANGE_A,
    check_declared_bytes,
    check_finite,
    check_shape,
    validate_pixel_size,
)
from hrtem3d.io.formats import (
    dask_opener,
    read_dm,
    read_emd,
    read_mrc,
    read_npy,
    read_tia,
    read_tiff,
    tiff_opener,
)
from hrtem3d.io.signals import (
    Signal,
    axes_for,
    frame_interval,
    pixel_calibration,
    read_block,
    what_it_holds,
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
                yield first, read_block(self.path, arr, first, last)

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



# --------------------------------------------------------------------------------------------
# open_image
# --------------------------------------------------------------------------------------------


def _refusal(path: Path, signals: list[Signal], reasons: list[str]) -> HrtemError:
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
        signals, flavour = read_dm(path)
    elif key == "mrc":
        signals, flavour = read_mrc(path)
    elif key == "emd":
        signals, flavour = read_emd(path)
    elif key == "tia":
        signals, flavour = read_tia(path)
    elif key == "tiff":
        signals, flavour, tiff_info = read_tiff(path)
        opener = tiff_opener(path, len(tiff_info.shape))
    else:
        signals, flavour, opener = read_npy(path)
    if flavour:
        format_name = f"{format_name} ({flavour})"
    if not signals:
        raise HrtemError(f"{path.name} holds no data that could be read: copy or export it again")

    reasons = [what_it_holds(s) for s in signals]
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

    axes = axes_for(data_shape, sig.axes)
    calibration = pixel_calibration(axes[-2], axes[-1])
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

    interval = frame_interval(axes[0]) if len(data_shape) == 3 else None
    kind = "image" if shape3[0] == 1 else f"stack of {shape3[0]} frames"
    title = f" '{sig.title}'" if sig.title else ""
    description = f"{format_name}: {kind}{title}, {shape3[1]} x {shape3[2]} {np.dtype(sig.data.dtype)}"
    if len(signals) > 1:
        others = [f"'{s.title or i}'" for i, s in enumerate(signals) if i != chosen]
        description += f" (signal {chosen + 1} of {len(signals)}; the file also holds {', '.join(others)})"
    if pixel_size_A is not None:
        description += " [pixel size given by the user]"
    if opener is None:
        opener = dask_opener(sig.data, path)
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
