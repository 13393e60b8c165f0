import numpy as np

from hrtem3d.labels import DEFAULT_SCHEME, ClassScheme, class_weights_from_counts, make_targets, weight_map
from hrtem3d.structure import ParticleEnvelope, column_table, random_particle


def test_scheme_round_trip():
    s = DEFAULT_SCHEME
    assert s.n_classes == 25
    for sp in ("Ce", "O"):
        for n in (1, 5, 12):
            c = s.class_of(sp, n)
            spi, nn = s.decode(c)
            assert s.species[int(spi)] == sp and int(nn) == n
    assert s.class_of("Ce", 30) == s.class_of("Ce", 12)
    assert ClassScheme.from_dict(s.to_dict()) == s


def test_column_centres_carry_their_class_and_background_is_zero():
    sampling = 0.16
    atoms, _ = random_particle(np.random.default_rng(2), ParticleEnvelope(diameter_A=(10, 12)),
                               cell_A=(20.48, 20.48))
    cols = column_table(atoms)
    cls, alpha = make_targets(cols, (128, 128), sampling)
    for r in cols.itertuples():
        i, j = int(round(r.y_A / sampling)), int(round(r.x_A / sampling))
        assert cls[i, j] == DEFAULT_SCHEME.class_of(r.species, r.n_atoms)
        assert alpha[i, j] > 0.9
    # far from every column: background
    far = np.ones_like(cls, bool)
    yy, xx = np.mgrid[0:128, 0:128] * sampling
    for r in cols.itertuples():
        far &= np.hypot(xx - r.x_A, yy - r.y_A) > 1.0
    assert far.sum() > 1000
    assert (cls[far] == 0).all() and (alpha[far] == 0).all()
    # every column painted, soft towards the edge
    assert len(np.unique(cls)) - 1 == len({DEFAULT_SCHEME.class_of(s, n) for s, n in
                                           zip(cols.species, cols.n_atoms)})
    assert ((alpha > 0.05) & (alpha < 0.9)).sum() > 0


def test_weights_emphasise_centres_and_rare_classes():
    cls = np.array([[0, 1], [2, 2]], np.uint8)
    alpha = np.array([[0, 1.0], [1.0, 0.5]], np.float32)
    cw = class_weights_from_counts(np.array([1000, 10, 1000]))
    w = weight_map(alpha, cls, cw, centre_weight=4)
    assert w[0, 0] == 1.0
    assert w[0, 1] > w[1, 0] > w[1, 1]
