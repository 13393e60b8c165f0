"""hrtem3d: atoms in every atomic column of HRTEM images and movies of CeO2 nanoparticles ([110]).

The public API (`hrtem3d.api`), imported on first use so that `import hrtem3d` stays quick:

- `open_image(path)`: a microscope file, lazily, with its pixel size (Å) and frame interval (s);
- `load_model(path=None)`: the shipped model, a model file, or a network in memory;
- `segment(image, pixel_size_A)`: the column table of one image (pandas);
- `segment_movie(source, pixel_size_A)`, `segment_frames(...)`: a movie, streamed frame by frame;
- `track(movie_columns)`: columns linked in time, denoised depths, events (`TrackResult`);
- `columns_to_atoms(columns)`, `write_model(...)`: an estimated 3D model (ase);
- `simulate_particle()`: a quick simulated image with its ground truth; `simulate_movie(MovieConfig())`:
  an in-situ movie with known events (`hrtem3d.simulate.movie`);
- `to_markers(columns, signal)`, `add_markers(signal, columns)`: columns drawn on a HyperSpy signal.

Inputs: numpy and dask arrays, HyperSpy Signal2D, `ImageSource`, file paths. Lengths in Å, times in s.
"""

import importlib as _importlib

from hrtem3d._version import __version__
from hrtem3d.api import (  # light: the heavy modules load on first use
    MovieColumns,
    SimulatedParticle,
    TrackResult,
    load_model,
    segment,
    segment_frames,
    segment_movie,
    simulate_particle,
    track,
)

_LAZY = {"Model": "hrtem3d.api", "ImageSource": "hrtem3d.api", "open_image": "hrtem3d.api",
         "columns_to_atoms": "hrtem3d.api", "write_model": "hrtem3d.api", "simulate_movie": "hrtem3d.api",
         "MovieConfig": "hrtem3d.api",
         "to_markers": "hrtem3d.api.signals", "add_markers": "hrtem3d.api.signals",
         "as_frames": "hrtem3d.api.signals",
         "HrtemError": "hrtem3d.errors", "COLUMN_FIELDS": "hrtem3d.contracts", "TRACK_FIELDS": "hrtem3d.contracts",
         "EVENT_FIELDS": "hrtem3d.contracts"}

__all__ = ["MovieColumns", "SimulatedParticle", "TrackResult", "__version__", "load_model", "segment",
           "segment_frames", "segment_movie", "simulate_particle", "track", *sorted(_LAZY)]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hrtem3d' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
