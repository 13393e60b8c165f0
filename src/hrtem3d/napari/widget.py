"""napari widget: segment the current image or movie layer; a Points layer of the columns.

`columns_to_points` is the pure part (a column table to napari Points data and options), tested
without Qt; `segment_layer` runs the public API on a layer's data; `segment_widget` is the dock widget.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from hrtem3d.errors import HrtemError

#: Point diameter on screen, Å.
POINT_SIZE_A = 0.8


def layer_pixel_size_A(layer: Any, override_A: float = 0.0) -> float:
    """Å per pixel of an image layer: `override_A` when positive, else `metadata["pixel_size_A"]`
    (set by the hrtem3d reader), else the layer's scale when it is not 1 (taken as Å)."""
    if override_A and override_A > 0:
        return float(override_A)
    px = (getattr(layer, "metadata", None) or {}).get("pixel_size_A")
    if px:
        return float(px)
    scale = float(np.asarray(layer.scale)[-1])
    if scale != 1.0:
        return scale
    raise HrtemError(f"layer {layer.name!r} has no pixel size: open it with the hrtem3d reader, set its scale "
                     "(Å per pixel) or give the pixel size in the widget")


def columns_to_points(columns: pd.DataFrame, *, movie: bool, pixel_size_A: float,
                      scale: tuple[float, ...] | None = None, max_atoms: int = 12) -> tuple[np.ndarray, dict]:
    """Points data and layer options of a column table.

    Args:
        columns: the column table (`hrtem3d.segment` or `segment_movie(...).columns`).
        movie: points `(frame, y_px, x_px)` for a movie layer, `(y_px, x_px)` for an image.
        pixel_size_A: Å per pixel, for the point size (`POINT_SIZE_A`).
        scale: the image layer's scale, so the points lie on it.
        max_atoms: the top of the colour scale (atoms in a column), as `hrtem3d.viz.overlay`.

    Returns:
        (data `[n, 2 or 3]` in the image's pixels, options for `viewer.add_points`: features = the
        table, face colour by `n_atoms` on viridis from 1 to `max_atoms` (RGBA per point: napari
        would take a few integer values for categories), size, name, scale).
    """
    from matplotlib import colormaps

    cols = columns.reset_index(drop=True)
    keys = ["frame", "y_px", "x_px"] if movie else ["y_px", "x_px"]
    data = cols[keys].to_numpy(dtype=float) if len(cols) else np.zeros((0, len(keys)))
    level = np.clip((cols["n_atoms"].to_numpy(dtype=float) - 1) / max(1, max_atoms - 1), 0, 1)
    opts = {"features": cols, "face_color": colormaps["viridis"](level).reshape(-1, 4), "border_width": 0,
            "size": POINT_SIZE_A / pixel_size_A, "name": "columns"}
    if scale is not None:
        opts["scale"] = tuple(scale)
    return data, opts


def segment_layer(data: Any, pixel_size_A: float, *, contrast: str = "bright", model: Any = None) -> pd.DataFrame:
    """The column table of a layer's data: `[y, x]` an image, `[frame, y, x]` a movie (streamed by frame)."""
    import hrtem3d.api as api

    if np.ndim(data) == 2:
        return api.segment(data, pixel_size_A, model, contrast=contrast)
    if np.ndim(data) == 3:
        return api.segment_movie(data, pixel_size_A, model, contrast=contrast).columns
    raise HrtemError(f"an image [y, x] or a movie [frame, y, x] is segmented, not data of shape {np.shape(data)}")


def add_columns_layer(viewer: Any, layer: Any, *, contrast: str = "bright", pixel_size_A: float = 0.0,
                      model: Any = None) -> Any:
    """Segment `layer` and add the Points layer of its columns to `viewer`; returns the new layer."""
    px = layer_pixel_size_A(layer, pixel_size_A)
    cols = segment_layer(layer.data, px, contrast=contrast, model=model)
    data, opts = columns_to_points(cols, movie=np.ndim(layer.data) == 3, pixel_size_A=px, scale=tuple(layer.scale))
    opts["name"] = f"{layer.name} columns"
    return viewer.add_points(data, **opts)


@functools.lru_cache(maxsize=2)
def _reader(lattice: str) -> Any:
    """The shipped pair fixed to one reading ("static" or "vibrating"), loaded once per session."""
    import hrtem3d.api as api

    return api.load_model(lattice=lattice)


def segment_widget():
    """The dock widget: pick an image layer, contrast and (optionally) the pixel size; "Segment"."""
    import napari
    from magicgui import magic_factory

    @magic_factory(call_button="Segment", contrast={"choices": ["bright", "dark", "auto"]},
                   pixel_size_A={"label": "pixel size (Å, 0 = layer's)", "min": 0.0, "max": 2.0, "step": 0.001},
                   lattice={"choices": ["auto", "static", "vibrating"],
                            "tooltip": "auto: the vibration gate chooses; vibrating: a real specimen's lattice "
                                       "(thermal diffuse scattering); static: a simulation without frozen phonons"})
    def segment_columns(viewer: napari.viewer.Viewer, image: napari.layers.Image, contrast: str = "bright",
                        pixel_size_A: float = 0.0, lattice: str = "auto") -> None:
        if image is None:
            raise HrtemError("no image layer to segment: open an image first")
        model = None if lattice == "auto" else _reader(lattice)  # auto: the shipped pair, loaded once
        add_columns_layer(viewer, image, contrast=contrast, pixel_size_A=pixel_size_A, model=model)

    return segment_columns()
