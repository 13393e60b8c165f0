"""Per-frame overlays of in-situ movie results, streamed to a GIF, and the styles the movie figures share.

The Figure-2 panel, the depth traces and the event map are in :mod:`hrtem3d.viz.movie_figures`.

Inputs are the tables of the tracking stage (this module never imports it):

- ``columns``: one row per column per frame: ``frame``, ``column_id`` (-1 if unlinked), ``x_px``, ``y_px``
  (pixel coordinates of the input frame), ``x_A``, ``y_A``, ``species``, ``n_atoms`` (temporally denoised),
  ``confidence``, ``time_s``, ``n_atoms_raw`` (single-frame network depth).
- ``events``: ``frame``, ``time_s``, ``column_id``, ``species``, ``x_px``, ``y_px``, ``n_before``, ``n_after``,
  ``confidence``, ``kind`` (may have 0 rows).
- ``tracks``: ``column_id``, ``species``, ``x_px``, ``y_px`` (mean position), ``first_frame``, ``last_frame``,
  ``n_frames``.

Depth colours follow :mod:`hrtem3d.viz.colors` (one colour map per species, discrete per atom count); Ce
columns are circles and O columns small squares, as in :mod:`hrtem3d.viz.overlay`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import GifImagePlugin, Image

from hrtem3d.fsutil import atomic_write
from hrtem3d.labels.scheme import ClassScheme
from hrtem3d.viz.colors import class_colors

#: Marker and colour of each event kind (unknown kinds get a stable colour from tab10 and a star).
EVENT_STYLES: dict[str, tuple[str, str]] = {
    "migration": ("D", "#00e5ff"),
    "o_vacancy": ("v", "#ff2d2d"),
    "o_loss": ("v", "#ff2d2d"),
    "o_gain": ("^", "#ff9f1c"),
    "ce_loss": ("X", "#ff3df5"),
    "ce_gain": ("P", "#7fff00"),
}
#: Marker of each species in the order of the scheme (Ce, O, then others).
SPECIES_MARKERS = ("o", "s", "^", "D")
_DPI = 128  # a power of two: figure sizes of w / dpi inches are exact, so the canvas is exactly w x h


def event_style(kind: str) -> tuple[str, str]:
    """(matplotlib marker, colour) of an event kind."""
    if kind in EVENT_STYLES:
        return EVENT_STYLES[kind]
    color = colormaps["tab10"](zlib.crc32(str(kind).encode()) % 10)
    return "*", "#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in color[:3]))


def species_scheme(species: Iterable[str], max_atoms: int) -> ClassScheme:
    """A scheme with Ce and O first (so their colours match the default scheme), then any other species."""
    extra = sorted({str(s) for s in species} - {"Ce", "O"})
    names = ("Ce", "O", *extra)
    return ClassScheme(species=names, max_atoms=(int(max_atoms),) * len(names))


def depth_cmap(scheme: ClassScheme, species: str) -> tuple[ListedColormap, BoundaryNorm]:
    """Discrete colour map and norm of one species' depth (1..max atoms), matching `class_colors`."""
    colors = class_colors(scheme)[scheme.species_classes(species)]
    n = len(colors)
    return ListedColormap(colors, name=f"{species}_depth"), BoundaryNorm(np.arange(0.5, n + 1.0), n)


