"""Vacuum skipping: the statistic on shot noise and on a lattice, and the shipped model losing no column."""

from __future__ import annotations

import numpy as np
import pytest

from hrtem3d.evaluate.metrics import match_columns
from hrtem3d.segmentation.lattice import lattice_image
from hrtem3d.segmentation.segmenter import Segmenter
from hrtem3d.segmentation.vacuum import excess_energy, particle_mask, particle_regions


@pytest.mark.parametrize("counts", [3.0, 30.0, 3000.0])
@pytest.mark.parametrize("pixel_size_A", [0.05, 0.1, 0.16])
def test_shot_noise_alone_reads_as_vacuum(counts, pixel_size_A):
    img = np.random.default_rng(1).poisson(counts, (512, 512)).astype(np.float32)
    ex, k = excess_energy(img, pixel_size_A)
    assert 0.8 < float(np.median(ex)) < 1.2  # white noise: about what the noise gain predicts
    assert k * pixel_size_A >= 0.3 and ex.shape == (512 // k, 512 // k)
    assert not particle_mask(img, pixel_size_A).any()
    assert particle_regions(img, pixel_size_A, margin_px=8) == [(0, 512, 0, 512)]  # nothing found: keep all


def test_shot_noise_under_a_smooth_illumination_gradient_reads_as_vacuum():
    """The noise is measured from 2 x 2 checkerboard differences, which cancel a smooth gradient (a plain
    difference of neighbours would count the gradient as noise and read the frame as quieter than it is)."""
    yy, xx = np.mgrid[0:512, 0:512]
    lam = 20 + 400 * (xx / 511) ** 2 + 200 * yy / 511  # a strong, curved illumination falloff
    img = np.random.default_rng(3).poisson(lam).astype(np.float32)
    ex, _ = excess_energy(img, 0.1)
    assert 0.8 < float(np.median(ex)) < 1.25


def test_a_lattice_patch_is_boxed_with_its_margin_on_the_pooling_grid():
    rng = np.random.default_rng(0)
    mean = 50.0
    lam = np.full((600, 800), mean, np.float32)
    lam[100:220, 500:640] = mean * (1 + 0.15 * lattice_image((120, 140), 0.1, rng=rng))
    img = rng.poisson(lam).astype(np.float32)
    mask = particle_mask(img, 0.1)
    assert mask.shape == img.shape
    assert mask[130:190, 530:610].all()  # the patch's inside
    assert mask[400:, :300].sum() == 0  # far vacuum
    (y0, y1, x0, x1), = particle_regions(img, 0.1, margin_px=20, multiple=16)
    assert y0 % 16 == 0 and x0 % 16 == 0 and (y1 % 16 == 0 or y1 == 600) and (x1 % 16 == 0 or x1 == 800)
    assert y0 <= 100 - 20 and y1 >= 220 + 20 and x0 <= 500 - 20 and x1 >= 640 + 20  # margin kept
    assert (y1 - y0) * (x1 - x0) < 0.3 * img.size  # and the rest skipped (the patch: 4 %, margins and the
    # smoothing's reach: about 10 Å)
    # on a grid of pixels 2 input pixels each (a working grid), with the same margin in Å: the box halved,
    # to within the two pooling grids (16 input pixels, 8 of the coarse grid)
    half = particle_regions(img, 0.1, margin_px=10, multiple=8, factors=(2.0, 2.0), shape=(300, 400))
    assert len(half) == 1
    assert all(abs(h - f / 2) <= 8 for h, f in zip(half[0], (y0, y1, x0, x1)))


def test_two_patches_far_apart_get_two_boxes_and_near_ones_merge():
    rng = np.random.default_rng(2)
    lam = np.full((800, 800), 40.0, np.float32)
    for y, x in ((50, 50), (600, 600)):
        lam[y:y + 100, x:x + 100] *= 1 + 0.2 * lattice_image((100, 100), 0.1, rng=rng)
    img = rng.poisson(lam).astype(np.float32)
    far = particle_regions(img, 0.1, margin_px=16, multiple=16)
    assert len(far) == 2 and far[0][1] < far[1][0]
    assert particle_regions(img, 0.1, margin_px=300, multiple=16) == [(0, 800, 0, 800)]  # merged, then all


@pytest.mark.parametrize("mirror", [False, True])  # the first box found reaches further right, or left
def test_overlapping_boxes_merge_into_one_that_holds_both(mirror):
    rng = np.random.default_rng(8)
    lam = np.full((700, 800), 40.0, np.float32)
    lam[100:200, 450:560] *= 1 + 0.1 * lattice_image((100, 110), 0.1, rng=rng)  # upper, to the right
    lam[350:450, 150:460] *= 1 + 0.1 * lattice_image((100, 310), 0.1, rng=rng)  # lower, reaching further left
    if mirror:
        lam = lam[:, ::-1]
    img = rng.poisson(lam).astype(np.float32)
    apart = particle_regions(img, 0.1, margin_px=8, multiple=8)
    assert len(apart) == 2  # two areas 15 Å apart...
    (y0, y1, x0, x1), = particle_regions(img, 0.1, margin_px=80, multiple=8)  # ...whose boxes overlap
    if mirror:
        x0, x1 = 800 - x1, 800 - x0
    assert y0 <= 100 - 80 and y1 >= 450 + 80 and x0 <= 150 - 80 and x1 >= 560 + 80


def test_vacuum_skipping_loses_no_column_of_a_particle_at_the_frame_and_tile_edges(shipped_movie):
    m = shipped_movie
    pair = np.concatenate([m.frames[0], m.frames[2]], axis=1)  # 320 x 640, two particles side by side
    rng = np.random.default_rng(5)
    frame = rng.poisson(float(np.median(pair[:8])), (640, 1152)).astype(np.float32)
    frame[:320, -640:] = pair  # touching the top and right edges of the frame
    whole = Segmenter(contrast="bright", tile=448, skip_vacuum=False)
    skip = Segmenter(contrast="bright", tile=448)  # the pair's box exceeds a tile: seams run through it
    assert skip.vacuum_margin == 64 and skip.skip_vacuum
    a, b = whole.segment(frame, m.pixel_size_A), skip.segment(frame, m.pixel_size_A)
    ran = b.probs[0] < 1
    assert 0.2 < ran.mean() < 0.5 and not ran[400:, :400].any()  # the network skipped most vacuum
    truth = m.truth[m.truth.frame.isin([0, 2])].copy()
    truth["x_px"] += np.where(truth.frame == 2, 320, 0) + 1152 - 640
    truth["x_A"], truth["y_A"] = truth.x_px * m.pixel_size_A, truth.y_px * m.pixel_size_A
    found = match_columns(truth, a.columns)
    hit = a.columns.iloc[found.pred_row[found.pred_row >= 0]]
    assert len(hit) >= 0.9 * len(truth)
    for _, c in hit.iterrows():  # every true column the whole frame finds is found again, same depth
        d = np.hypot(b.columns.x_px - c.x_px, b.columns.y_px - c.y_px)
        assert d.min() < 0.05 and b.columns.n_atoms[d.idxmin()] == c.n_atoms
    assert len(b.columns) <= len(a.columns)  # nothing new appears in the skipped vacuum
