"""Is an image inside what the model can handle? A cheap check before trusting its counts.

The model was trained on CeO2 in [110] imaged in HRTEM at pixel sizes whose calibration is off by
a few per cent at most (`simulate.scope.ScopeEnvelope`: 3 % r.m.s.). An image is out of the
envelope when the power spectrum shows no CeO2 [110] reflection set near the stated pixel size
(another zone axis: [100] shows a square {200}/{220} pattern and [111] a hexagonal {220} one,
both without the odd reflections of [110]; another material such as gold, a = 4.08 Å, puts its
spots elsewhere; a bare support film or a STEM image of another crystal shows none), or when the
lattice is found but says the stated pixel size is off by more than `PIXEL_LIMIT` (8 %, beyond the
training's calibration spread). Then every column's confidence is capped at `CONFIDENCE_CAP` and a
one-line warning is given.

A missing lattice is not always a foreign image: at low dose the spots of a small particle can sink
into the noise. `reconsider` takes the columns the model found: when the only complaint was a missing
lattice and the Ce columns sit on the CeO2 [110] lattice in real space (their median nearest-neighbour
distance, and at least half of them, within `LATTICE_TOLERANCE` of the projected Ce-Ce distance
a sqrt(3/8), 3.31 Å), the image is a weak one of the right kind and the verdict is reversed. The
tolerance is half the pixel-size limit: a network's columns drift towards the spacing it was trained
on, so at a calibration 10 % off they sit only 5-8 % off. Columns a network invents on a bare film, on another zone
axis or on another crystal do not form that lattice at the stated pixel size. `reconsider` then also
checks the counts (`check_counts`): Ce columns far thinner than a particle of their number holds mean a
lattice contrast lower than the model learned, and put the image out of the envelope.

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.lattice import lattice_image
    >>> img = lattice_image((256, 256), 0.1, rng=np.random.default_rng(0))
    >>> check_envelope(img, 0.1).in_envelope, check_envelope(img, 0.125).in_envelope
    (True, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from hrtem3d.segmentation.lattice import TOLERANCE, LatticeCheck, check_pixel_size, measure_lattice
from hrtem3d.segmentation.spectrum import Spectrum, image_spectrum
from hrtem3d.structure.material import CERIA, GOLD, Material

PIXEL_LIMIT = 0.08      # a lattice this far (relative) from the stated pixel size is outside training
CONFIDENCE_CAP = 0.2    # column confidence on an out-of-envelope image is at most this
NO_LATTICE = "no_lattice"
MIN_LATTICE_COLUMNS = 12  # cation columns needed before their positions can vouch for the lattice
LATTICE_TOLERANCE = 0.04  # relative distance from the lattice's nearest-neighbour spacing (half PIXEL_LIMIT)
LATTICE_SHARE = 0.5     # share of them whose nearest neighbour must sit that close
ALTERNATIVES = ((CERIA, (1, 0, 0)), (CERIA, (1, 1, 1)), (GOLD, (1, 1, 0)))
"""Patterns fitted beside CeO2 [110] at the stated pixel size; one that explains more spots wins."""
THIN = "thin"
THIN_LIMIT = 0.50  # count_size_ratio below which the counts are too low for the particle's size
MIN_SIZE_COLUMNS = 20  # cation columns needed before their number can vouch for the particle's size
TYPICAL_RATIO = 0.70    # count_size_ratio of the training particles (mean)


@dataclass
class EnvelopeCheck:
    """The verdict on one image.

    Attributes:
        in_envelope: False when the image looks unlike anything the model was trained on.
        reasons: why not, one short phrase each.
        lattice: the pixel-size check against the lattice (`segmentation.lattice.LatticeCheck`).
        pixel_size_A: the pixel size the check was made at (Å).
        kind: what failed: "" (nothing), "rival" (another pattern), "pixel" (the lattice far from the
            stated pixel size) or `NO_LATTICE` (no CeO2 [110] lattice found at all).
        note: why a verdict was reversed by `reconsider` ("" otherwise).
    """

    in_envelope: bool
    reasons: list[str] = field(default_factory=list)
    lattice: LatticeCheck | None = None
    pixel_size_A: float = float("nan")
    kind: str = ""
    note: str = ""

    @property
    def warning(self) -> str:
        """One line for the user; empty inside the envelope."""
        if self.in_envelope:
            return ""
        return (f"out of the model's envelope ({'; '.join(self.reasons)}): counts are unreliable, "
                f"confidence capped at {CONFIDENCE_CAP:g}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lattice"] = self.lattice.to_dict() if self.lattice else None
        d["warning"] = self.warning
        return d


def check_envelope(image: np.ndarray, pixel_size_A: float, material: Material = CERIA,
                   lattice: LatticeCheck | None = None, *, spectrum: Spectrum | None = None) -> EnvelopeCheck:
    """Check `image` `[y, x]` at `pixel_size_A` (Å) against the envelope; `lattice` reuses a check already made.

    The image's power spectrum is computed once (or `spectrum`, the image's `image_spectrum`, is used) and
    shared by the CeO2 [110] fit and every rival pattern.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(3)
        >>> check_envelope(rng.normal(size=(256, 256)), 0.1).reasons
        ['no CeO2 [110] lattice near 0.1 Å/px']
    """
    spec = spectrum or image_spectrum(image)
    lat = lattice or check_pixel_size(image, pixel_size_A, material=material, spectrum=spec)
    zone = _zone(material.zone_axis)
    reasons, kind = [], ""
    own = 0.0
    if lat.fit.found:  # a CeO2 fit far from the stated pixel size loses a tie to a rival that is near it
        near = abs(pixel_size_A / lat.fit.pixel_size_A - 1) <= PIXEL_LIMIT
        own = lat.fit.score - (0.0 if near else 0.5)
    rival = _best_rival(image, spec, pixel_size_A, own, strict=lat.fit.confident)
    if rival:
        reasons.append(f"the lattice looks like {rival}, not {material.name} {zone}")
        kind = "rival"
    else:
        f = lat.fit
        dev = max(pixel_size_A / f.pixel_size_x_A - 1, pixel_size_A / f.pixel_size_y_A - 1, key=abs) if f.found \
            else float("nan")
        if f.confident and abs(dev) > PIXEL_LIMIT:
            reasons.append(f"the lattice says the pixel size is {dev:+.0%} off")
            kind = "pixel"
        elif not abs(dev) <= PIXEL_LIMIT:  # none found, or a weak fit far from the stated size
            reasons.append(f"no {material.name} {zone} lattice near {pixel_size_A:.4g} Å/px")
            kind = NO_LATTICE
    return EnvelopeCheck(not reasons, reasons, lat, float(pixel_size_A), kind)


def columns_on_lattice(columns: pd.DataFrame, material: Material = CERIA, *, tolerance: float = LATTICE_TOLERANCE,
                       min_columns: int = MIN_LATTICE_COLUMNS, min_share: float = LATTICE_SHARE) -> bool:
    """Do the cation columns of a column table (`x_A`, `y_A` in Å) sit on `material`'s [110] lattice?

    True when at least `min_columns` cation columns are found, their median nearest-neighbour distance is
    within `tolerance` (relative) of the projected nearest-neighbour distance a sqrt(3/8) (3.31 Å for
    CeO2: the fcc cation sublattice seen along [110] is a centred rectangle of a/sqrt(2) by a), and at
    least `min_share` of them have their nearest neighbour that close.

    Example:
        >>> import numpy as np, pandas as pd
        >>> a = CERIA.a_A
        >>> i, j = np.meshgrid(np.arange(6), np.arange(5))
        >>> xy = np.concatenate([np.c_[i.ravel() * a / 2**0.5, j.ravel() * a],
        ...                      np.c_[(i.ravel() + 0.5) * a / 2**0.5, (j.ravel() + 0.5) * a]])
        >>> t = pd.DataFrame({"species": "Ce", "x_A": xy[:, 0], "y_A": xy[:, 1]})
        >>> columns_on_lattice(t), columns_on_lattice(t.assign(x_A=t.x_A * 1.06, y_A=t.y_A * 1.06))
        (True, False)
    """
    cat = _cations(columns, material, ("x_A", "y_A"))
    if not len(cat) or len(cat) < min_columns:
        return False
    from scipy.spatial import cKDTree

    xy = cat[["x_A", "y_A"]].to_numpy(float)
    d, _ = cKDTree(xy).query(xy, k=2)
    nn = d[:, 1] / _neighbour_distance_A(material)
    return bool(abs(np.median(nn) - 1) <= tolerance and np.mean(np.abs(nn - 1) <= tolerance) >= min_share)


def reconsider(check: EnvelopeCheck, columns: pd.DataFrame, material: Material = CERIA) -> EnvelopeCheck:
    """`check` again, knowing the columns the model found in the same image (`columns`, Å coordinates).

    Two verdicts can change. A missing lattice (`kind == NO_LATTICE`) is reversed when `columns_on_lattice`
    holds: the image is a weak image of the right kind, not a foreign one. Then an image inside the
    envelope is put out of it when its counts are far below what the particle's size holds
    (`check_counts`). Any other verdict is returned unchanged.
    """
    if not check.in_envelope and check.kind == NO_LATTICE and columns_on_lattice(columns, material):
        check = EnvelopeCheck(True, [], check.lattice, check.pixel_size_A, "",
                              note=f"no lattice in the power spectrum, but the {material.cation} columns found sit "
                                   f"on the {material.name} {_zone(material.zone_axis)} lattice: a weak image")
    return check_counts(check, columns, material)


def count_size_ratio(columns: pd.DataFrame, material: Material = CERIA) -> float:
    """Mean cation count of a column table over what the particle's projected size implies (NaN if too few).

    Only cation columns with at least two cation neighbours at the projected nearest-neighbour distance
    (a sqrt(3/8), 3.31 Å for CeO2, within 10 %) take part: a column a network invents in a support film or
    in the noise has none and would pull the mean down. Their number times the area each takes in [110]
    projection (a^2 / (2 sqrt 2), 10.35 Å^2) is the projected area; its equivalent-circle diameter D,
    over the cation spacing along the beam (a / sqrt 2, 3.83 Å), is the count of a column through the
    middle of a sphere that wide. A convex particle's mean count is a steady share of it: 0.71 +- 0.08
    (1st-99th percentile 0.53-0.92) over the 348 training particles of 16-46 Å with at least
    `MIN_SIZE_COLUMNS` such columns (`hrtem3d simulate --seed 21`, truth tables). Counts read from an
    image whose lattice contrast is lower than the model learned (thermal diffuse and inelastic
    scattering, the Stobbs factor) fall below that range; the columns' number does not. Several particles
    in one field are judged each on its own (the lattice members linked by nearest neighbours) and their
    ratios averaged, weighted by their columns.

    Example:
        >>> import numpy as np, pandas as pd
        >>> a = CERIA.a_A
        >>> i, j = np.meshgrid(np.arange(6), np.arange(4))
        >>> xy = np.concatenate([np.c_[i.ravel() * a / 2**0.5, j.ravel() * a],
        ...                      np.c_[(i.ravel() + 0.5) * a / 2**0.5, (j.ravel() + 0.5) * a]])
        >>> t = pd.DataFrame({"species": "Ce", "x_A": xy[:, 0], "y_A": xy[:, 1], "n_atoms": 4})
        >>> round(count_size_ratio(t), 2), round(count_size_ratio(t.assign(n_atoms=2)), 2)
        (0.62, 0.31)
        >>> two = pd.concat([t, t.assign(x_A=t.x_A + 100)])  # a second particle, 100 Å away: the same ratio
        >>> round(count_size_ratio(two), 2)
        0.62
    """
    return _size_ratio(_lattice_members(columns, material), material)


def _lattice_members(columns: pd.DataFrame, material: Material) -> pd.DataFrame:
    """The cation columns with at least two others within 1.1 x the projected nearest-neighbour distance
    (empty when the table lacks positions or counts)."""
    cat = _cations(columns, material, ("n_atoms", "x_A", "y_A"))
    if len(cat) < 3:
        return cat.iloc[:0]
    from scipy.spatial import cKDTree

    xy = cat[["x_A", "y_A"]].to_numpy(float)
    near = cKDTree(xy).query_ball_point(xy, 1.1 * _neighbour_distance_A(material))
    return cat[np.array([len(v) - 1 for v in near]) >= 2]


def _cations(columns: pd.DataFrame | None, material: Material, fields: tuple[str, ...]) -> pd.DataFrame:
    """The cation rows of a column table; empty (with `species` and `fields`) when it lacks any of them."""
    if columns is None or not {"species", *fields} <= set(columns.columns):
        return pd.DataFrame(columns=["species", *fields])
    return columns[columns["species"] == material.cation]


def _size_ratio(members: pd.DataFrame, material: Material) -> float:
    """`count_size_ratio` of cation columns already filtered by `_lattice_members`: per particle (the
    members linked through nearest neighbours), averaged over the particles large enough, weighted by size."""
    if len(members) < MIN_SIZE_COLUMNS:
        return float("nan")
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(members[["x_A", "y_A"]].to_numpy(float)).query_pairs(1.1 * _neighbour_distance_A(material),
                                                                         output_type="ndarray")
    n = len(members)
    labels = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                  directed=False)[1]
    ratios, sizes = [], []
    for k in np.unique(labels):
        part = members[labels == k]
        if len(part) >= MIN_SIZE_COLUMNS:
            ratios.append(_one_particle_ratio(part, material))
            sizes.append(len(part))
    return float(np.average(ratios, weights=sizes)) if ratios else float("nan")


def _one_particle_ratio(members: pd.DataFrame, material: Material) -> float:
    diameter_A = np.sqrt(4 * len(members) * material.a_A**2 / (2 * np.sqrt(2)) / np.pi)
    return float(members["n_atoms"].mean() / (diameter_A / (material.a_A / np.sqrt(2))))


def _neighbour_distance_A(material: Material) -> float:
    """Nearest-neighbour distance of the cation columns in [110] projection, a sqrt(3/8) (Å)."""
    return material.a_A * np.sqrt(3 / 8)


def check_counts(check: EnvelopeCheck, columns: pd.DataFrame, material: Material = CERIA,
                 limit: float = THIN_LIMIT) -> EnvelopeCheck:
    """`check` again, knowing the counts: out of the envelope (kind `THIN`) when `count_size_ratio` is
    below `limit`, i.e. the columns read far thinner than any training particle of that size. Any verdict
    already out of the envelope is returned unchanged.

    Example:
        >>> import numpy as np, pandas as pd
        >>> xy = np.c_[np.arange(48) % 8 * CERIA.a_A / 2**0.5, np.arange(48) // 8 * CERIA.a_A]
        >>> xy = np.concatenate([xy, xy + [CERIA.a_A / 2**1.5, CERIA.a_A / 2]])
        >>> t = pd.DataFrame({"species": "Ce", "x_A": xy[:, 0], "y_A": xy[:, 1], "n_atoms": 2})
        >>> ok = EnvelopeCheck(True)
        >>> check_counts(ok, t).kind, check_counts(ok, t.assign(n_atoms=5)).in_envelope
        ('thin', True)
    """
    if not check.in_envelope:
        return check
    cat = _lattice_members(columns, material)
    r = _size_ratio(cat, material)
    if not r < limit:
        return check
    reason = (f"its {len(cat)} {material.cation} columns, {cat['n_atoms'].mean():.1f} atoms on average, read "
              f"{1 - r / TYPICAL_RATIO:.0%} thinner than a particle that wide holds: the lattice contrast is likely "
              "lower than in training, as thermal or inelastic scattering make it")
    return EnvelopeCheck(False, [reason], check.lattice, check.pixel_size_A, THIN, note=check.note)


def _zone(z) -> str:
    return "[" + "".join(str(v) for v in z) + "]"


def _best_rival(image: np.ndarray, spec: Spectrum, pixel_size_A: float, own: float, strict: bool = True) -> str:
    """Name of the alternative pattern found near `pixel_size_A` whose `LatticeFit.score` beats `own`, or "".
    With `strict` (the CeO2 fit itself is clear) the rival must be clear too (`LatticeFit.confident`)."""
    best, name = own, ""
    for mat, zone in ALTERNATIVES:
        fit = measure_lattice(image, pixel_size_A, material=mat, zone=zone, search=PIXEL_LIMIT, spectrum=spec)
        if (fit.confident or (fit.found and not strict)) and fit.score > best:
            best, name = fit.score, f"{mat.name} {_zone(zone)}"
    return name


def cap_confidence(columns: pd.DataFrame, check: EnvelopeCheck) -> pd.DataFrame:
    """The column table with confidence capped at `CONFIDENCE_CAP` when `check` is out of the envelope."""
    if check.in_envelope or "confidence" not in columns:
        return columns
    return columns.assign(confidence=np.minimum(columns["confidence"].to_numpy(), CONFIDENCE_CAP))


__all__ = ["CONFIDENCE_CAP", "NO_LATTICE", "PIXEL_LIMIT", "THIN", "THIN_LIMIT", "TOLERANCE", "EnvelopeCheck",
           "cap_confidence", "check_counts", "check_envelope", "columns_on_lattice", "count_size_ratio", "reconsider"]