def species_color(scheme: ClassScheme, species: str):
    """A representative (mid-depth) colour of a species, for lines and dots."""
    if species not in scheme.species:
        return "0.5"
    i = scheme.species.index(species)
    return class_colors(scheme)[scheme.class_of(species, max(1, (scheme.max_atoms[i] + 1) // 2))]


def robust_limits(image: np.ndarray) -> tuple[float, float]:
    """Display limits of an image: its 0.5th and 99.5th percentiles of finite values."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _downsample(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Block-mean `image` by the smallest integer factor that brings its longer side to <= `max_side`.

    Edges are padded with the edge values, so the result is `ceil(ny / f) x ceil(nx / f)`. Pixel `(x, y)` of
    the input maps to `((x - (f - 1) / 2) / f, (y - (f - 1) / 2) / f)` of the result.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2D frame [y, x], got shape {image.shape}")
    f = max(1, math.ceil(max(image.shape) / max(int(max_side), 1)))
    if f == 1:
        return image, 1
    ny, nx = image.shape
    py, px = -ny % f, -nx % f
    if py or px:
        image = np.pad(image, ((0, py), (0, px)), mode="edge")
    out = image.reshape(image.shape[0] // f, f, image.shape[1] // f, f).mean(axis=(1, 3))
    return out, f


def _nearest_spacing(x: np.ndarray, y: np.ndarray) -> float | None:
    """Median nearest-neighbour distance of the points (at most 2000 sampled), None for < 2 points."""
    if len(x) < 2:
        return None
    pts = np.column_stack([x, y]).astype(float)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 2:
        return None
    if len(pts) > 2000:
        pts = pts[np.random.default_rng(0).choice(len(pts), 2000, replace=False)]
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(pts, k=2)
    d = d[:, 1][d[:, 1] > 0]
    return float(np.median(d)) if len(d) else None


def _marker_px(cols: pd.DataFrame, factor: int) -> float:
    """Ce marker diameter in output pixels: about 45 % of the nearest-column spacing, 3..16 px."""
    s = _nearest_spacing(cols.x_px.to_numpy(), cols.y_px.to_numpy()) if len(cols) else None
    return 6.0 if s is None else float(np.clip(0.45 * s / factor, 3.0, 16.0))


def _frame_time(cols: pd.DataFrame, events: pd.DataFrame | None) -> float | None:
    for t in (cols, events):
        if t is not None and len(t) and "time_s" in t and np.isfinite(t.time_s.iloc[0]):
            return float(t.time_s.iloc[0])
    return None


class _OverlayRenderer:
    """One transparent Agg canvas of exactly `h x w` pixels reused for every frame (artists updated, not
    rebuilt); its drawing is alpha-composited over the grey frame in numpy (3x faster than `imshow`)."""

    def __init__(self, shape: tuple[int, int], scheme: ClassScheme, species: Iterable[str]):
        h, w = shape
        self.shape = (h, w)
        self.scheme = scheme
        self.fig = Figure(figsize=(w / _DPI, h / _DPI), dpi=_DPI)
        self.fig.patch.set_alpha(0.0)  # the overlay is drawn on a transparent canvas and composited in numpy
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax = ax
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        font = float(np.clip(7.0 * min(h, w) / 512, 4.5, 9.0))
        self.scatters = {}
        present = [s for s in scheme.species if s in set(species)]
        for sp in present:
            cmap, norm = depth_cmap(scheme, sp)
            marker = SPECIES_MARKERS[scheme.species.index(sp) % len(SPECIES_MARKERS)]
            self.scatters[sp] = ax.scatter(np.zeros(0), np.zeros(0), c=np.zeros(0), cmap=cmap, norm=norm,
                                           marker=marker, edgecolors="none", zorder=3)
        self.events = ax.scatter(np.zeros(0), np.zeros(0), facecolors="none", edgecolors="white", linewidths=1.3,
                                 zorder=4)
        self.event_labels: list = []
        self.font = font
        self.text = ax.text(0.015, 0.985, "", transform=ax.transAxes, color="white", va="top", ha="left",
                            fontsize=font, zorder=5, bbox=dict(facecolor="black", alpha=0.55, pad=1.5, lw=0))
        # depth colour bars: one thin strip per species in the top-right corner
        bar_h = max(0.022, 1.6 * font * _DPI / 72 / h * 0.55)
        if present:
            bottom = 0.985 - (len(present) - 1) * bar_h * 1.9 - bar_h - 0.012
            ax.add_patch(Rectangle((0.60, bottom), 0.395, 0.995 - bottom, transform=ax.transAxes, facecolor="black",
                                   alpha=0.55, lw=0, zorder=5))
        for i, sp in enumerate(present):
            top = 0.985 - i * (bar_h * 1.9)
            cax = self.fig.add_axes((0.70, top - bar_h, 0.24, bar_h))
            cmap, _ = depth_cmap(scheme, sp)
            cax.imshow(np.arange(cmap.N)[None, :], cmap=cmap, aspect="auto", interpolation="nearest")
            cax.set_axis_off()
            kw = dict(transform=cax.transAxes, color="white", va="center", fontsize=font * 0.9)
            cax.text(-0.03, 0.5, f"{sp} 1", ha="right", **kw)
            cax.text(1.03, 0.5, f"{cmap.N}", ha="left", **kw)

    def set_marker_px(self, d_px: float) -> None:
        """Ce marker diameter in output pixels (other species 70 %, event circles 230 %)."""
        pt = 72.0 / _DPI
        for sp, sc in self.scatters.items():
            k = 1.0 if self.scheme.species.index(sp) == 0 else 0.7
            sc.set_sizes([(k * d_px * pt) ** 2])
        self.events.set_sizes([(2.3 * d_px * pt) ** 2])
        self.d_px = d_px

    def render(self, image_ds: np.ndarray, factor: int, cols: pd.DataFrame, events: pd.DataFrame | None,
               text: str) -> np.ndarray:
        shift = (factor - 1) / 2
        for sp, sc in self.scatters.items():
            c = cols[cols.species == sp] if len(cols) else cols
            xy = np.column_stack([(c.x_px.to_numpy(float) - shift) / factor, (c.y_px.to_numpy(float) - shift) / factor])
            sc.set_offsets(xy.reshape(-1, 2))
            sc.set_array(c.n_atoms.to_numpy(float))
        for t in self.event_labels:
            t.remove()
        self.event_labels = []
        if events is not None and len(events):
            ex = (events.x_px.to_numpy(float) - shift) / factor
            ey = (events.y_px.to_numpy(float) - shift) / factor
            self.events.set_offsets(np.column_stack([ex, ey]))
            self.events.set_edgecolors([event_style(k)[1] for k in events.kind])
            for x, y, k in zip(ex, ey, events.kind):
                self.event_labels.append(self.ax.text(x + 1.4 * self.d_px, y, str(k), color=event_style(k)[1],
                                                      fontsize=self.font * 0.85, va="center", zorder=5,
                                                      bbox=dict(facecolor="black", alpha=0.5, pad=0.8, lw=0)))
        else:
            self.events.set_offsets(np.zeros((0, 2)))
        self.text.set_text(text)
        self.canvas.draw()
        rgba = np.asarray(self.canvas.buffer_rgba())  # straight (not premultiplied) alpha
        lo, hi = robust_limits(image_ds)
        grey = np.clip((image_ds - lo) * (255 / (hi - lo)), 0, 255).astype(np.uint16)[..., None]
        alpha = rgba[..., 3:4].astype(np.uint16)
        out = rgba[..., :3] * alpha + grey * (255 - alpha) + 127  # integer "over", rounded
        return (out // 255).astype(np.uint8)


def overlay_frame(image: np.ndarray, cols: pd.DataFrame, events_here: pd.DataFrame | None = None,
                  max_side: int = 512, vmax_atoms: int = 12, *, frame: int | None = None,
                  marker_px: float | None = None) -> np.ndarray:
    """One movie frame with its columns: RGB uint8 `[h, w, 3]`.

    The grey frame (0.5-99.5 percentile scaling) is block-averaged by the smallest integer factor `f` that
    makes its longer side <= `max_side` pixels (`h = ceil(ny / f)`, `w = ceil(nx / f)`); it is never enlarged.
    Each column is a filled marker (Ce circle, O square) coloured by `n_atoms` on its species' depth colour map
    (1..`vmax_atoms`, as `viz.colors`); the events of this frame are circled in their kind's colour and named.
    A depth colour bar per species sits in the top-right corner, frame number and time (s) in the top-left.

    Args:
        image: the input frame `[y, x]`, any real dtype.
        cols: rows of the column table for this frame (`x_px`, `y_px` in input-frame pixels, `species`,
            `n_atoms`; `frame` and `time_s` are used for the label when present).
        events_here: rows of the event table for this frame, or None.
        max_side: longest side of the output, pixels.
        vmax_atoms: top of the depth colour scale (deeper columns take the top colour).
        frame: frame number for the label (default: `cols.frame`).
        marker_px: Ce marker diameter in output pixels (default: 45 % of the median nearest-column spacing).
    """
    image_ds, f = _downsample(image, max_side)
    species = set(cols.species) if len(cols) else set()
    renderer = _OverlayRenderer(image_ds.shape, species_scheme(species, vmax_atoms), species)
    renderer.set_marker_px(marker_px if marker_px is not None else _marker_px(cols, f))
    if frame is None and len(cols) and "frame" in cols:
        frame = int(cols.frame.iloc[0])
    return renderer.render(image_ds, f, cols, events_here, _label(frame, _frame_time(cols, events_here)))


def _label(frame: int | None, time_s: float | None) -> str:
    parts = [] if frame is None else [f"frame {frame}"]
    if time_s is not None:
        parts.append(f"t = {time_s:.2f} s")
    return "   ".join(parts)


class _GifStream:
    """Writes an animated GIF frame by frame (a local 256-colour table per frame), holding only one frame.

    imageio's GIF writer (pillow plugin, v2 and v3 alike) and Pillow's `save_all` keep every frame until the
    file is closed, so this uses Pillow's frame-level GIF helpers (`getheader`, `getdata`) instead.
    GIF delays are whole centiseconds; the delay of frame i is `round((i + 1) * 100 / fps) - round(i * 100 / fps)`
    (at least 2 cs), so the average rate stays `fps` even when 100 / fps is not an integer.
    """

    def __init__(self, fp: BinaryIO, fps: float):
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fp = fp
        self.fps = float(fps)
        self.n = 0

    def add(self, rgb: np.ndarray) -> None:
        im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB")
        pal = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        if self.n == 0:
            header, _ = GifImagePlugin.getheader(pal.copy(), info={"loop": 0, "duration": 1})
            for chunk in header:
                self.fp.write(chunk)
        cs = round((self.n + 1) * 100 / self.fps) - round(self.n * 100 / self.fps)
        for chunk in GifImagePlugin.getdata(pal, duration=10 * max(cs, 2), include_color_table=True):
            self.fp.write(chunk)
        self.n += 1

    def close(self) -> None:
        self.fp.write(b";")


def write_overlay_movie(frames: Iterable[tuple[int, np.ndarray]], columns: pd.DataFrame, events: pd.DataFrame,
                        path: Path, fps: float = 7.5, max_side: int = 512, vmax_atoms: int = 12) -> Path:
    """Stream `overlay_frame` renderings of a movie into an animated GIF (looping), written atomically.

    Frames are consumed one at a time from the iterator and encoded at once: neither the input nor the
    rendered movie is held in memory. The GIF appears at `path` only when complete.

    Args:
        frames: `(frame_index, image [y, x])` pairs; all frames must have the same shape.
        columns: the column table (all frames); rows are matched to frames by `frame`.
        events: the event table (may be empty); events are circled in their frame.
        path: output file, must end in `.gif`.
        fps: playback rate, frames per second (GIF delays are rounded to centiseconds, <= 50 fps).
        max_side: longest side of the movie, pixels (see `overlay_frame`).
        vmax_atoms: top of the depth colour scale.

    Returns:
        `path`.
    """
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"the movie is written as GIF; use a .gif path, not {path.name}")
    cols_by_frame = {int(k): g for k, g in columns.groupby("frame")} if len(columns) else {}
    ev_by_frame = {int(k): g for k, g in events.groupby("frame")} if events is not None and len(events) else {}
    species = set(columns.species) if len(columns) else set()
    scheme = species_scheme(species, vmax_atoms)
    empty = columns.iloc[:0]

    def write(tmp: Path) -> None:
        renderer = None
        with open(tmp, "wb") as fp:
            gif = _GifStream(fp, fps)
            for index, image in frames:
                index = int(index)
                image_ds, f = _downsample(image, max_side)
                cols = cols_by_frame.get(index, empty)
                ev = ev_by_frame.get(index)
                if renderer is None:
                    renderer = _OverlayRenderer(image_ds.shape, scheme, species)
                    first = next((g for g in cols_by_frame.values() if len(g)), empty)
                    renderer.set_marker_px(_marker_px(first, f))
                elif image_ds.shape != renderer.shape:
                    raise ValueError(f"frame {index} has shape {np.shape(image)}, unlike the first frame")
                gif.add(renderer.render(image_ds, f, cols, ev, _label(index, _frame_time(cols, ev))))
            if gif.n == 0:
                raise ValueError("no frames to write")
            gif.close()

    return atomic_write(path, write)
