"""What the public API accepts as an image or a movie, and HyperSpy markers for its column tables.

`as_frames` turns a numpy array, a dask array, a HyperSpy `Signal2D` (lazy or not), an
`ImageSource` or a file path into one `Frames` view: its pixel size (Å), frame interval (s)
and the frames read block by block, so a lazy movie is never held whole in memory.
HyperSpy is optional: it is imported only when a signal or markers are asked for.

>>> import numpy as np
>>> f = as_frames(np.zeros((3, 64, 64)), pixel_size_A=0.16)
>>> f.n_frames, f.shape, f.pixel_size_A
(3, (64, 64), 0.16)
>>> [(first, len(block)) for first, block in f.blocks(chunk=2)]
[(0, 2), (2, 1)]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hrtem3d.errors import HrtemError
from hrtem3d.io import ImageSource, open_image
from hrtem3d.io.checks import length_to_A, time_to_s, validate_pixel_size


@dataclass
class Frames:
    """An image or a movie as the API reads it.

    Attributes:
        data: the `[frame, y, x]` array (numpy, dask or anything sliceable), or an ImageSource.
        n_frames: number of frames; shape: (ny, nx) of one frame.
        pixel_size_A: Å per pixel; frame_interval_s: s between frames (None when unknown).
    """

    data: Any
    n_frames: int
    shape: tuple[int, int]
    pixel_size_A: float
    frame_interval_s: float | None = None

    def blocks(self, start: int = 0, stop: int | None = None, chunk: int = 16) -> Iterator[tuple[int, np.ndarray]]:
        """Yield `(first_frame, frames)` with `frames` float32 `[k, ny, nx]`, k <= `chunk`, read lazily.

        A dask array is read along its own chunks (at most `chunk` frames at a time).
        """
        stop = self.n_frames if stop is None else stop
        if not 0 <= start <= stop <= self.n_frames:
            raise HrtemError(f"frame range {start}..{stop} is outside the {self.n_frames} frame(s); "
                             f"choose frames between 0 and {self.n_frames}")
        if isinstance(self.data, ImageSource):
            yield from self.data.frames(start, stop, chunk=chunk)
            return
        edges = _chunk_edges(self.data, start, stop, chunk)
        for a, b in zip(edges[:-1], edges[1:]):
            block = self.data[a:b]
            if hasattr(block, "compute"):
                block = block.compute()
            yield a, np.asarray(block, dtype=np.float32)


def _chunk_edges(data: Any, start: int, stop: int, chunk: int) -> list[int]:
    """Block boundaries in [start, stop]: every `chunk` frames, and at a dask array's own chunk edges."""
    cuts = set(range(start, stop, max(1, chunk))) | {stop}
    if hasattr(data, "chunks") and isinstance(data.chunks, tuple) and data.chunks and \
            isinstance(data.chunks[0], tuple):
        cuts |= {int(c) for c in np.cumsum((0,) + data.chunks[0]) if start < c < stop}
    return sorted(cuts)


def is_signal(obj: Any) -> bool:
    """True for a HyperSpy signal (told by its axes manager, without importing HyperSpy)."""
    return hasattr(obj, "axes_manager") and hasattr(obj, "data")


def signal_calibration(signal: Any) -> tuple[float | None, float | None, str]:
    """(pixel size in Å, frame interval in s, problem) of a HyperSpy Signal2D from its axes.

    Lengths in m, µm, nm, Å or pm are converted to Å; a navigation axis in s or ms gives the frame
    interval. The pixel size is None (and `problem` says why) when the axes carry no length unit.
    """
    am = signal.axes_manager
    if len(am.signal_axes) != 2:
        return None, None, f"a {len(am.signal_axes)}D signal is not an image (use a Signal2D)"
    x, y = am.signal_axes
    px, py = (length_to_A(a.scale, a.units) for a in (x, y))
    interval = None
    if len(am.navigation_axes) == 1:
        t = am.navigation_axes[0]
        interval = time_to_s(t.scale, t.units)
    if px is None:
        return None, interval, f"its signal axes are in {x.units!r}, not a length"
    if py is not None and abs(py - px) > 1e-3 * abs(px):
        return None, interval, f"its pixels are not square ({px:.4g} x {py:.4g} Å)"
    return abs(px), interval, ""


