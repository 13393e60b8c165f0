"""A simulated in-situ HRTEM movie of one CeO2 [110] nanoparticle with known events and exact ground truth.

The particle changes three times (a Ce atom lost from a surface column, two O atoms lost from one
O column, a Ce atom migrating between two nearby surface columns); between changes it only drifts.
Each of the four structure states is simulated once by multislice; every frame is that clean
image shifted by the frame's drift, blurred by the drift during the exposure, and detected with
new shot noise at the frame dose. Lengths in Å, times in s, doses in e/Å² per frame.

Pixel convention (as `hrtem3d.jobs.demo`): sample (row i, column j) of a frame sits at
(y, x) = (i, j) x pixel size, so a column at x_A appears at x_px = x_A / pixel_size_A.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from scipy import ndimage
from scipy.spatial import cKDTree

from hrtem3d.contracts import TRUTH_EVENT_FIELDS, TRUTH_FIELDS
from hrtem3d.fsutil import atomic_write
from hrtem3d.simulate.multislice import MultisliceConfig, exit_wave
from hrtem3d.simulate.optics import Detector, Optics, blur, detect, image_intensity
from hrtem3d.simulate.scope import fourier_resample
from hrtem3d.structure import CERIA, ParticleEnvelope, column_table, random_particle
from hrtem3d.structure.columns import column_keys

SITE_SEPARATION_A = 6.0  # minimum distance between event sites, and from the image edge (Å)
MIGRATION_RANGE_A = (3.0, 7.0)  # distance between the two columns of the migration (Å)
MAX_PARTICLES = 20  # particles drawn before giving up on finding event sites
BULK_CE_NEIGHBOURS = 6  # Ce columns within 4.2 Å of a bulk Ce column in CeO2 [110]


def default_optics() -> Optics:
    """The fixed optics used when none is given: NCSI-like, inside the training envelope (as the demo)."""
    return Optics(c1_A=60.0, c3_A=-1.0e5, c5_A=5e6, focal_spread_A=30.0, aperture_mrad=25.0)


@dataclass
class MovieConfig:
    """Settings of a simulated movie.

    Attributes:
        n_frames: number of frames.
        dose_e_per_A2: electron dose per frame (e/Å²).
        frame_interval_s: time between frames (s); 0.133 s is 7.5 frames/s.
        event_frames: first frame showing each event (ce_loss, o_vacancy, migration), strictly
            increasing in 1..n_frames-1; the structure changes between frame f-1 and f.
        drift_A_per_frame: typical drift speed (Å/frame); its direction is random and turns slowly.
        diameter_A: particle size range (Å, {100}-to-{100} width).
        pixel_size_A: requested pixel size of the frames (Å). The clean image is Fourier-resampled
            from the multislice store sampling to the nearest size that divides the cell into a
            whole number of pixels; `SimulatedMovie.pixel_size_A` is that exact value.
        mtf_half: detector MTF half point as a fraction of the frame's Nyquist frequency (0 = no MTF).
        optics: objective-lens state; None gives `default_optics()`.
        multislice: multislice settings (the cell is store_gpts x store_sampling_A).
    """

    n_frames: int = 24
    dose_e_per_A2: float = 1000.0
    frame_interval_s: float = 0.133
    event_frames: tuple[int, int, int] = (6, 12, 18)
    drift_A_per_frame: float = 0.15
    diameter_A: tuple[float, float] = (28.0, 32.0)
    pixel_size_A: float = 0.16
    mtf_half: float = 1.0
    optics: Optics | None = None
    multislice: MultisliceConfig = field(default_factory=MultisliceConfig)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work."""
        f = tuple(int(v) for v in self.event_frames)
        if len(f) != 3 or not (1 <= f[0] < f[1] < f[2] <= self.n_frames - 1):
            raise ValueError(f"event_frames must be 3 strictly increasing frames in 1..n_frames-1 "
                             f"(n_frames={self.n_frames}), got {self.event_frames}")
        if not (self.dose_e_per_A2 > 0 and self.frame_interval_s > 0 and self.pixel_size_A > 0):
            raise ValueError("dose_e_per_A2, frame_interval_s and pixel_size_A must be positive")
        if not self.drift_A_per_frame >= 0 or self.mtf_half < 0:
            raise ValueError("drift_A_per_frame and mtf_half must not be negative")
        if round(self.multislice.cell_A / self.pixel_size_A) < 16:
            raise ValueError(f"pixel_size_A {self.pixel_size_A} Å leaves fewer than 16 pixels on the "
                             f"{self.multislice.cell_A:g} Å cell")
        self.multislice.validate()
        ParticleEnvelope(diameter_A=self.diameter_A).validate()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SimulatedMovie:
    """A simulated movie and its ground truth.

    Attributes:
        frames: float32 `[n_frames, ny, nx]`, noisy counts (electrons per pixel).
        pixel_size_A: pixel size of the frames (Å).
        frame_interval_s: time between frames (s).
        truth: one row per true column per frame: frame, species, x_A, y_A, x_px, y_px
            (drift included: where the column sits in that frame), n_atoms, key_u, key_v.
        events: one row per column change: frame (first frame showing it), kind, species,
            key_u, key_v, x_A, y_A, x_px, y_px (at that frame), n_before, n_after.
        drift_A: `[n_frames, 2]` (dx, dy) shift of each frame (Å), zero on frame 0.
        clean: float32 `[n_frames, ny, nx]` noise-free intensity of each frame (vacuum 1),
            drift and drift blur included, detector MTF not.
        info: provenance: seed, particle parameters, optics, config, formula of each state.
    """

    frames: np.ndarray
    pixel_size_A: float
    frame_interval_s: float
    truth: pd.DataFrame
    events: pd.DataFrame
    drift_A: np.ndarray
    clean: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def simulate_movie(config: MovieConfig | None = None, seed: int = 0, progress: bool = False) -> SimulatedMovie:
    """Simulate a noisy movie of one CeO2 [110] particle with three events (see the module doc).

    The same `config` and `seed` give the same movie. Raises ValueError for bad settings or when
    `MAX_PARTICLES` drawn particles offer no suitable event sites.
    """
    from tqdm.auto import tqdm

    config = config or MovieConfig()
    config.validate()
    ms = config.multislice
    optics = config.optics or default_optics()
    rng = np.random.default_rng(seed)
    n_px = int(round(ms.cell_A / config.pixel_size_A))
    pixel = ms.cell_A / n_px
    drift = smooth_drift(config.n_frames, config.drift_A_per_frame, rng)
    env = ParticleEnvelope(diameter_A=tuple(config.diameter_A), tilt_deg=0.0, adatoms=0)
    for _ in range(MAX_PARTICLES):
        atoms, params = random_particle(rng, env, cell_A=(ms.cell_A, ms.cell_A))
        atoms = _pad_along_beam(atoms)
        states = _apply_events(atoms, rng, drift, ms.cell_A)
        if states is not None:
            break
    else:
        raise ValueError(f"none of {MAX_PARTICLES} particles drawn with diameter {config.diameter_A} Å had "
                         f"event sites {SITE_SEPARATION_A:g} Å apart and from the edge of the "
                         f"{ms.cell_A:g} Å cell: use a larger particle or cell")
    structures, changes = states

    clean_states = []
    for s in tqdm(structures, desc="multislice", unit="state", disable=not progress):
        wave = exit_wave(s, ms, seed=params.seed)
        clean_states.append(fourier_resample(image_intensity(wave, optics, ms.store_sampling_A), n_px))
    tables = [column_table(s) for s in structures]

    ev = np.asarray(config.event_frames)
    state_of = np.searchsorted(ev, np.arange(config.n_frames), side="right")
    velocity = np.gradient(drift, axis=0) if config.n_frames > 1 else np.zeros_like(drift)
    frames = np.empty((config.n_frames, n_px, n_px), np.float32)
    clean = np.empty_like(frames)
    det = Detector(dose_e_per_A2=config.dose_e_per_A2, mtf_half=config.mtf_half)
    for f in tqdm(range(config.n_frames), desc="frames", unit="frame", disable=not progress):
        img = shift_image(clean_states[state_of[f]], drift[f] / pixel)
        speed = float(np.hypot(*velocity[f]))
        if speed > 0:  # the specimen moves during the exposure (taken as the whole frame interval)
            angle = float(np.degrees(np.arctan2(velocity[f, 1], velocity[f, 0])))
            img = blur(img, Detector(mtf_half=0.0, drift_A=speed, drift_angle_deg=angle), pixel)
        clean[f] = img
        frames[f] = detect(img, det, pixel, rng)

    truth = pd.concat([_drifted(tables[state_of[f]], drift[f], pixel).assign(frame=f)
                       for f in range(config.n_frames)], ignore_index=True)[TRUTH_FIELDS]
    events = _event_table(changes, tables, config.event_frames, drift, pixel)
    info = {"seed": seed, "particle": params.to_dict(), "optics": optics.to_dict(), "config": config.to_dict(),
            "formula": [s.get_chemical_formula() for s in structures]}
    return SimulatedMovie(frames=frames, pixel_size_A=pixel, frame_interval_s=config.frame_interval_s,
                          truth=truth, events=events, drift_A=drift, clean=clean, info=info)


