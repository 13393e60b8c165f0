import numpy as np
import pytest
import torch

from hrtem3d.data import store
from hrtem3d.data.dataset import HrtemDataset
from hrtem3d.data.dihedral import dihedral, dihedral_inverse
from hrtem3d.errors import HrtemError


def test_store_holds_waves_columns_and_targets(tiny_store):
    root = store.open_store(tiny_store)
    groups = store.structure_groups(root)
    assert len(groups) == 4
    for g in groups:
        w = g["exit_wave"][:]
        assert w.shape == (1, 96, 96) and w.dtype == np.complex64
        cols = store.read_columns(g)
        assert cols.n_atoms.sum() == g.attrs["n_atoms_total"]
        assert set(cols.species) <= {"Ce", "O"}
        assert g["cls"][:].max() > 0


def test_samples_have_the_right_shapes_and_are_reproducible(tiny_store):
    ds = HrtemDataset(tiny_store, crop=64, samples_per_epoch=8, seed=5)
    img, target, w = ds[3]
    assert img.shape == (1, 64, 64) and target.shape == (2, 64, 64) and w.shape == (64, 64)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert abs(float(img.median())) < 0.3
    img2, target2, _ = HrtemDataset(tiny_store, crop=64, samples_per_epoch=8, seed=5)[3]
    assert torch.equal(img, img2) and torch.equal(target, target2)
    img3, _, _ = ds[4]
    assert not torch.equal(img, img3)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], img)
    # weights: centre of columns heavier than background
    cls, alpha = target[0], target[1]
    assert w[alpha > 0.99].min() > w[cls == 0].max()


def test_flips_and_rotations_apply_alike(tiny_store):
    plain = HrtemDataset(tiny_store, crop=64, augment=False, seed=2)
    aug = HrtemDataset(tiny_store, crop=64, augment=True, seed=2)
    seen = set()
    for i in range(12):
        a, b = plain.draw(i), aug.draw(i)
        t = b["transform"]
        seen.add(t)
        for key in ("counts", "cls", "alpha", "clean"):
            assert np.array_equal(dihedral(a[key], t), b[key]), key
    assert len(seen) >= 4


def test_dihedral_group_is_the_eight_symmetries():
    a = np.arange(12).reshape(3, 4)
    outs = {dihedral(a, t).tobytes() + bytes(dihedral(a, t).shape) for t in range(8)}
    assert len(outs) == 8


def test_training_and_test_time_symmetries_are_the_same_maps():
    """numpy (training augmentation) and torch (test-time augmentation) agree, and the inverse undoes."""
    import torch

    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    for t in range(8):
        np.testing.assert_array_equal(dihedral(a, t), dihedral(torch.from_numpy(a), t).numpy())
        np.testing.assert_array_equal(dihedral_inverse(dihedral(a, t), t), a)
        assert torch.equal(dihedral_inverse(dihedral(torch.from_numpy(a), t), t), torch.from_numpy(a))
    # t = 1 is a quarter turn counter-clockwise: the top-right corner goes to the top-left
    assert dihedral(a, 1)[0, 0, 0] == a[0, 0, -1]


def test_fixed_dose_controls_the_counts(tiny_store):
    lo = HrtemDataset(tiny_store, crop=64, dose=100.0, seed=1).draw(0)
    hi = HrtemDataset(tiny_store, crop=64, dose=10000.0, seed=1).draw(0)
    assert hi["counts"].mean() / lo["counts"].mean() == pytest.approx(100, rel=0.1)


def test_crop_larger_than_store_is_refused(tiny_store):
    with pytest.raises(HrtemError, match="crop"):
        HrtemDataset(tiny_store, crop=512)


def test_missing_structures_are_refused(tiny_store):
    with pytest.raises(HrtemError, match="lacks"):
        HrtemDataset(tiny_store, indices=[0, 99])
