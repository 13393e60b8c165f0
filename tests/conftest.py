"""Shared fixtures: tiny simulation settings so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


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