def write_movie(movie: SimulatedMovie, out_dir: str | Path) -> dict:
    """Write `movie.tif`, `truth_columns.csv` and `truth_events.csv` into `out_dir` (atomically).

    The TIFF is an ImageJ float32 hyperstack (axes TYX) with the pixel size in nm in the resolution
    tags and the frame interval as ImageJ's `finterval` (s), which `hrtem3d.io.open_image` reads back
    as `pixel_size_A` and `frame_interval_s`. Returns {"movie", "truth_columns", "truth_events"}: paths.
    """
    import tifffile

    out = Path(out_dir)
    px_per_nm = 10.0 / movie.pixel_size_A
    meta = {"axes": "TYX", "unit": "nm", "finterval": float(movie.frame_interval_s)}

    def write_tif(p: Path) -> None:
        tifffile.imwrite(p, np.ascontiguousarray(movie.frames, np.float32), imagej=True,
                         resolution=(px_per_nm, px_per_nm), metadata=meta)

    return {
        "movie": atomic_write(out / "movie.tif", write_tif),
        "truth_columns": atomic_write(out / "truth_columns.csv",
                                      lambda p: movie.truth.to_csv(p, index=False, float_format="%.5f")),
        "truth_events": atomic_write(out / "truth_events.csv",
                                     lambda p: movie.events.to_csv(p, index=False, float_format="%.5f")),
    }


