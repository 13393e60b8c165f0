"""benchmarks/pair_store.py: the same particles static and with frozen phonons, joined into one training store."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytest.importorskip("abtem")

import pair_store  # noqa: E402
from conftest import tiny_settings  # noqa: E402

from hrtem3d.data import store  # noqa: E402
from hrtem3d.data.dataset import HrtemDataset  # noqa: E402
from hrtem3d.data.generate import simulate_dataset  # noqa: E402


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same 3 tiny particles, static and with 2 frozen-phonon configurations (seed 5)."""
    root = tmp_path_factory.mktemp("pairs")
    static, tds = root / "static.zarr", root / "tds.zarr"
    simulate_dataset(static, 3, tiny_settings(seed=5), workers=0, progress=False)
    s = tiny_settings(seed=5)
    s.multislice.frozen_phonons = 2
    simulate_dataset(tds, 3, s, workers=0, progress=False)
    return root, static, tds


def test_pairs_hold_both_versions_of_each_particle(twins):
    root, static, tds = twins
    out = root / "mix.zarr"
    assert pair_store.pair_stores(static, tds, out, offset=100) == (3, 3)
    mix = store.open_store(out)
    groups = {int(g.attrs["index"]): g for g in store.structure_groups(mix)}
    assert sorted(groups) == [0, 1, 2, 100, 101, 102]
    for k in range(3):
        vib, still = groups[k], groups[100 + k]
        assert vib["exit_wave"].shape[0] == 2 and still["exit_wave"].shape[0] == 1
        # same particle: same ground truth, different images
        assert store.read_columns(vib).equals(store.read_columns(still))
        assert not np.allclose(vib["exit_wave"][0], still["exit_wave"][0])
    assert store.settings_of(mix)["paired_with"]["index_offset"] == 100
    assert not (root / "mix.zarr.partial").exists()
    image, target, weights = HrtemDataset(out, crop=64)[0]
    assert image.shape == (1, 64, 64) and np.isfinite(image.numpy()).all()


def test_refuses_to_overwrite_and_stores_without_static_structures(twins):
    root, static, tds = twins
    out = root / "again.zarr"
    out.mkdir()
    with pytest.raises(SystemExit, match="exists"):
        pair_store.pair_stores(static, tds, out)
    with pytest.raises(SystemExit, match="no static-lattice"):
        pair_store.pair_stores(tds, tds, root / "none.zarr")
    assert not (root / "none.zarr").exists()


def test_tds_share_keeps_the_twins_of_static_particles_first(twins):
    root, static, tds = twins
    out = root / "third.zarr"
    assert pair_store.pair_stores(static, tds, out, offset=100, tds_per_static=1 / 3) == (1, 3)
    groups = sorted(int(g.attrs["index"]) for g in store.structure_groups(store.open_store(out)))
    assert groups == [0, 100, 101, 102]  # the first twin with TDS, every static particle
    assert store.settings_of(store.open_store(out))["paired_with"]["tds_per_static"] == pytest.approx(1 / 3)


def test_a_lattice_heads_model_trains_on_the_pairs_from_a_model_without_them(twins, tmp_path):
    import torch

    from hrtem3d.model.io import load_model
    from hrtem3d.train.loop import TrainConfig, train

    root, static, tds = twins
    out = root / "heads.zarr"
    pair_store.pair_stores(static, tds, out, offset=100)
    ds = HrtemDataset(out, crop=64, samples_per_epoch=12, lattice_label=True)
    labels = {}
    for i in range(12):
        label = ds[i][3]
        labels.setdefault(float(label), set()).add(ds.draw(i)["structure"])
    assert labels[1.0] <= {0, 1, 2} and labels[0.0] <= {100, 101, 102}  # frozen phonons: the first three
    cfg = dict(steps=2, batch=2, crop=64, widths=(4, 8), val_every=2, val_samples=2, val_fraction=0.5,
               checkpoint_every=2, workers=0, warmup=1, scope=False)
    train(out, tmp_path / "plain.safetensors", TrainConfig(**cfg), progress=False)
    train(out, tmp_path / "heads.safetensors", TrainConfig(**cfg, lr=1e-9, lattice_heads=True,
                                                           init=str(tmp_path / "plain.safetensors")), progress=False)
    plain, _ = load_model(tmp_path / "plain.safetensors", "cpu")
    heads, meta = load_model(tmp_path / "heads.safetensors", "cpu")
    assert heads.config.lattice_heads and meta["train_config"]["lattice_heads"]
    for name in ("head", "vibrating_head"):  # both readings start as the plain model's head (one step at lr 1e-9)
        assert torch.allclose(getattr(heads, name).weight, plain.head.weight, atol=1e-5)
    x = torch.randn(1, 1, 48, 48)
    with torch.inference_mode():  # the mixture of two equal readings is that reading
        static, vibrating, gate = heads(x, hypotheses=True)
        assert torch.allclose(torch.softmax(heads(x), 1), torch.softmax(static, 1), atol=1e-4)
        assert (torch.softmax(static, 1) - torch.softmax(vibrating, 1)).abs().max() < 1e-3
