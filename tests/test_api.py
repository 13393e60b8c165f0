"""The public API (`import hrtem3d`): numpy, dask and HyperSpy inputs, in-memory movies and models.

Every result is checked against the simulation's ground truth or against another path through the
package (the file-based `track` job, the CLI), never against numbers written down here.
"""

from __future__ import annotations

import doctest
import inspect
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hrtem3d
from hrtem3d.errors import HrtemError
from hrtem3d.evaluate.metrics import match_columns, movie_depth_accuracy


@pytest.fixture(scope="module")
def particle():
    return hrtem3d.simulate_particle(seed=1)


@pytest.fixture(scope="module")
def model():
    return hrtem3d.load_model()


@pytest.fixture(scope="module")
def movie():
    from test_movie_sim import tiny_config

    from hrtem3d.simulate.movie import simulate_movie

    return simulate_movie(tiny_config(), seed=1)


def _recall_exact(truth: pd.DataFrame, cols: pd.DataFrame) -> tuple[float, float]:
    m = match_columns(truth, cols)
    hit = m.pred_row >= 0
    return float(hit.mean()), float((hit & (m.pred_n == m.n_atoms) & (m.pred_species == m.species)).mean())


def test_import_is_quick_and_the_api_names_the_functions():
    code = ("import sys, hrtem3d; heavy = [m for m in ('torch', 'pandas', 'ase', 'hyperspy') if m in sys.modules]; "
            "import hrtem3d.segmentation.segmenter as s, hrtem3d.tracking.linking as k; "
            "from hrtem3d.segmentation import segmenter; "
            "print(heavy, hrtem3d.segment is hrtem3d.api.segment, s is segmenter, "
            "hrtem3d.tracking.linking is k, hrtem3d.track is hrtem3d.api.track)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True", "True", "True", "True"]  # nothing heavy at import; stages stay reachable
    assert "pixel_size_A" in inspect.signature(hrtem3d.segment).parameters
    assert hrtem3d.segment.__doc__ == hrtem3d.api.segment.__doc__ and "Å" in hrtem3d.track.__doc__
    for name in hrtem3d.__all__:
        assert getattr(hrtem3d, name) is not None, name
    assert issubclass(HrtemError, ValueError)


def test_doctests_of_every_module_run():
    """Every docstring example in the package runs (the napari front end needs Qt: tested apart)."""
    import importlib
    import pkgutil

    import hrtem3d

    attempted = {}
    for info in pkgutil.walk_packages(hrtem3d.__path__, "hrtem3d."):
        if info.name.startswith("hrtem3d.napari"):
            continue
        mod = importlib.import_module(info.name)
        r = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert r.failed == 0, info.name
        attempted[info.name] = r.attempted
    for name in ("hrtem3d.api", "hrtem3d.api.signals", "hrtem3d.errors", "hrtem3d.contracts",
                 "hrtem3d.data.dihedral", "hrtem3d.segmentation.confidence"):
        assert attempted[name] > 0, name  # the examples these modules document are found and run


