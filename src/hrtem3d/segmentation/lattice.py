"""The pixel size from the crystal lattice: index the reflections of the image's power spectrum.

An HRTEM image of CeO2 in [110] shows, in its Fourier transform, the spots of the projected
lattice: {111} (d = a/√3 = 3.12 Å, two pairs 70.5° apart), {200} (d = a/2 = 2.71 Å) and {220}
(d = a/(2√2) = 1.91 Å), with a the material's lattice constant (`structure.material`). Their
positions in cycles per pixel are the spacings times the pixel size, so the lattice measures the
pixel size along x and y (non-square pixels after drift correction show as two values) and
`check_pixel_size` says whether a file's calibration disagrees with it.

Method: on the image's power spectrum over its azimuthal median (`segmentation.spectrum`, so spots
stand out of the CTF rings), the strongest local maxima are paired and each pair that fits two model
reflections (length ratio, angle) proposes a pixel size and a rotation; each proposal is scored on
every model spot, the best is refined to sub-pixel spot positions (parabola on the log power) and
fitted by least squares for (pixel x, pixel y, rotation).

Example:
    >>> import numpy as np
    >>> from hrtem3d.segmentation.lattice import lattice_image, measure_lattice
    >>> img = lattice_image((256, 256), 0.08, rng=np.random.default_rng(0))
    >>> fit = measure_lattice(img)
    >>> fit.found and abs(fit.pixel_size_A / 0.08 - 1) < 0.01
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import product

import numpy as np

from hrtem3d.segmentation.spectrum import DETECT_Q, Spectrum, find_peaks, image_spectrum, refine_spot
from hrtem3d.structure.material import CERIA, Material

SEARCH_A = (0.02, 1.0)       # pixel sizes a free lattice fit searches (Å)
CHECK_RANGE = 0.3            # check_pixel_size searches the stated pixel size +- 30 %
TOLERANCE = 0.02             # a calibration off by more than this is reported
MIN_SPOTS = 4                # a lattice is found with at least this many spots (a Friedel pair once) ...
OUTLIER = 0.025              # ... each within 2.5 % of |g| of the fitted lattice (worse ones are dropped) ...
MAX_RESIDUAL = 0.015         # ... and an r.m.s. misfit below 1.5 %
MIN_EXCESS = 3               # a found lattice lights up this many more spots than noise would ...
MAX_ANISOTROPY = 0.08        # pixels more unequal than this are a mis-indexed lattice, not a camera
CONFIDENT_EXCESS = 5         # ... and this many to warn about a calibration or to replace it
D_MIN_A = 0.9                # reflections down to this spacing are predicted and fitted (Å)
PAIR_D_MIN_A = 0.9           # pairs of these propose pixel sizes
RANK_D_MIN_A = 1.2           # proposals are ranked by the peaks these explain (denser sets hit noise)


@dataclass(frozen=True)
class Reflection:
    """One lattice reflection: its family (e.g. "111"), indices and position in 1/Å (image x, y)."""

    family: str
    hkl: tuple[int, int, int]
    gx: float
    gy: float

    @property
    def d_A(self) -> float:
        return 1.0 / float(np.hypot(self.gx, self.gy))


def zone_reflections(material: Material = CERIA, zone: tuple[int, int, int] | None = None,
                     in_plane_x: tuple[int, int, int] | None = None, d_min_A: float = 1.5) -> tuple:
    """Allowed reflections (face-centred rule: hkl all odd or all even) of `material` in `zone`.

    Positions are in 1/Å in the image frame of `Material.zone_frame` (x along `in_plane_x`).
    Only spacings d >= `d_min_A` (Å) are listed; both g and -g are included.
    """
    from dataclasses import replace

    m = replace(material, zone_axis=zone or material.zone_axis, in_plane_x=in_plane_x or material.in_plane_x)
    frame = m.zone_frame()
    u = np.asarray(m.zone_axis)
    out = []
    for hkl in product(range(-6, 7), repeat=3):
        h = np.asarray(hkl)
        if not h.any() or h @ u != 0 or len({v % 2 for v in hkl}) != 1:
            continue
        g = frame @ (h / m.a_A)
        if 1 / np.linalg.norm(g) < d_min_A:
            continue
        out.append(Reflection("".join(str(v) for v in sorted(np.abs(h), reverse=True)), hkl, float(g[0]),
                              float(g[1])))
    return tuple(sorted(out, key=lambda r: (-r.d_A, r.hkl)))


@dataclass
class LatticeFit:
    """The lattice measured in one image.

    Attributes:
        found: a consistent set of the material's reflections was found.
        pixel_size_A: geometric mean of the x and y pixel sizes (Å); nan when not found.
        pixel_size_x_A, pixel_size_y_A: pixel sizes along x and y (Å).
        rotation_deg: angle of the crystal's image-x direction ([1-10] for CeO2 [110]) from the image x axis.
        n_reflections: detected spots, a Friedel pair counted once.
        families: detected spots per family, e.g. {"111": 2, "200": 1}.
        residual: r.m.s. misfit of the detected spots relative to their |g| (0.003 = 0.3 %).
        strength: median power of the detected spots over the azimuthal median (signal to background).
        rel_err_x, rel_err_y: standard errors of the x and y pixel sizes from the fit, relative.
        n_seen, n_false: spots above `DETECT_Q` within a bin of the fitted positions, and the number that
            noise alone would give there (the `excess` of the two measures how clear the lattice is);
            n_missing: predicted spots not seen inside the farthest one seen.
    """

    found: bool
    pixel_size_A: float = float("nan")
    pixel_size_x_A: float = float("nan")
    pixel_size_y_A: float = float("nan")
    rotation_deg: float = float("nan")
    n_reflections: int = 0
    families: dict = field(default_factory=dict)
    residual: float = float("nan")
    strength: float = 0.0
    rel_err_x: float = float("nan")
    rel_err_y: float = float("nan")
    n_seen: int = 0
    n_false: float = 0.0
    n_missing: int = 0

    @property
    def excess(self) -> float:
        """Spots seen at the fitted positions beyond what noise alone would light up there."""
        return self.n_seen - self.n_false

    @property
    def score(self) -> float:
        """How well the lattice explains the spectrum: `excess` less half the predicted spots missing."""
        return self.excess - 0.5 * self.n_missing if self.found else 0.0

    @property
    def confident(self) -> bool:
        """Found clearly enough (`CONFIDENT_EXCESS` spots beyond noise) to warn about a calibration or replace it."""
        return self.found and self.excess >= CONFIDENT_EXCESS

    def to_dict(self) -> dict:
        return asdict(self)


def _rotate(gx: np.ndarray, gy: np.ndarray, theta: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    return c * gx - s * gy, s * gx + c * gy


def _candidates(peaks: np.ndarray, refl: tuple, scale_range: tuple[float, float]) -> np.ndarray:
    """(pixel size, rotation) proposals: pairs of peaks that match pairs of reflections (length ratio, angle)."""
    g = np.array([[r.gx, r.gy] for r in refl if r.d_A >= PAIR_D_MIN_A])
    i, j = np.triu_indices(len(peaks), 1)
    p, k = np.nonzero(~np.eye(len(g), dtype=bool))
    a, b, ga, gb = peaks[i], peaks[j], g[p], g[k]

    def geometry(u, v):
        return (np.log(np.hypot(u[:, 0], u[:, 1]) / np.hypot(v[:, 0], v[:, 1])),
                np.arctan2(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0], (u * v).sum(1)))

    lr, ang = geometry(a, b)
    glr, gang = geometry(ga, gb)
    ok = (np.abs(lr[:, None] - glr[None]) < 0.06) & (np.abs(np.angle(np.exp(1j * (ang[:, None] - gang[None]))))
                                                     < np.deg2rad(5))
    u, v = np.nonzero(ok)
    la, lb = np.hypot(*a[u].T), np.hypot(*b[u].T)
    s = 0.5 * (la / np.hypot(*ga[v].T) + lb / np.hypot(*gb[v].T))
    theta = np.arctan2(a[u, 1], a[u, 0]) - np.arctan2(ga[v, 1], ga[v, 0])
    keep = (s >= scale_range[0]) & (s <= scale_range[1])
    return np.stack([s[keep], theta[keep]], 1)


def _predict(refl: tuple, sx: float, sy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    gx = np.array([r.gx for r in refl])
    gy = np.array([r.gy for r in refl])
    kx, ky = _rotate(gx, gy, theta)
    return kx * sx, ky * sy  # cycles per pixel


def _explained(peaks: np.ndarray, refl: tuple, cands: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many of the peaks each candidate's predicted spots land on (within 1.5 bins or 3 % of |f|)."""
    g = np.array([[r.gx, r.gy] for r in refl])
    n = np.array(shape[::-1], float)  # bins per cycle along x, y
    out = np.zeros(len(cands), int)
    for c0 in range(0, len(cands), 512):
        c = cands[c0:c0 + 512]
        cos, sin = np.cos(c[:, 1])[:, None], np.sin(c[:, 1])[:, None]
        fx = (cos * g[None, :, 0] - sin * g[None, :, 1]) * c[:, :1]
        fy = (sin * g[None, :, 0] + cos * g[None, :, 1]) * c[:, :1]
        dx = (fx[:, :, None] - peaks[None, None, :, 0]) * n[0]
        dy = (fy[:, :, None] - peaks[None, None, :, 1]) * n[1]
        tol = np.maximum(1.5, 0.03 * np.hypot(peaks[:, 0] * n[0], peaks[:, 1] * n[1]))
        hit = (np.hypot(dx, dy) < tol[None, None]) & (np.abs(fx) < 0.48)[:, :, None] & (np.abs(fy) < 0.48)[:, :, None]
        out[c0:c0 + 512] = hit.any(1).sum(1)
    return out


