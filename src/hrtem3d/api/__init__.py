"""The public Python API: open, segment, track and export from a notebook, all in memory.

A table in, tables out (as trackpy): `segment` gives the column table of one image
(`hrtem3d.contracts.COLUMN_FIELDS`: positions in pixels and Å, species, atoms per column,
confidence), `segment_movie` the tables of every frame with the drift, `track` links them,
denoises each column's depth in time and finds the events. Nothing is written to disk unless
asked (`write_model`). Lengths in Å, times in s, doses in e/Å².

>>> import hrtem3d
>>> p = hrtem3d.simulate_particle(seed=1)                 # a small CeO2 [110] particle, 1000 e/Å²
>>> cols = hrtem3d.segment(p.image, p.pixel_size_A)      # the shipped model
>>> list(cols.columns[:9]) == hrtem3d.COLUMN_FIELDS
True
>>> from hrtem3d.evaluate.metrics import match_columns
>>> bool((match_columns(p.truth, cols).pred_row >= 0).mean() > 0.8)   # columns found
True
>>> atoms = hrtem3d.columns_to_atoms(cols)             # an estimated 3D model (ase.Atoms)
>>> len(atoms) == int(cols.n_atoms.sum())
True
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hrtem3d.contracts import COLUMN_FIELDS
from hrtem3d.errors import HrtemError

if TYPE_CHECKING:  # the heavy modules (torch, pandas, ase) load on first use, so `import hrtem3d` stays quick
    import pandas as pd

    from hrtem3d.labels.scheme import ClassScheme
    from hrtem3d.segmentation.segmenter import Segmenter as Model

__all__ = ["ImageSource", "Model", "MovieColumns", "SimulatedParticle", "TrackResult",  # noqa: F822 (lazy names)
           "columns_to_atoms", "load_model", "open_image", "segment", "segment_frames", "segment_movie",
           "simulate_particle", "track", "write_model", "simulate_movie", "MovieConfig"]

#: Names served from their stage on first use: `Model` is the object `load_model` returns (a loaded
#: network with its class scheme and pixel size); the others are the stages' own functions.
_LAZY = {"Model": ("hrtem3d.segmentation.segmenter", "Segmenter"), "ImageSource": ("hrtem3d.io", "ImageSource"),
         "open_image": ("hrtem3d.io", "open_image"), "columns_to_atoms": ("hrtem3d.export.model3d", "columns_to_atoms"),
         "write_model": ("hrtem3d.export.model3d", "write_model"),
         "simulate_movie": ("hrtem3d.simulate.movie", "simulate_movie"),
         "MovieConfig": ("hrtem3d.simulate.movie", "MovieConfig")}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hrtem3d.api' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _segmenter_type():
    from hrtem3d.segmentation.segmenter import Segmenter

    return Segmenter


def load_model(path: str | Path | Any | None = None, *, metadata: dict | None = None, device: str | None = None,
               tta: int = 1, threads: int | None = None, compile: bool = False, backend: str = "auto",
               skip_vacuum: bool = True, lattice: str | None = None, contrast_gain: float | str = "auto") -> Model:
    """Load a model once, to pass to `segment`, `segment_movie` and `track` (cellpose's style).

    Args:
        path: a `*.safetensors` model file; None: the model shipped with hrtem3d; or a torch network
            in memory (e.g. just trained in a notebook), with its `metadata`.
        metadata: for an in-memory network: the metadata a model file holds, at least `scheme`
            (the class scheme as a dict) and `pixel_size_A` (Å, the sampling it was trained at);
            `normalization` ("relative" or "median/MAD") and `temperature` are used when present.
        device: "cpu" or "cuda" (default: CUDA when present).
        tta: test-time augmentation, 1, 2, 4 or 8 flips/rotations averaged (that many times slower).
        threads: torch CPU threads (None: torch's default); compile: `torch.compile` the network.
        backend: "auto" (ONNX Runtime on the CPU, PyTorch on CUDA), "onnx", "torch"
            or "int8" (`hrtem3d.model.runtime`).
        skip_vacuum: run the network only on boxes around what is not vacuum (`hrtem3d.segmentation.vacuum`);
            False segments the whole frame.
        lattice: for a model with lattice heads, "static", "vibrating" or "auto" (None: the model's
            default): which reading of the columns to use (see `Segmenter`).
        contrast_gain: how many times lower the images' lattice contrast is than the simulation's (the
            Stobbs factor, >= 1), or "auto": the contrast gate's reading of the whole image when it is sure
            the contrast is lower, else 1 unless a particle's counts read thinner than its size allows, then
            estimated from the particle (`hrtem3d.segmentation.gain`).

    Returns:
        a `Model` (`hrtem3d.segmentation.segmenter.Segmenter`): `.scheme`, `.pixel_size_A` (Å), `.meta`.

    >>> m = load_model()
    >>> m.pixel_size_A, m.scheme.species
    (0.16, ('Ce', 'O'))
    >>> same = load_model(m.model, metadata=m.meta)          # an in-memory network and its metadata
    >>> same.model is m.model
    True
    """
    if path is not None and not isinstance(path, (str, Path)):
        if metadata is None:
            raise HrtemError("an in-memory network needs its metadata: load_model(net, metadata={'scheme': ..., "
                             "'pixel_size_A': ...})")
        path = (path, metadata)
    return _segmenter_type()(path, device=device, tta=tta, threads=threads, compile=compile, backend=backend,
                             skip_vacuum=skip_vacuum, lattice=lattice, contrast_gain=contrast_gain)


@functools.lru_cache(maxsize=1)
def _shipped_model() -> Model:
    return load_model()


def _model(model: Model | str | Path | None) -> Model:
    if model is None:
        return _shipped_model()
    if isinstance(model, _segmenter_type()):
        return model
    return load_model(model)


def segment(image: Any, pixel_size_A: float | None = None, model: Model | str | Path | None = None, *,
            contrast: str = "bright", frame: int = 0) -> pd.DataFrame:
    """The column table of one image: every atomic column, its species and atoms in the column.

    Args:
        image: a 2D numpy or dask array, a HyperSpy Signal2D (pixel size from its axes; nm and
            µm are converted to Å), a single-image ImageSource or the path of a microscope file.
        pixel_size_A: Å per pixel; required for arrays, overrides a signal's or file's calibration.
        model: a `Model` from `load_model`, a model file (loaded for this call: for many images,
            load it once with `load_model`), or None for the shipped model (loaded once per process).
        contrast: "bright" (as recorded: raw counts have the polarity the model was trained on), "dark"
            (inverted), or "auto" (guessed on this image; only for processed images of unknown polarity).
        frame: the value of the table's `frame` field.

    Returns:
        the column table (COLUMN_FIELDS first: frame, column_id, x_px, y_px (pixels of `image`),
        x_A, y_A (Å), species, n_atoms, confidence (0..1); then p_column, p_<class>, intensity).
        `attrs["pixel_size_A"]` records the pixel size used.
    """
    from hrtem3d.api.signals import as_frames

    f = as_frames(image, pixel_size_A)
    if f.n_frames != 1:
        raise HrtemError(f"segment takes one image; this holds {f.n_frames} frames: use segment_movie")
    (_, block), = list(f.blocks(chunk=1))
    m = _model(model)
    m.set_contrast(contrast)
    cols = m.segment(block[0], f.pixel_size_A, frame=frame).columns
    cols.attrs["pixel_size_A"] = f.pixel_size_A
    return cols


@dataclass
class MovieColumns:
    """The column tables of a movie's frames, as `segment_movie` gives them to `track`.

    Attributes:
        columns: every frame's column table, with the class probabilities named `p_Ce3`... and the
            frame's drift `drift_x_A`, `drift_y_A` (Å, against the first segmented frame).
        frames: the segmented frame indices; drift_A: `[len(frames), 2]` drift (dx, dy) in Å.
        skipped: frames left out (NaN or Inf pixels).
        pixel_size_A: Å per pixel; frame_interval_s: s between frames (None when unknown);
        field_A: (width, height) of a frame in Å; scheme: the model's class scheme.
    """

    columns: pd.DataFrame
    frames: np.ndarray
    drift_A: np.ndarray
    pixel_size_A: float
    frame_interval_s: float | None
    field_A: tuple[float, float]
    scheme: ClassScheme
    skipped: list[int] = field(default_factory=list)


def segment_frames(source: Any, pixel_size_A: float | None = None, model: Model | str | Path | None = None, *,
                   contrast: str = "bright", start: int = 0, stop: int | None = None, chunk: int = 16
                   ) -> Iterator[tuple[int, pd.DataFrame, tuple[float, float]]]:
    """Segment a movie frame by frame: yields `(frame, column table, (dx, dy) drift in Å)`.

    Streams: `source` (a 3D numpy or dask array `[frame, y, x]`, a HyperSpy stack, an ImageSource
    or a file) is read `chunk` frames at a time (a dask array along its own chunks), never whole.
    The contrast (with "auto") and the drift reference are fixed on the first good frame; frames
    with NaN or Inf pixels are skipped with a warning. Other arguments as `segment_movie`.
    """
    from hrtem3d.api.signals import as_frames

    skipped: list[int] = []
    for item in _segment_frames(as_frames(source, pixel_size_A), _model(model), contrast, start, stop, chunk,
                                skipped):
        while skipped:
            warnings.warn(f"frame {skipped.pop()} holds NaN or Inf pixels: skipped", stacklevel=2)
        yield item
    for i in skipped:
        warnings.warn(f"frame {i} holds NaN or Inf pixels: skipped", stacklevel=2)


def _segment_frames(f, m: Model, contrast: str, start: int, stop: int | None, chunk: int, skipped: list[int]):
    from hrtem3d.jobs.track_movie import track_frame
    from hrtem3d.segmentation.gain import cap_at_estimated_gain
    from hrtem3d.tracking.drift import drift_reference

    m.set_contrast(contrast)
    reference, gain, estimated = None, None, False  # the first good frame's contrast gain holds for the movie
    reading, read = None, None  # and its lattice reading (a routed model) and the contrast gate's (g, sigma)
    for first, block in f.blocks(start, stop, chunk=chunk):
        for k, image in enumerate(block):
            if not np.isfinite(image).all():
                skipped.append(first + k)
                continue
            table, d, work = track_frame(m, image, index=first + k, pixel_size_A=f.pixel_size_A, reference=reference,
                                         gain=gain, lattice=reading, contrast_read=read)
            if gain is None:
                gain, reading = table.attrs["contrast_gain"], table.attrs["lattice_reading"]
                read = table.attrs["contrast_read"]
                estimated = m.contrast_gain == "auto" and gain > 1
            elif estimated:  # capped as the first frame's were
                table = cap_at_estimated_gain(table)
            reference = drift_reference(work) if reference is None else reference
            yield first + k, table, d


def segment_movie(source: Any, pixel_size_A: float | None = None, model: Model | str | Path | None = None, *,
                  contrast: str = "bright", start: int = 0, stop: int | None = None, chunk: int = 16,
                  frame_interval_s: float | None = None) -> MovieColumns:
    """Segment every frame of a movie held in memory, lazily or in a file; the tables for `track`.

    Args:
        source: a `[frame, y, x]` numpy or dask array, a HyperSpy Signal2D stack (pixel size and
            frame interval from its axes), an ImageSource or a file path.
        pixel_size_A: Å per pixel (required for arrays); model: as `segment`.
        contrast: "bright", "dark" or "auto" (decided on the first good frame, kept for the movie).
        start, stop: the frames [start, stop) to segment; chunk: frames read at a time.
        frame_interval_s: s between frames; overrides the source's.

    Returns:
        a `MovieColumns`: the columns of every frame, frames, drift (Å) and calibration.
    """
    import pandas as pd

    from hrtem3d.api.signals import as_frames

    f = as_frames(source, pixel_size_A, frame_interval_s)
    m = _model(model)
    tables, frames, drift, skipped = [], [], [], []
    for i, table, d in _segment_frames(f, m, contrast, start, stop, chunk, skipped):
        tables.append(table)
        frames.append(i)
        drift.append(d)
    if skipped:
        warnings.warn(f"skipped frames {skipped}: NaN or Inf pixels", stacklevel=2)
    if not frames:
        raise HrtemError("no frame could be segmented (every frame holds NaN or Inf pixels)")
    ny, nx = f.shape
    return MovieColumns(columns=pd.concat(tables, ignore_index=True), frames=np.asarray(frames, int),
                        drift_A=np.asarray(drift, float).reshape(-1, 2), pixel_size_A=f.pixel_size_A,
                        frame_interval_s=f.frame_interval_s, field_A=(nx * f.pixel_size_A, ny * f.pixel_size_A),
                        scheme=m.scheme, skipped=skipped)


@dataclass
class TrackResult:
    """What `track` finds (tables as `hrtem3d track` writes them; see `hrtem3d.contracts`).

    Attributes:
        columns: every frame's columns with a stable `column_id` (-1: seen too briefly to be a
            track), `time_s`, the denoised `n_atoms`, `confidence` and the single-frame `n_atoms_raw`.
        tracks: one row per tracked column (drift-corrected position, first/last frame, depths).
        events: one row per lasting depth change (frame, time_s, kind, n_before, n_after...).
    """

    columns: pd.DataFrame
    tracks: pd.DataFrame
    events: pd.DataFrame


def track(columns: MovieColumns | pd.DataFrame, pixel_size_A: float | None = None,
          frame_interval_s: float | None = None, *, frames: np.ndarray | None = None,
          drift_A: np.ndarray | None = None, field_A: tuple[float, float] | None = None,
          model: Model | str | Path | None = None, search_range_A: float = 0.6, memory: int = 5,
          temporal: Any = None) -> TrackResult:
    """Link a movie's columns through time, denoise each column's depth, find the events; in memory.

    Args:
        columns: `segment_movie`'s result, or its `.columns` table (with the `p_*` class
            probabilities and, optionally, `drift_x_A`, `drift_y_A`).
        pixel_size_A: Å per pixel (taken from a MovieColumns when not given).
        frame_interval_s: s between frames; None: `time_s` counts frames.
        frames, drift_A, field_A: the segmented frames, their drift `[n, 2]` (Å) and the frame's
            (width, height) in Å; from a MovieColumns, else from the table (field: the columns'
            extent plus 2 Å).
        model: the model that segmented the frames (for its class scheme; None: the shipped one).
        search_range_A: largest move of a column between frames after drift correction (Å).
        memory: frames a column may be missed and keep its id.
        temporal: a `hrtem3d.tracking.temporal.TemporalModel` (the depth HMM and event thresholds).

    Returns:
        a `TrackResult` of columns, tracks and events.

    A still particle, three identical frames 0.1 s apart: every column is one track, nothing happens.

    >>> p = simulate_particle(seed=1)
    >>> movie = np.stack([p.image] * 3)                      # [frame, y, x]
    >>> r = track(segment_movie(movie, p.pixel_size_A, frame_interval_s=0.1))
    >>> n = len(segment(p.image, p.pixel_size_A))
    >>> len(r.tracks) == n, bool((r.tracks.n_frames == 3).all()), len(r.events), float(r.columns.time_s.max())
    (True, True, 0, 0.2)
    """
    from hrtem3d.tracking.analysis import analyze_movie

    if isinstance(columns, MovieColumns):
        mc = columns
        pixel_size_A = pixel_size_A or mc.pixel_size_A
        frame_interval_s = frame_interval_s or mc.frame_interval_s
        frames = mc.frames if frames is None else frames
        drift_A = mc.drift_A if drift_A is None else drift_A
        field_A = field_A or mc.field_A
        scheme = mc.scheme
        cols = mc.columns
    else:
        cols = columns
        scheme = _scheme(model)
    if pixel_size_A is None:
        raise HrtemError("track needs pixel_size_A (Å per pixel) with a plain column table")
    missing = [c for c in COLUMN_FIELDS if c not in cols]
    if missing or not any(str(c).startswith("p_" + scheme.species[0]) for c in cols.columns):
        raise HrtemError(f"the table lacks {', '.join(missing) or 'the class probabilities p_Ce1...'}: pass "
                         "segment_movie's result (or its .columns)")
    if frames is None:
        frames = np.unique(cols["frame"].to_numpy())
    frames = np.asarray(frames, int)
    if drift_A is None:
        per = cols.groupby("frame")[["drift_x_A", "drift_y_A"]].first() if "drift_x_A" in cols else None
        drift_A = per.reindex(frames).fillna(0.0).to_numpy() if per is not None else np.zeros((len(frames), 2))
    if field_A is None:
        field_A = (float(cols["x_A"].max()) + 2.0, float(cols["y_A"].max()) + 2.0) if len(cols) else (1.0, 1.0)
    times = frames * (frame_interval_s if frame_interval_s else 1.0)
    out = analyze_movie(cols, frames=frames, drift_A=np.asarray(drift_A, float).reshape(-1, 2), field_A=field_A,
                        times_s=times.astype(float), pixel_size_A=pixel_size_A, scheme=scheme,
                        search_range_A=search_range_A, memory=memory, temporal=temporal)
    return TrackResult(*out)


def _scheme(model: Model | str | Path | None) -> ClassScheme:
    """A model's class scheme, read from its metadata only (the network is not built for a path)."""
    from hrtem3d.jobs.track_movie import model_scheme

    if isinstance(model, _segmenter_type()):
        return model.scheme
    return model_scheme(str(model) if model else None)