def test_segment_numpy_dask_and_hyperspy_agree_with_the_truth(particle, model, tmp_path):
    import dask.array as da
    import hyperspy.api as hs

    cols = hrtem3d.segment(particle.image, particle.pixel_size_A, model)
    recall, exact = _recall_exact(particle.truth, cols)
    assert recall > 0.85 and exact > 0.6, (recall, exact)
    assert list(cols.columns[:9]) == hrtem3d.COLUMN_FIELDS and (cols.frame == 0).all()

    lazy = hrtem3d.segment(da.from_array(particle.image, chunks=64), particle.pixel_size_A, model)
    pd.testing.assert_frame_equal(lazy, cols)
    np.save(tmp_path / "p.npy", particle.image)  # a file, by path and opened (ImageSource)
    pd.testing.assert_frame_equal(hrtem3d.segment(tmp_path / "p.npy", particle.pixel_size_A, model), cols)
    src = hrtem3d.open_image(tmp_path / "p.npy", pixel_size_A=particle.pixel_size_A)
    pd.testing.assert_frame_equal(hrtem3d.segment(src, model=model), cols)

    sig = hs.signals.Signal2D(particle.image)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = particle.pixel_size_A / 10, "nm"  # HyperSpy in nm, hrtem3d in Å
    from_signal = hrtem3d.segment(sig, model=model)
    assert from_signal.attrs["pixel_size_A"] == pytest.approx(particle.pixel_size_A)
    pd.testing.assert_frame_equal(from_signal, cols)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.units = particle.pixel_size_A / 1e4, "µm"
    pd.testing.assert_frame_equal(hrtem3d.segment(sig, model=model), cols)

    stack = hs.signals.Signal2D(np.stack([particle.image, particle.image])).as_lazy()  # a lazy movie
    for ax in stack.axes_manager.signal_axes:
        ax.scale, ax.units = particle.pixel_size_A / 10, "nm"
    stack.axes_manager.navigation_axes[0].scale, stack.axes_manager.navigation_axes[0].units = 250, "ms"
    mc = hrtem3d.segment_movie(stack, model=model)
    assert mc.frame_interval_s == pytest.approx(0.25) and mc.pixel_size_A == pytest.approx(particle.pixel_size_A)
    first = mc.columns[mc.columns.frame == 0]
    np.testing.assert_allclose(first[["x_px", "y_px", "n_atoms"]].to_numpy(), cols[["x_px", "y_px", "n_atoms"]])

    bare = hs.signals.Signal2D(particle.image)  # no calibration: one clear error, then the override works
    with pytest.raises(HrtemError, match="pixel_size_A"):
        hrtem3d.segment(bare, model=model)
    pd.testing.assert_frame_equal(hrtem3d.segment(bare, particle.pixel_size_A, model), cols)
    with pytest.raises(HrtemError, match="pixel_size_A"):
        hrtem3d.segment(particle.image, model=model)
    with pytest.raises(HrtemError, match="segment_movie"):
        hrtem3d.segment(np.stack([particle.image] * 2), particle.pixel_size_A, model)


def test_columns_drawn_back_on_a_hyperspy_signal(particle, model):
    import hyperspy.api as hs

    cols = hrtem3d.segment(particle.image, particle.pixel_size_A, model)
    sig = hs.signals.Signal2D(particle.image)
    for ax in sig.axes_manager.signal_axes:
        ax.scale, ax.offset, ax.units = particle.pixel_size_A / 10, 1.5, "nm"
    m = hrtem3d.add_markers(sig, cols)
    assert "Markers" in sig.metadata  # permanent: saved with the signal
    offsets = m.get_current_kwargs()["offsets"]
    assert len(offsets) == len(cols)
    np.testing.assert_allclose(offsets[:, 0], 1.5 + cols.x_px * particle.pixel_size_A / 10)
    np.testing.assert_allclose(offsets[:, 1], 1.5 + cols.y_px * particle.pixel_size_A / 10)
    colour = m.get_current_kwargs()["color"]
    deep, shallow = cols.n_atoms.to_numpy().argmax(), cols.n_atoms.to_numpy().argmin()
    assert not np.allclose(colour[deep], colour[shallow])  # coloured by atoms in the column

    stack = hs.signals.Signal2D(np.stack([particle.image] * 3))
    two = pd.concat([cols.assign(frame=0), cols.iloc[:5].assign(frame=2)])
    ms = hrtem3d.add_markers(stack, two)
    for i, n in ((0, len(cols)), (1, 0), (2, 5)):
        stack.axes_manager.indices = (i,)  # each frame shows its own columns
        assert len(ms.get_current_kwargs()["offsets"]) == n == len(ms.get_current_kwargs()["color"])