def smooth_drift(n_frames: int, speed_A: float, rng: np.random.Generator) -> np.ndarray:
    """Cumulative drift `[n_frames, 2]` (dx, dy, Å), zero on frame 0.

    Each step has length `speed_A` x (1 + 10 % jitter); the direction starts at random and
    turns by a random walk of 0.1 rad per frame, so the path is smooth.
    """
    n = max(n_frames - 1, 0)
    theta = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0.0, 0.1, n))
    step = speed_A * np.clip(1 + 0.1 * rng.standard_normal(n), 0.5, 1.5)
    steps = step[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    return np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def shift_image(image: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """`image` moved by `shift_px` = (dx, dy) pixels (periodic, band-limited Fourier shift), float32."""
    f = ndimage.fourier_shift(np.fft.fft2(image), (float(shift_px[1]), float(shift_px[0])))
    return np.fft.ifft2(f).real.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------
# Structure changes
# ---------------------------------------------------------------------------------------------------------


def _pad_along_beam(atoms: Atoms) -> Atoms:
    """Move atoms one lattice repeat deeper and thicken the cell by two, so an atom can be added at
    either end of a column without changing the cell; all four states then share one geometry."""
    step = CERIA.spacing_along_beam_A
    out = atoms.copy()
    out.positions[:, 2] += step
    out.cell[2, 2] = atoms.cell[2, 2] + 2 * step
    return out


def _edit(atoms: Atoms, remove: list[int], add: tuple[str, np.ndarray, np.ndarray] | None = None) -> Atoms:
    """Copy of `atoms` without atoms `remove`, plus (symbol, position, lattice position) if given."""
    keep = np.ones(len(atoms), bool)
    keep[remove] = False
    sym = list(np.array(atoms.get_chemical_symbols())[keep])
    pos, lat = atoms.positions[keep], atoms.arrays["lattice_pos"][keep]
    if add is not None:
        sym.append(add[0])
        pos, lat = np.vstack([pos, add[1]]), np.vstack([lat, add[2]])
    out = Atoms(symbols=sym, positions=pos, cell=atoms.cell)
    out.arrays["lattice_pos"] = lat
    out.info.update(atoms.info)
    return out


def _column_atoms(atoms: Atoms, species: str, key: tuple[int, int]) -> np.ndarray:
    """Indices of the atoms of one column, ordered by z."""
    keys = column_keys(atoms.arrays["lattice_pos"])
    sym = np.array(atoms.get_chemical_symbols())
    idx = np.flatnonzero((sym == species) & (keys[:, 0] == key[0]) & (keys[:, 1] == key[1]))
    return idx[np.argsort(atoms.positions[idx, 2])]


def _surface_ce(cols: pd.DataFrame) -> np.ndarray:
    """Mask of Ce columns at the projected periphery: fewer than the 6 Ce column neighbours of the
    bulk in [110] (4 at 3.31 Å, 2 at 3.83 Å; the next are 5.41 Å away) within 1.1 a / sqrt 2 = 4.2 Å."""
    ce = np.flatnonzero(cols.species.to_numpy() == "Ce")
    mask = np.zeros(len(cols), bool)
    if len(ce):
        xy = cols[["x_A", "y_A"]].to_numpy()[ce]
        counts = np.array([len(n) - 1 for n in cKDTree(xy).query_ball_point(xy, 1.1 * CERIA.a_A / np.sqrt(2))])
        mask[ce[counts < BULK_CE_NEIGHBOURS]] = True
    return mask


def _apply_events(atoms: Atoms, rng: np.random.Generator, drift: np.ndarray, cell_A: float):
    """Pick the three event sites and build the four states; None when this particle has no valid sites.

    Returns ([before, after ce_loss, after o_vacancy, after migration], changes), each change a dict
    with kind, species, key (u, v) and state (index of the state it first appears in).
    """
    cols = column_table(atoms)
    xy = cols[["x_A", "y_A"]].to_numpy()
    lo, hi = xy + drift.min(0), xy + drift.max(0)
    inside = np.all((lo >= SITE_SEPARATION_A) & (hi <= cell_A - SITE_SEPARATION_A), axis=1)
    n = cols.n_atoms.to_numpy()
    surface = _surface_ce(cols) & inside
    ce_loss = np.flatnonzero(surface & (n >= 2))
    o_site = np.flatnonzero((cols.species.to_numpy() == "O") & (n >= 3) & inside)
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    pairs = [(a, b) for a in ce_loss for b in np.flatnonzero(surface)
             if a != b and MIGRATION_RANGE_A[0] <= dist[a, b] <= MIGRATION_RANGE_A[1]]
    if not pairs or not len(o_site):
        return None
    for i in rng.permutation(len(pairs)):
        a, b = pairs[i]
        far = (dist[:, a] >= SITE_SEPARATION_A) & (dist[:, b] >= SITE_SEPARATION_A)
        c_options = ce_loss[far[ce_loss]]
        for c in rng.permutation(c_options)[:20]:
            o_options = o_site[far[o_site] & (dist[o_site, c] >= SITE_SEPARATION_A)]
            if len(o_options):
                return _build_states(atoms, cols, int(c), int(rng.choice(o_options)), int(a), int(b), rng)
    return None


def _build_states(atoms: Atoms, cols: pd.DataFrame, c: int, o: int, a: int, b: int, rng: np.random.Generator):
    key = {i: (int(cols.key_u[i]), int(cols.key_v[i])) for i in (c, o, a, b)}
    # 1: one Ce atom leaves the end (top or bottom, at random) of surface column c
    col = _column_atoms(atoms, "Ce", key[c])
    s1 = _edit(atoms, [col[-1] if rng.random() < 0.5 else col[0]])
    # 2: the two end atoms (top and bottom) of O column o leave
    col = _column_atoms(s1, "O", key[o])
    s2 = _edit(s1, [col[0], col[-1]])
    # 3: the end atom of column a moves to the next free lattice site at the same end of column b
    top = rng.random() < 0.5
    col_a, col_b = _column_atoms(s2, "Ce", key[a]), _column_atoms(s2, "Ce", key[b])
    end = col_b[-1] if top else col_b[0]
    step_pos, step_lat = _column_step(s2, col_b, top)
    new = ("Ce", s2.positions[end] + step_pos, s2.arrays["lattice_pos"][end] + step_lat)
    s3 = _edit(s2, [col_a[-1] if top else col_a[0]], add=new)
    if not (0 < new[1][2] < s3.cell[2, 2]):
        raise AssertionError("the migrated atom left the simulation cell")  # impossible after _pad_along_beam
    changes = [{"kind": "ce_loss", "species": "Ce", "key": key[c], "state": 1},
               {"kind": "o_vacancy", "species": "O", "key": key[o], "state": 2},
               {"kind": "migration", "species": "Ce", "key": key[a], "state": 3},
               {"kind": "migration", "species": "Ce", "key": key[b], "state": 3}]
    return [atoms, s1, s2, s3], changes


def _column_step(atoms: Atoms, col: np.ndarray, top: bool) -> tuple[np.ndarray, np.ndarray]:
    """One lattice repeat along column `col` (z-ordered), pointing out of its top or bottom end:
    (position step, lattice-position step), both in Å. A one-atom column uses the beam direction."""
    spacing = CERIA.spacing_along_beam_A
    if len(col) < 2:
        frame = CERIA.zone_frame()
        beam = frame[2] * spacing  # crystal frame: the zone axis; with zero tilt it maps to +z
        return np.array([0.0, 0.0, spacing]) * (1 if top else -1), beam * (1 if top else -1)
    end, nb = (col[-1], col[-2]) if top else (col[0], col[1])
    d_pos = atoms.positions[end] - atoms.positions[nb]
    d_lat = atoms.arrays["lattice_pos"][end] - atoms.arrays["lattice_pos"][nb]
    repeats = max(int(round(np.linalg.norm(d_lat) / spacing)), 1)  # a vacancy may sit in between
    return d_pos / repeats, d_lat / repeats


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def _drifted(cols: pd.DataFrame, d: np.ndarray, pixel: float) -> pd.DataFrame:
    x, y = cols.x_A.to_numpy() + d[0], cols.y_A.to_numpy() + d[1]
    return cols.assign(x_A=x, y_A=y, x_px=x / pixel, y_px=y / pixel)


def _event_table(changes: list[dict], tables: list[pd.DataFrame], event_frames, drift: np.ndarray,
                 pixel: float) -> pd.DataFrame:
    rows = []
    for ch in changes:
        s, f = ch["state"], int(event_frames[ch["state"] - 1])
        n = []
        for t in (tables[s - 1], tables[s]):
            hit = t[(t.species == ch["species"]) & (t.key_u == ch["key"][0]) & (t.key_v == ch["key"][1])]
            n.append((int(hit.n_atoms.iloc[0]), hit) if len(hit) else (0, hit))
        where = n[1][1] if len(n[1][1]) else n[0][1]
        x, y = float(where.x_A.iloc[0]) + drift[f, 0], float(where.y_A.iloc[0]) + drift[f, 1]
        rows.append({"frame": f, "kind": ch["kind"], "species": ch["species"], "key_u": ch["key"][0],
                     "key_v": ch["key"][1], "x_A": x, "y_A": y, "x_px": x / pixel, "y_px": y / pixel,
                     "n_before": n[0][0], "n_after": n[1][0]})
    return pd.DataFrame(rows, columns=TRUTH_EVENT_FIELDS)
