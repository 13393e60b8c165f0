"""Shared fixtures: tiny simulation settings so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# exported ONNX graphs (hrtem3d.model.runtime) go to a cache of this test session, not the user's
os.environ.setdefault("HRTEM3D_CACHE", tempfile.mkdtemp(prefix="hrtem3d-cache-"))

# The shared test data (real microscope files) sits next to the repository as ../shared;
# HRTEM3D_SHARED points elsewhere. Missing data skips its tests, except in CI (CI=true), where it fails.
SHARED = Path(os.environ.get("HRTEM3D_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MICROSCOPE = SHARED / "testdata" / "microscope"


@pytest.fixture(scope="session")
def microscope_dir() -> Path:
    """The real microscope files; skips when missing, fails when missing under CI=true."""
    if MICROSCOPE.is_dir():
        return MICROSCOPE
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the shared test data is missing at {MICROSCOPE} (set HRTEM3D_SHARED)",
                    pytrace=False)
    pytest.skip(f"microscope test data not found at {MICROSCOPE}")


def tiny_settings(seed: int = 0):
    """A 15 Å cell with 8-10 Å particles at 0.08 Å potential sampling (about 0.1 s a structure)."""
    from hrtem3d.data.generate import SimulationSettings

    s = SimulationSettings(seed=seed)
    s.multislice.potential_sampling_A = 0.08
    s.multislice.store_sampling_A = 0.16
    s.multislice.store_gpts = 96
    s.particles.diameter_A = (8.0, 10.0)
    s.particles.shift_A = 0.5
    return s


TINY_CLI = ["--gpts", "96", "--potential-sampling", "0.08", "--min-diameter", "8", "--max-diameter", "10"]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A finished 4-structure dataset store (simulated once per test session)."""
    from hrtem3d.data.generate import simulate_dataset

    path = tmp_path_factory.mktemp("store") / "tiny.zarr"
    s = tiny_settings(seed=3)
    s.particles.shift_A = 0.0
    simulate_dataset(path, 4, s, workers=0, progress=False)
    return path


@pytest.fixture(scope="session")
def ten_store(tmp_path_factory):
    """A finished 10-structure store: the smallest with a validation split (every 10th structure)."""
    from hrtem3d.data.generate import simulate_dataset

    path = tmp_path_factory.mktemp("store10") / "ten.zarr"
    simulate_dataset(path, 10, tiny_settings(seed=4), workers=0, progress=False)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_model(tiny_store, tmp_path_factory):
    """A (badly) trained tiny U-Net on the tiny store: enough to exercise the machinery."""
    from hrtem3d.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    cfg = TrainConfig(steps=4, batch=2, crop=64, widths=(4, 8), val_every=4, val_samples=2, val_fraction=0.25,
                      checkpoint_every=4, workers=0, warmup=1)
    train(tiny_store, out, cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def shipped_movie():
    """A 4-frame simulated movie (seed 101, outside the tuning block) with ground truth, for the shipped model.

    320 x 320 pixels of 0.16 Å, 1000 e/Å² a frame, a ~30 Å particle, three events (frames 1, 2, 3) and a
    fast drift of 0.4 Å/frame whose x and y parts differ in sign and size (about +0.33, -0.21 Å/frame):
    about 7 s to simulate.
    """
    from hrtem3d.simulate.movie import MovieConfig, simulate_movie

    return simulate_movie(MovieConfig(n_frames=4, event_frames=(1, 2, 3), drift_A_per_frame=0.4), seed=101)


@pytest.fixture(scope="session")
def shipped_segmenter():
    """The model shipped with hrtem3d (bright contrast, as simulated)."""
    from hrtem3d.segmentation.segmenter import Segmenter

    return Segmenter(contrast="bright")