def test_in_memory_network_gives_the_shipped_models_table(particle, model):
    same = hrtem3d.load_model(model.model, metadata=model.meta)
    pd.testing.assert_frame_equal(hrtem3d.segment(particle.image, particle.pixel_size_A, same),
                                  hrtem3d.segment(particle.image, particle.pixel_size_A, model))
    with pytest.raises(HrtemError, match="metadata"):
        hrtem3d.load_model(model.model)
    with pytest.raises(HrtemError, match="pixel_size_A"):
        hrtem3d.load_model(model.model, metadata={"scheme": model.meta["scheme"]})


class _Reads:
    """An array that records how many frames each read asks for (what dask passes to it)."""

    def __init__(self, a: np.ndarray):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        block = self.a[key]
        self.reads.append(block.shape[0] if block.ndim == 3 else 1)
        return block


def test_movie_streams_from_dask_and_tracks_in_memory_as_the_track_job(movie, model, tmp_path):
    import dask.array as da

    from hrtem3d.jobs.track_movie import TrackSettings, track_movie

    frames = movie.frames
    reads = _Reads(frames)
    lazy = da.from_array(reads, chunks=(3, -1, -1), asarray=False)
    mc = hrtem3d.segment_movie(lazy, movie.pixel_size_A, model, frame_interval_s=movie.frame_interval_s)
    assert max(reads.reads) <= 3 and sum(reads.reads) == len(frames)  # chunk by chunk, never the whole movie
    assert list(mc.frames) == list(range(len(frames))) and mc.drift_A.shape == (len(frames), 2)
    drift_err = np.abs((mc.drift_A - mc.drift_A[0]) - (movie.drift_A - movie.drift_A[0])).max()
    assert drift_err < 0.3, drift_err  # the measured drift follows the true one (Å; linking allows 0.6 Å)
    plain = hrtem3d.segment_movie(frames, movie.pixel_size_A, model, frame_interval_s=movie.frame_interval_s)
    pd.testing.assert_frame_equal(plain.columns, mc.columns)

    r = hrtem3d.track(mc)
    assert set(r.columns.columns) >= {"time_s", "n_atoms_raw", "column_id"}
    np.testing.assert_allclose(r.columns.time_s, r.columns.frame * movie.frame_interval_s)
    n_true = int((movie.truth.frame == 0).sum())
    assert 0.8 * n_true <= (r.tracks.n_frames == len(frames)).sum() <= 1.1 * n_true
    acc = movie_depth_accuracy(r.columns, movie.truth)
    assert acc.denoised.mean() >= acc.single_frame.mean() and (acc.denoised > 0.8).all(), acc  # depths in time

    # the file-based job on the same movie finds the same tables (its own reading, chunking and resuming)
    path = tmp_path / "movie.npy"
    np.save(path, frames)
    track_movie(path, tmp_path / "out", TrackSettings(pixel_size_A=movie.pixel_size_A, chunk=3,
                                                      fps=1 / movie.frame_interval_s), progress=False, figures=False)
    job = pd.read_parquet(tmp_path / "out" / "columns.parquet")
    mine = r.columns.reset_index(drop=True)
    pd.testing.assert_frame_equal(mine[job.columns], job.reset_index(drop=True), check_dtype=False, atol=1e-5)
    pd.testing.assert_frame_equal(r.events.reset_index(drop=True),
                                  pd.read_csv(tmp_path / "out" / "events.csv"), check_dtype=False, atol=1e-3)

    # a plain table works too: drift from its columns, the field from the columns' extent
    again = hrtem3d.track(mc.columns, movie.pixel_size_A, movie.frame_interval_s, field_A=mc.field_A)
    pd.testing.assert_frame_equal(again.tracks, r.tracks)
    with pytest.raises(HrtemError, match="class probabilities"):
        hrtem3d.track(mc.columns[hrtem3d.COLUMN_FIELDS], movie.pixel_size_A)


def test_export_3d_in_memory_keeps_every_atom(particle, model):
    cols = hrtem3d.segment(particle.image, particle.pixel_size_A, model)
    atoms = hrtem3d.columns_to_atoms(cols)
    assert len(atoms) == cols.n_atoms.sum()
    assert atoms.get_chemical_symbols().count("Ce") == cols.n_atoms[cols.species == "Ce"].sum()