def _fit(spots: list, refl: list, start: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Least squares for (pixel x, pixel y, rotation): measured k = (fx / sx, fy / sy) against R(theta) g."""
    from scipy.optimize import least_squares

    f = np.array([(s[0], s[1]) for s in spots])
    g = np.array([(r.gx, r.gy) for r in refl])
    gl = np.hypot(g[:, 0], g[:, 1])

    def res(p):
        kx, ky = _rotate(g[:, 0], g[:, 1], p[2])
        return np.concatenate([(f[:, 0] / p[0] - kx) / gl, (f[:, 1] / p[1] - ky) / gl])

    r = least_squares(res, np.asarray(start, float), x_scale=[start[0], start[0], 0.01])
    dof = max(1, r.fun.size - 3)
    try:
        cov = np.linalg.inv(r.jac.T @ r.jac) * float(r.fun @ r.fun) / dof
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        err = np.full(3, np.inf)
    return np.concatenate([r.x, err]), res(r.x).reshape(2, -1)


def measure_lattice(image: np.ndarray, pixel_size_A: float | None = None, search: float | None = None,
                    material: Material = CERIA, zone: tuple[int, int, int] | None = None, *,
                    spectrum: Spectrum | None = None) -> LatticeFit:
    """Measure the pixel size (Å, x and y) from the lattice of `material` in `zone` seen in `image` `[y, x]`.

    With `pixel_size_A` (Å) only pixel sizes within +- `search` (relative, default 0.3) of it are
    considered; without it, 0.02 to 1 Å. Returns a `LatticeFit` (`found` False when no consistent
    set of at least three reflections spanning two directions, one of them the strongest family, is seen).
    `spectrum` is the image's `image_spectrum` when already computed (then `image` is not read again).

    Example:
        >>> import numpy as np
        >>> img = lattice_image((200, 240), 0.1, pixel_y_A=0.104, rng=np.random.default_rng(1))
        >>> f = measure_lattice(img, 0.1)
        >>> round(f.pixel_size_x_A, 3), round(f.pixel_size_y_A, 3)
        (0.1, 0.104)
    """
    spec = spectrum or image_spectrum(image)
    if pixel_size_A is not None:
        f = search if search is not None else CHECK_RANGE
        scale_range = (pixel_size_A * (1 - f), pixel_size_A * (1 + f))
    else:
        scale_range = SEARCH_A
    refl = zone_reflections(material, zone, d_min_A=D_MIN_A)
    if pixel_size_A is not None:
        windows = [scale_range]
    else:  # overlapping windows, so that each one's peaks are those of its own frequency band
        c = np.geomspace(SEARCH_A[0] / (1 - CHECK_RANGE), SEARCH_A[1] / (1 + CHECK_RANGE), 8)
        windows = [(v * (1 - CHECK_RANGE), v * (1 + CHECK_RANGE)) for v in c]
    best = None
    for w in windows:
        fit = _search(spec, refl, w)
        if fit is not None and (best is None or _better(fit, best)):
            best = fit
    while best is not None:
        # each reflection g of the lattice at k times the pixel size lands on the real spot k g: try 1/k
        finer = [_refine(spec, refl, np.array([best.pixel_size_A / k, np.deg2rad(best.rotation_deg)]))
                 for k in (2, 3, 4) if best.pixel_size_A / k >= scale_range[0]]
        finer = [f for f in finer if f.found and f.excess >= max(MIN_EXCESS, best.excess / 2)]
        if not finer:
            break
        best = finer[0]
    return best or LatticeFit(False)


def _better(a: LatticeFit, b: LatticeFit) -> bool:
    """Ranks fits: spots beyond noise, less half of the predicted spots missing (a lattice finer than the
    real one predicts all its spots and more), then the misfit."""
    return (a.score, -a.residual) > (b.score, -b.residual)


def _search(spec: Spectrum, refl: tuple, scale_range: tuple[float, float]) -> LatticeFit | None:
    """The best lattice with a pixel size in `scale_range` (Å), or None."""
    q, logp = spec.q, spec.logp
    d = [r.d_A for r in refl]
    peaks = find_peaks(q, logp, band=(0.9 * scale_range[0] / max(d), 1.1 * scale_range[1] / min(d)))
    if len(peaks) < 2:
        return None
    cands = _candidates(peaks, refl, scale_range)
    if not len(cands):
        return None
    key = np.stack([np.round(np.log(cands[:, 0]) / 0.01), np.round(np.rad2deg(cands[:, 1]) % 180 / 1.0)], 1)
    cands = cands[np.unique(key, axis=0, return_index=True)[1]]  # one of each (1 %, 1 degree) cluster
    n_hit = _explained(peaks, tuple(r for r in refl if r.d_A >= RANK_D_MIN_A), cands, q.shape)
    best = None
    for k in np.argsort(-n_hit, kind="stable")[:30]:
        fit = _refine(spec, refl, cands[k])
        if fit.found and (best is None or _better(fit, best)):
            best = fit
    return best


def _refine(spec: Spectrum, refl: tuple, cand: np.ndarray) -> LatticeFit:
    q, logp = spec.q, spec.logp
    s, theta = float(cand[0]), float(cand[1])
    half = [r for r in refl if (r.gy > 0) or (r.gy == 0 and r.gx > 0)]  # one of each Friedel pair
    spots, used = [], []
    for r in half:
        fx, fy = _predict((r,), s, s, theta)
        if max(abs(fx[0]), abs(fy[0])) >= 0.45:
            continue
        hit = refine_spot(q, logp, float(fx[0]), float(fy[0]))
        if hit is not None:
            spots.append(hit)
            used.append(r)
    if len(spots) < MIN_SPOTS:
        return LatticeFit(False)
    params = np.array([s, s, theta])
    while True:  # fit, drop the worst spot while one is more than 2.5 % off
        out, res = _fit(spots, used, tuple(params[:3]))
        params = out
        e = np.hypot(res[0], res[1])
        if e.max() <= OUTLIER or len(spots) <= MIN_SPOTS:
            break
        k = int(np.argmax(e))
        spots, used = spots[:k] + spots[k + 1:], used[:k] + used[k + 1:]
    err = np.hypot(res[0], res[1])
    n_seen, n_false, n_missing = _recount(spec.q_max3, half, params)
    fams: dict = {}
    for r in used:
        fams[r.family] = fams.get(r.family, 0) + 1
    dirs = np.array([np.arctan2(r.gy, r.gx) % np.pi for r in used])
    spread = np.abs(np.angle(np.exp(2j * (dirs[:, None] - dirs[None, :])))).max() / 2
    # all-even spots alone fit twice the pixel size as well: where the zone has odd ones, two must be seen
    odd = sum(r.hkl[0] % 2 for r in used) >= 2 or not any(r.hkl[0] % 2 for r in refl)
    square = params[0] > 0 and params[1] > 0 and abs(params[0] / params[1] - 1) <= MAX_ANISOTROPY
    found = bool(len(used) >= MIN_SPOTS and odd and square and spread > np.deg2rad(20)
                 and n_seen - n_false >= MIN_EXCESS and np.sqrt(np.mean(err ** 2)) < MAX_RESIDUAL)
    return LatticeFit(found, float(np.sqrt(params[0] * params[1])), float(params[0]), float(params[1]),
                      float(np.rad2deg(params[2]) % 180), len(used), fams, float(np.sqrt(np.mean(err ** 2))),
                      float(np.median([sp[2] for sp in spots])), float(params[3] / params[0]),
                      float(params[4] / params[1]), int(n_seen), float(n_false), int(n_missing))


def _recount(qmax: np.ndarray, half: list, params: np.ndarray) -> tuple[int, float, int]:
    """Spots above `DETECT_Q` within one bin of the fitted positions, how many noise alone would give, and
    how many predicted spots inside the farthest one seen are missing.

    Noise in the ratio map is about exponential with median 1 (P(q > Q) = 2^-Q), so each predicted spot
    whose 3 x 3 bins are searched is a false hit with probability 1 - (1 - 2^-Q)^9.
    """
    ny, nx = qmax.shape
    fx, fy = _predict(tuple(half), params[0], params[1], params[2])
    inside = (np.abs(fx) < 0.45) & (np.abs(fy) < 0.45) & (np.hypot(fx * nx, fy * ny) > 4)
    iy = np.rint(fy[inside] * ny).astype(int) + ny // 2
    ix = np.rint(fx[inside] * nx).astype(int) + nx // 2
    hit = qmax[np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)] > DETECT_Q
    r = np.hypot(fx[inside] * nx, fy[inside] * ny)
    missing = int((~hit & (r <= (r[hit].max() if hit.any() else 0))).sum())
    return int(hit.sum()), float(inside.sum() * (1 - (1 - 2.0 ** -DETECT_Q) ** 9)), missing


@dataclass
class LatticeCheck:
    """A stated pixel size against the lattice.

    Attributes:
        stated_A: the pixel size given or read from the file (Å).
        fit: the lattice measured near it (`LatticeFit`).
        deviation_x, deviation_y: stated / measured - 1 along x and y (0.1 = the stated size is 10 % too large).
        disagrees: the lattice was found and a deviation exceeds the tolerance.
        message: one line for the user (empty when nothing is to be said).
    """

    stated_A: float
    fit: LatticeFit
    deviation_x: float = float("nan")
    deviation_y: float = float("nan")
    disagrees: bool = False
    message: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fit"] = self.fit.to_dict()
        return d


def check_pixel_size(image: np.ndarray, pixel_size_A: float, tolerance: float = TOLERANCE,
                     material: Material = CERIA, *, spectrum: Spectrum | None = None) -> LatticeCheck:
    """Compare `pixel_size_A` (Å) with the pixel size measured from the lattice of `image` `[y, x]`.

    `spectrum`: the image's `image_spectrum` when already computed.

    Example:
        >>> import numpy as np
        >>> img = lattice_image((256, 256), 0.1, rng=np.random.default_rng(2))
        >>> check_pixel_size(img, 0.11).disagrees, check_pixel_size(img, 0.1).disagrees
        (True, False)
    """
    fit = measure_lattice(image, pixel_size_A, material=material, spectrum=spectrum)
    if not fit.confident:
        return LatticeCheck(pixel_size_A, fit, message=f"no {material.name} lattice found near "
                                                          f"{pixel_size_A:.4g} Å/px: the pixel size is unchecked")
    dx, dy = pixel_size_A / fit.pixel_size_x_A - 1, pixel_size_A / fit.pixel_size_y_A - 1
    # the mean pixel size off by more than the tolerance (and three standard errors), or one axis off by
    # more than the tolerance and three times the spots' r.m.s. misfit (x and y alone are less certain)
    dm = pixel_size_A / fit.pixel_size_A - 1
    bad = bool(abs(dm) > max(tolerance, 3 * np.hypot(fit.rel_err_x, fit.rel_err_y) / 2)
               or max(abs(dx), abs(dy)) > max(tolerance, 3 * fit.residual))
    msg = ""
    if bad:
        msg = (f"the pixel size {pixel_size_A:.4g} Å disagrees with the {material.name} lattice "
               f"({fit.pixel_size_x_A:.4g} Å along x, {fit.pixel_size_y_A:.4g} Å along y: {dx:+.1%} / {dy:+.1%}); "
               "check the calibration or pass `pixel_size_A='lattice'`")
    return LatticeCheck(pixel_size_A, fit, float(dx), float(dy), bad, msg)


def lattice_image(shape: tuple[int, int], pixel_size_A: float, pixel_y_A: float | None = None,
                  rotation_deg: float = 17.0, material: Material = CERIA, zone: tuple[int, int, int] | None = None,
                  noise: float = 0.5, rng: np.random.Generator | None = None) -> np.ndarray:
    """A synthetic lattice image `[y, x]`: cosines at the zone's reflections (d >= 1 Å), plus Gaussian noise.

    `pixel_size_A` is the pixel size along x (Å), `pixel_y_A` along y (default the same); amplitudes fall
    with |g| like a CTF envelope; `noise` is the noise sigma relative to the strongest cosine.
    """
    rng = rng or np.random.default_rng()
    py = pixel_y_A or pixel_size_A
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    x_A, y_A = xx * pixel_size_A, yy * py
    img = np.zeros(shape)
    t = np.deg2rad(rotation_deg)
    for r in zone_reflections(material, zone, d_min_A=1.0):
        if r.gy < 0 or (r.gy == 0 and r.gx < 0):
            continue
        kx, ky = _rotate(np.array([r.gx]), np.array([r.gy]), t)
        amp = np.exp(-((1 / r.d_A) / 0.5) ** 2)
        img += amp * np.cos(2 * np.pi * (kx[0] * x_A + ky[0] * y_A) + rng.uniform(0, 2 * np.pi))
    return (img + noise * rng.standard_normal(shape)).astype(np.float32)