@dataclass
class SimulatedParticle:
    """A simulated HRTEM image of one CeO2 [110] particle and its ground truth.

    Attributes:
        image: float32 `[y, x]` noisy counts (electrons per pixel); clean: the noise-free intensity.
        pixel_size_A: Å per pixel; dose_e_per_A2: the dose (e/Å²).
        truth: one row per true column: species, x_A, y_A, x_px, y_px (pixel (i, j) sits at
            (y, x) = (i, j) x pixel size), n_atoms.
        atoms: the particle (ase.Atoms, Å).
    """

    image: np.ndarray
    clean: np.ndarray
    pixel_size_A: float
    dose_e_per_A2: float
    truth: pd.DataFrame
    atoms: Any


def simulate_particle(*, seed: int = 0, diameter_A: tuple[float, float] = (16.0, 19.0),
                      dose_e_per_A2: float = 1000.0, size_px: int = 160, pixel_size_A: float = 0.16,
                      potential_sampling_A: float = 0.08) -> SimulatedParticle:
    """A quick example: one random CeO2 particle in [110], imaged by multislice (abTEM) with shot noise.

    About a second on a CPU at the defaults (a 25.6 Å field of 160 pixels at 0.16 Å, the shipped
    model's sampling). Optics: 300 kV, C1 6 nm, C3 -10 µm (as `hrtem3d demo`); the same seed gives
    the same particle and noise.

    >>> p = simulate_particle(seed=3, size_px=128, diameter_A=(12.0, 14.0))
    >>> p.image.shape, bool(p.truth.n_atoms.min() >= 1), sorted(set(p.truth.species))
    ((128, 128), True, ['Ce', 'O'])
    """
    from hrtem3d.simulate import Detector, MultisliceConfig, detect, exit_wave, image_intensity
    from hrtem3d.simulate.movie import default_optics
    from hrtem3d.structure import ParticleEnvelope, column_table, random_particle

    ms = MultisliceConfig(potential_sampling_A=potential_sampling_A, store_sampling_A=pixel_size_A,
                          store_gpts=size_px)
    env = ParticleEnvelope(diameter_A=tuple(diameter_A), tilt_deg=0.0, adatoms=0, shift_A=0.5)
    try:
        ms.validate()
        env.validate()
        if diameter_A[1] + 4 > ms.cell_A:
            raise ValueError(f"a {diameter_A[1]:g} Å particle does not fit a {ms.cell_A:g} Å field; raise size_px")
        rng = np.random.default_rng(seed)
        atoms, params = random_particle(rng, env, cell_A=(ms.cell_A, ms.cell_A))
    except ValueError as e:
        raise HrtemError(f"impossible particle settings: {e}") from None
    clean = image_intensity(exit_wave(atoms, ms, seed=params.seed), default_optics(), ms.store_sampling_A)
    image = detect(clean, Detector(dose_e_per_A2=dose_e_per_A2, mtf_half=1.0), ms.store_sampling_A, rng)
    cols = column_table(atoms)
    truth = cols.assign(x_px=cols.x_A / pixel_size_A, y_px=cols.y_A / pixel_size_A)
    return SimulatedParticle(image=np.asarray(image, np.float32), clean=np.asarray(clean, np.float32),
                             pixel_size_A=float(pixel_size_A), dose_e_per_A2=float(dose_e_per_A2), truth=truth,
                             atoms=atoms)
