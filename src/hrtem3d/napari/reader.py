"""napari reader: a microscope image or movie through `hrtem3d.io.open_image`, read lazily."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hrtem3d.io import SUPPORTED_EXTENSIONS, ImageSource, open_image

LayerData = tuple[Any, dict, str]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for `path` when hrtem3d reads its format (by extension), else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or any(Path(p).suffix.lower() not in SUPPORTED_EXTENSIONS for p in paths):
        return None
    return read


def read(path: str | list[str]) -> list[LayerData]:
    """One image layer per file: `[y, x]` (a single image) or `[frame, y, x]` (a movie, a dask array
    read frame by frame), scale in Å per pixel, `metadata` with `pixel_size_A`, `frame_interval_s`
    and the file's description. An unreadable file raises `HrtemError` with a one-line reason."""
    paths = [path] if isinstance(path, str) else list(path)
    return [layer_data(open_image(p)) for p in paths]


def layer_data(src: ImageSource) -> LayerData:
    """napari layer data of an opened file (see `read`)."""
    px = src.pixel_size_A
    meta = {"pixel_size_A": px, "frame_interval_s": src.frame_interval_s, "description": src.description,
            "path": str(src.path)}
    if src.n_frames == 1:
        data: Any = src.read_all()[0]
        scale: tuple[float, ...] = (px, px)
    else:
        data = lazy_frames(src)
        scale = (1.0, px, px)
    return data, {"name": src.path.stem, "scale": scale, "metadata": meta}, "image"


def lazy_frames(src: ImageSource):
    """A dask array `[frame, y, x]` float32 whose frames are read from the file when shown."""
    import dask
    import dask.array as da
    import numpy as np

    def one(i: int) -> np.ndarray:
        (_, block), = list(src.frames(i, i + 1, chunk=1))
        return block[0]

    ny, nx = src.shape[1:]
    frames = [da.from_delayed(dask.delayed(one)(i), (ny, nx), dtype=np.float32) for i in range(src.n_frames)]
    return da.stack(frames)
