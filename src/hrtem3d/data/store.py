"""The dataset store: one zarr v3 group, one sub-group per structure.

Layout::

    OUT.zarr/                     attrs: format, format_version, package_version, settings
      structures/sNNNNNN/         attrs: complete, index, params, columns (the column table)
        exit_wave  complex64 [n_configs, ny, nx]   (Å sampling in the root settings)
        cls        uint8     [ny, nx]              target class map
        alpha      uint8     [ny, nx]              target softness x 255

A structure counts only once its `complete` attribute is set, which is written
last; anything else found on resume is deleted and simulated again.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from hrtem3d._version import __version__
from hrtem3d.errors import HrtemError

FORMAT = "hrtem3d-dataset"
FORMAT_VERSION = 1


def structure_name(index: int) -> str:
    return f"s{index:06d}"


def create_or_open(path: str | Path, settings: dict) -> zarr.Group:
    """Open the store at `path` for writing, creating it with `settings` if new.

    Raises HrtemError if the store exists with another format version or other settings.
    """
    path = Path(path)
    if path.exists() and not (path / "zarr.json").exists():
        raise HrtemError(f"{path} exists and is not a zarr store; choose a new output path")
    settings = json.loads(json.dumps(settings))
    try:
        if (path / "zarr.json").exists():
            root = zarr.open_group(str(path), mode="r+", zarr_format=3)
            check_format(root, path)
            old = root.attrs.get("settings")
            if old != settings:
                diff = sorted(k for k in set(old or {}) | set(settings) if (old or {}).get(k) != settings.get(k))
                raise HrtemError(f"{path} was simulated with other settings ({', '.join(diff)}); "
                                 "rerun with the same settings to resume, or write to a new path")
            return root
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                           "package_version": __version__, "settings": settings})
        root.create_group("structures")
        return root
    except OSError as e:
        raise _os_error(e, path) from None


def open_store(path: str | Path) -> zarr.Group:
    """Open an existing store for reading (checks format and version)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise HrtemError(f"{path} is not an hrtem3d dataset (no zarr.json); make one with `hrtem3d simulate`")
    try:
        root = zarr.open_group(str(path), mode="r", zarr_format=3)
    except Exception as e:  # zarr raises several types for damaged metadata
        raise HrtemError(f"{path} cannot be opened as a zarr v3 store ({e}); simulate it again") from None
    check_format(root, path)
    return root


def check_format(root: zarr.Group, path: Path) -> None:
    attrs = dict(root.attrs)
    if attrs.get("format") != FORMAT:
        raise HrtemError(f"{path} is not an hrtem3d dataset store; make one with `hrtem3d simulate`")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise HrtemError(f"{path} has dataset format version {attrs.get('format_version')}, this hrtem3d "
                         f"({__version__}) reads version {FORMAT_VERSION}; simulate it again")


def completed(root: zarr.Group) -> set[int]:
    """Indices of the structures whose writing finished."""
    out = set()
    for name, grp in root["structures"].groups():
        if grp.attrs.get("complete"):
            out.add(int(name[1:]))
    return out


def remove_incomplete(root: zarr.Group) -> list[int]:
    """Delete half-written structures (from an interrupted run); returns their indices."""
    bad = [name for name, grp in root["structures"].groups() if not grp.attrs.get("complete")]
    for name in bad:
        del root["structures"][name]
    return [int(n[1:]) for n in bad]


def write_structure(root: zarr.Group, result: dict) -> None:
    """Write one simulated structure; `complete` is set last."""
    name = structure_name(result["index"])
    grp_parent = root["structures"]
    try:
        if name in grp_parent:
            del grp_parent[name]
        grp = grp_parent.create_group(name)
        wave = result["exit_wave"]
        grp.create_array("exit_wave", data=wave, chunks=wave.shape)
        grp.create_array("cls", data=result["cls"], chunks=result["cls"].shape)
        grp.create_array("alpha", data=result["alpha"], chunks=result["alpha"].shape)
        cols = result["columns"]
        grp.attrs.update({"index": result["index"], "params": result["params"],
                          "columns": {k: cols[k].tolist() for k in cols.columns},
                          "n_atoms_total": int(cols["n_atoms"].sum())})
        grp.attrs["complete"] = True
    except OSError as e:
        raise _os_error(e, Path(str(root.store))) from None


def read_columns(grp: zarr.Group) -> pd.DataFrame:
    """The ground-truth column table of one structure (Å in the stored cell frame)."""
    return pd.DataFrame(grp.attrs["columns"])


def _os_error(e: OSError, path: Path) -> HrtemError:
    if e.errno == errno.ENOSPC:
        return HrtemError(f"disk full while writing {path}; free space and rerun the same command to resume")
    if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return HrtemError(f"cannot write {path} ({e.strerror}); choose a writable output path")
    return HrtemError(f"cannot write {path}: {e}")


def settings_of(root: zarr.Group) -> dict:
    return dict(root.attrs["settings"])


def structure_groups(root: zarr.Group) -> list[zarr.Group]:
    """Sorted completed structure groups."""
    done = sorted(completed(root))
    return [root["structures"][structure_name(i)] for i in done]


def alpha_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 255.0


def write_films(root: zarr.Group, waves: np.ndarray, thickness_A: float) -> None:
    """Store a bank of support-film exit waves `[n, ny, nx]` (see `hrtem3d.simulate.film`); `complete` set last."""
    try:
        if "films" in root:
            del root["films"]
        arr = root.create_array("films", data=waves, chunks=(1,) + waves.shape[1:])
        arr.attrs.update({"thickness_A": float(thickness_A), "complete": True})
    except OSError as e:
        raise _os_error(e, Path(str(root.store))) from None


def film_count(root: zarr.Group) -> int:
    """Number of support-film exit waves the store holds (0 without a finished bank); reads no data."""
    if "films" not in root or not root["films"].attrs.get("complete"):
        return 0
    return int(root["films"].shape[0])


def read_films(root: zarr.Group) -> tuple[np.ndarray, float]:
    """(film exit waves `[n, ny, nx]`, thickness of each in Å); an empty bank if the store has none."""
    if film_count(root) == 0:
        return np.zeros((0, 1, 1), np.complex64), 0.0
    arr = root["films"]
    return arr[:], float(arr.attrs["thickness_A"])