def as_frames(image: Any, pixel_size_A: float | None = None, frame_interval_s: float | None = None) -> Frames:
    """A `Frames` view of an image `[y, x]` or movie `[frame, y, x]`.

    Args:
        image: numpy or dask array, HyperSpy Signal2D (a single image or a 1D stack of images),
            an ImageSource (`hrtem3d.open_image`) or the path of a microscope file.
        pixel_size_A: Å per pixel; overrides the calibration of a signal or file, required for arrays.
        frame_interval_s: s between frames; overrides the signal's or file's.
    """
    if pixel_size_A is not None:
        pixel_size_A = validate_pixel_size(pixel_size_A, what="pixel_size_A")
    interval = None
    if isinstance(image, (str, Path)):
        image = open_image(image, pixel_size_A=pixel_size_A)
    if isinstance(image, ImageSource):
        n, ny, nx = image.shape
        return Frames(image, n, (ny, nx), pixel_size_A or image.pixel_size_A,
                      frame_interval_s or image.frame_interval_s)
    if is_signal(image):
        px, interval, problem = signal_calibration(image)
        if pixel_size_A is None and px is None:
            raise HrtemError(f"the signal's pixel size is unknown: {problem}; set its axes' scale and units "
                             "(e.g. 'nm') or pass pixel_size_A (Å)")
        if len(image.axes_manager.navigation_axes) > 1:
            raise HrtemError("a signal with more than one navigation axis is not a movie; pass one image stack")
        pixel_size_A = pixel_size_A or validate_pixel_size(px, what="the signal's pixel size")
        image = image.data
    elif pixel_size_A is None:
        raise HrtemError("an array has no calibration: pass pixel_size_A (Å per pixel)")
    if not hasattr(image, "shape") or not hasattr(image, "__getitem__"):
        image = np.asarray(image)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 2:
        image = image[None]
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise HrtemError(f"expected an image [y, x] or a movie [frame, y, x], got shape {shape}")
    if np.dtype(image.dtype).kind == "c":
        raise HrtemError("complex data is not an image: pass intensities (e.g. abs(wave)**2)")
    return Frames(image, shape[0], (shape[1], shape[2]), float(pixel_size_A), frame_interval_s or interval)


def to_markers(columns: pd.DataFrame, signal: Any, *, max_atoms: int = 12, cmap: str = "viridis",
               size: float = 8.0) -> Any:
    """HyperSpy `Points` markers of a column table, placed in the signal's calibrated axes.

    Each column is a point at its `x_px`, `y_px` (pixels of the image segmented), coloured by
    `n_atoms` (1..`max_atoms` on `cmap`). For a stack (one navigation axis) the markers follow the
    navigation: frame i shows the rows with `frame == i`.

    Returns the markers; `add_markers` also puts them on the signal.
    """
    from hyperspy.utils.markers import Points
    from matplotlib import colormaps

    am = signal.axes_manager
    x_ax, y_ax = am.signal_axes
    colours = colormaps[cmap]

    def offsets(t: pd.DataFrame) -> np.ndarray:
        return np.column_stack([x_ax.offset + t["x_px"].to_numpy() * x_ax.scale,
                                y_ax.offset + t["y_px"].to_numpy() * y_ax.scale])

    def rgba(t: pd.DataFrame) -> np.ndarray:
        return colours(np.clip((t["n_atoms"].to_numpy() - 1) / max(1, max_atoms - 1), 0, 1))

    if len(am.navigation_axes) == 0:
        return Points(offsets=offsets(columns), color=rgba(columns), sizes=size)
    if len(am.navigation_axes) > 1:
        raise HrtemError("markers are drawn on an image or a 1D stack of images")
    n = am.navigation_axes[0].size
    groups = dict(tuple(columns.groupby("frame"))) if len(columns) else {}
    empty = columns.iloc[:0]
    per = [groups.get(i, empty) for i in range(n)]
    offs, cols = np.empty(n, dtype=object), np.empty(n, dtype=object)
    for i, t in enumerate(per):
        offs[i], cols[i] = offsets(t), rgba(t)
    return Points(offsets=offs, color=cols, sizes=size)


def add_markers(signal: Any, columns: pd.DataFrame, **options: Any) -> Any:
    """Draw the column table on `signal` as permanent markers (kept when the signal is saved); returns them.

    Options as `to_markers`.
    """
    markers = to_markers(columns, signal, **options)
    signal.add_marker(markers, permanent=True)
    return markers
