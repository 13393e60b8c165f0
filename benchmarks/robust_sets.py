"""Shifted test sets for the robustness benchmark: CeO2 [110] particles imaged at 300 kV by abTEM.

Each set is the clean base plus one effect (or all of them). Particle i of every set shares the base
particle, optics and field (drawn from ``[seed, i]``), so a set differs from ``clean_0p10`` by its effect
only; effect parameters come from ``[seed, i, crc32(set name)]``. Base optics: C10 20..90 Å (abTEM sign,
+ = overfocus, relative to the particle's exit surface whatever carbon lies below it), C30 -15..-5 µm,
C50 0..10 mm, focal spread (1/e) 20..50 Å, aperture 20..30 mrad; a mild detector MTF
1 / (1 + (q / q_half)^2) with q_half 0.8..1.4 of the native Nyquist frequency (the training family:
``mtf_none`` removes it, ``mtf_strong`` replaces it). The simulation cell is 54.6 Å wide (a common
multiple of 0.05, 0.07, 0.10, 0.13 and 0.15 Å), imaged at potential sampling 0.05 Å; the saved field is
45..50 Å around the particle. Doses 300, 1000 and 5000 e/Å². Ranges of the effects: `SETS` (astigmatism
C12 1..3 nm, coma C21 50..150 nm, three-fold C23 33..100 nm: the upper two thirds of "up to" each).
Two sets probe the far side of the design envelope that the base particles leave out (tilt 0..0.5 degree,
no vacancies): ``tilt`` (0.6..1 degree about a random in-plane axis) and ``vacancies`` (O 2..8 %, Ce 1..3 %
of the particle's atoms taken out at random); neither is part of ``all``.

Files in CACHE/<set>/: ``p{i}_dose{D}.tif`` (uint16 noisy image, ImageJ pixel size in nm; ADU = gain x
electrons, gain in meta), ``p{i}_clean.tif`` (float32 noise-free intensity before the MTF, vacuum about 1),
``p{i}_columns.json`` (truth: species, x, y = x_px, y_px in pixel-index coordinates with (0, 0) the centre of
the first pixel, x_A = x_px x pixel size, y_A, n_atoms), ``p{i}_meta.json`` and ``meta.json`` (written last).
Sets already built with the same settings are skipped. Repeated abTEM runs differ at 1e-6: keep the files.

    python benchmarks/robust_sets.py [--sets clean_0p10,astig] [--cache /work/data/robust] [--n-particles 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import robust_imaging as im
import robust_particles as rp
from scipy.spatial import cKDTree

DOSES = (300.0, 1000.0, 5000.0)
FORMAT = 2  # bump when the images a setting gives change (it is part of every set's key)
TWO_PI = 2 * np.pi
# every set: the clean base plus what it names; ranges are drawn uniformly per particle
SETS: dict[str, dict] = {
    "clean_0p10": {},
    "pix_0p05": {"pixel_A": 0.05}, "pix_0p07": {"pixel_A": 0.07},
    "pix_0p13": {"pixel_A": 0.13}, "pix_0p15": {"pixel_A": 0.15},
    "mtf_none": {"mtf": "none"}, "mtf_strong": {"mtf": "strong"},
    "phonons": {"phonons": (8, 16)},
    "carbon": {"carbon_A": (0.0, 30.0)},
    "astig": {"C12": (10.0, 30.0)}, "coma": {"C21": (500.0, 1500.0)}, "astig3": {"C23": (333.0, 1000.0)},
    "vibration": {"vibration_A": (0.05, 0.25)}, "drift": {"drift_A": (0.05, 0.25)},
    "background": {"background": 0.5},
    "kirkland": {"parametrization": "kirkland"}, "slice1": {"slice_A": 1.0},
    "shapes": {"family": "shapes"},
}
SETS["all"] = {k: v for spec in SETS.values() for k, v in spec.items() if k not in ("pixel_A", "mtf")}
SETS["all"].update({"pixel_A": (0.05, 0.15), "mtf": "strong", "family": "shapes_any"})
# the far side of the design envelope that the base particles leave out (their tilt is 0..0.5 degrees and
# they have no vacancies); not part of "all", whose images stay those measured since the first look
SETS["tilt"] = {"tilt_deg": (0.6, 1.0)}
SETS["vacancies"] = {"vacancy_O": (0.02, 0.08), "vacancy_Ce": (0.01, 0.03)}


@dataclass
class BuildConfig:
    """What every set shares. Lengths in Å, doses in e/Å².

    Attributes:
        cell_A: lateral simulation cell (periodic); field_A: range of the saved field's width.
        sampling_A: potential and multislice sampling; slice_A: default slice thickness.
        diameter_A: projected particle width range (the shapes set uses about 20 and 40 Å).
        pixel_A: native pixel size of the base; doses: the noisy images per particle.
    """

    n_particles: int = 4
    seed: int = 2026
    cell_A: float = 54.6
    field_A: tuple[float, float] = (45.0, 50.0)
    sampling_A: float = 0.05
    slice_A: float = 2.0
    diameter_A: tuple[float, float] = (20.0, 40.0)
    pixel_A: float = 0.10
    doses: tuple[float, ...] = DOSES
    threads: int = 1

    def key(self, name: str) -> str:
        """Hash of everything that changes the particles of set `name` (not n_particles nor threads)."""
        d = dataclasses.asdict(self)
        for k in ("n_particles", "threads"):
            d.pop(k)
        blob = json.dumps([FORMAT, name, SETS[name], d], sort_keys=True, default=list)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _u(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi)) if isinstance(lo_hi, (tuple, list)) else float(lo_hi)


def draw_base(cfg: BuildConfig, i: int) -> dict:
    """Particle shape, optics, MTF and field of particle i (shared by all sets)."""
    rng = np.random.default_rng([cfg.seed, i])
    optics = {"C10": rng.uniform(20, 90), "C30": rng.uniform(-15, -5) * 1e4, "C50": rng.uniform(0, 10) * 1e7,
              "focal_spread": rng.uniform(20, 50), "aperture": rng.uniform(20, 30)}
    shape = rp.draw_shape(rng, "wulff", rng.uniform(*cfg.diameter_A))
    return {"optics": {k: float(v) for k, v in optics.items()}, "shape": shape,
            "mtf_q_half": float(rng.uniform(0.8, 1.4)), "field_A": float(rng.uniform(*cfg.field_A)),
            "shift": rng.uniform(-1, 1, 2).tolist(),
            "film_seed": int(rng.integers(2**31)), "phonon_seed": int(rng.integers(2**31))}


def draw_effects(name: str, cfg: BuildConfig, i: int) -> dict:
    """The effects of set `name` for particle i, drawn inside their ranges (angles in rad, lengths in Å)."""
    spec = SETS[name]
    rng = np.random.default_rng([cfg.seed, i, zlib.crc32(name.encode())])
    e: dict = {"pixel_A": _u(rng, spec.get("pixel_A", cfg.pixel_A)), "mtf": spec.get("mtf", "lorentz"),
               "parametrization": spec.get("parametrization", "lobato"), "slice_A": spec.get("slice_A", cfg.slice_A)}
    for c in ("C12", "C21", "C23"):
        if c in spec:
            e[c], e["phi" + c[1:]] = _u(rng, spec[c]), float(rng.uniform(0, TWO_PI))
    if "phonons" in spec:
        e["phonons"] = int(rng.integers(spec["phonons"][0], spec["phonons"][1] + 1))
    if "carbon_A" in spec:
        e["carbon_A"] = _u(rng, spec["carbon_A"])
    if "vibration_A" in spec:
        e["vibration"] = {"sigma_A": _u(rng, spec["vibration_A"]), "ratio": float(rng.uniform(0.3, 1.0)),
                          "angle": float(rng.uniform(0, np.pi))}
    if "drift_A" in spec:
        e["drift"] = {"length_A": _u(rng, spec["drift_A"]), "angle": float(rng.uniform(0, np.pi))}
    if "tilt_deg" in spec:
        e["tilt_deg"] = _u(rng, spec["tilt_deg"])
    if "vacancy_O" in spec:
        e["vacancies"] = {"O": _u(rng, spec["vacancy_O"]), "Ce": _u(rng, spec["vacancy_Ce"]),
                          "seed": int(rng.integers(2**31))}
    if "background" in spec:
        e["background"] = {"contrast": spec["background"], "variation": float(rng.uniform(0.1, 0.3)),
                           "seed": int(rng.integers(2**31))}
    fam = spec.get("family")
    if fam == "shapes":
        e["shape"] = rp.draw_shape(rng, "shapes", (20.0 if i % 2 == 0 else 40.0) + rng.uniform(-1, 1))
    elif fam == "shapes_any":
        e["shape"] = rp.draw_shape(rng, "shapes", rng.uniform(*cfg.diameter_A))
    e["noise_seed"] = int(rng.integers(2**31))
    return e


def _assemble(cfg: BuildConfig, base: dict, shape: dict, carbon_A: float, vacancies: dict | None = None):
    """ase.Atoms of the particle (centred in the cell, shifted) over a carbon film, truth in cell coordinates,
    the particle's atom count and the distance (Å) from its exit surface to the exit plane of the cell.
    `vacancies` ({"O": fraction, "Ce": fraction, "seed": int}) removes atoms of each species at random."""
    from ase import Atoms

    pos, sym = rp.cut_particle(shape)
    if vacancies:
        r = np.random.default_rng(vacancies["seed"]).random(len(sym))
        keep = ~(((sym == "O") & (r < vacancies["O"])) | ((sym == "Ce") & (r < vacancies["Ce"])))
        pos, sym = pos[keep], sym[keep]
    width = np.ptp(pos[:, :2], axis=0)
    room = np.clip((base["field_A"] - width) / 2 - 3.0, 0, 2.0)
    pos[:, :2] += cfg.cell_A / 2 + np.asarray(base["shift"]) * room
    pos[:, 2] += 2.0 - pos[:, 2].min()
    cols = rp.column_truth(pos, sym)
    film = rp.carbon_film(np.random.default_rng(base["film_seed"]), (cfg.cell_A, cfg.cell_A), carbon_A)
    film[:, 2] += pos[:, 2].max() + 1.5
    allpos = np.concatenate([pos, film])
    symbols = list(sym) + ["C"] * len(film)
    depth = allpos[:, 2].max() + 2.0
    atoms = Atoms(symbols, positions=allpos, cell=[cfg.cell_A, cfg.cell_A, depth], pbc=True)
    return atoms, cols, len(pos), depth - pos[:, 2].max()


def build_particle(name: str, i: int, cfg: BuildConfig, folder: Path, wave_dir: Path) -> dict:
    """Simulate particle i of set `name` into `folder`; returns its meta (also written as p{i}_meta.json)."""
    import tifffile

    t0 = time.perf_counter()
    base, eff = draw_base(cfg, i), draw_effects(name, cfg, i)
    shape = eff.get("shape", base["shape"])
    if "tilt_deg" in eff:
        shape = dict(shape, tilt_deg=eff["tilt_deg"])
    carbon = eff.get("carbon_A", 0.0)
    atoms, cols, n_particle_atoms, below_A = _assemble(cfg, base, shape, carbon, eff.get("vacancies"))
    n = int(np.ceil(cfg.cell_A / cfg.sampling_A - 1e-6))
    sampling = cfg.cell_A / n
    static = "phonons" not in eff
    wave_id = [FORMAT, shape, carbon, eff["parametrization"], eff["slice_A"], sampling, cfg.seed, base["film_seed"]]
    if "vacancies" in eff:  # the same shape with atoms taken out: another wave (older keys unchanged)
        wave_id.append(eff["vacancies"])
    wave_key = hashlib.sha1(json.dumps(wave_id, sort_keys=True).encode()).hexdigest()[:16]
    wave_file = wave_dir / f"wave_{wave_key}.npy"
    cached = static and wave_file.exists()
    im.configure_abtem(cfg.threads)
    if cached:
        waves = im.waves_from_array(np.load(wave_file), sampling)
    else:
        ph = {"num_configs": eff["phonons"], "seed": base["phonon_seed"]} if not static else None
        waves = im.exit_waves(atoms, sampling, eff["slice_A"], eff["parametrization"], ph)
        base_particle = not ({"shape", "tilt_deg", "vacancies"} & eff.keys()) and not carbon
        if static and base_particle and eff["parametrization"] == "lobato" \
                and eff["slice_A"] == cfg.slice_A:  # the base wave, shared by many sets
            wave_dir.mkdir(parents=True, exist_ok=True)
            tmp = wave_file.with_suffix(".tmp.npy")
            np.save(tmp, np.asarray(waves.array, np.complex64))
            tmp.replace(wave_file)
    t_ms = time.perf_counter() - t0
    optics = dict(base["optics"], **{k: eff[k] for k in ("C12", "phi12", "C21", "phi21", "C23", "phi23") if k in eff})
    # C10 refers to the particle's exit surface: the wave left it `below_A` above the cell's exit plane, and
    # propagating that far adds below_A to the effective C10 (abTEM sign), so it is taken off here
    optics["C10_exit_plane"] = optics["C10"] - below_A
    fine = im.image_intensity(waves, dict(optics, C10=optics["C10_exit_plane"]))
    m = int(round(cfg.cell_A / eff["pixel_A"]))
    px = cfg.cell_A / m
    inten = im.fourier_resample(fine, m, im.intensity_transfer(m, px, eff.get("vibration"), eff.get("drift")))
    bg_info = None
    if "background" in eff:
        b = eff["background"]
        before = inten
        inten, bg_info = im.add_background(inten, np.random.default_rng(b["seed"]), px, b["contrast"], b["variation"])
        yy, xx = np.mgrid[:m, :m] * px
        near = cKDTree([[c["x_A"], c["y_A"]] for c in cols]).query(np.c_[xx.ravel(), yy.ravel()])[0] < 2.0
        near = near.reshape(m, m)  # the particle region: within 2 Å of a column
        bg_info["std_ratio_particle"] = float(inten[near].std() / before[near].std())
    m_field = int(round(base["field_A"] / px))
    o = (m - m_field) // 2
    sl = (slice(o, o + m_field), slice(o, o + m_field))
    mtf = im.detector_mtf(m, eff["mtf"], base["mtf_q_half"])
    folder.mkdir(parents=True, exist_ok=True)
    res = (10.0 / px, 10.0 / px)  # pixels per nm
    cases, gain = [], 1
    for dose in cfg.doses:
        rng = np.random.default_rng([eff["noise_seed"], int(dose)])
        noisy, gain = im.detect(inten, dose, px, rng, mtf)
        fname = f"p{i}_dose{int(dose)}.tif"
        tifffile.imwrite(folder / fname, noisy[sl], imagej=True, resolution=res, metadata={"unit": "nm"})
        cases.append({"image": fname, "particle": i, "dose_e_per_A2": dose, "pixel_size_angstrom": px,
                      "gain_adu_per_e": gain})
    tifffile.imwrite(folder / f"p{i}_clean.tif", inten[sl].astype(np.float32), imagej=True, resolution=res,
                     metadata={"unit": "nm"})
    truth = []
    for c in cols:
        x_px, y_px = c["x_A"] / px - o, c["y_A"] / px - o
        if 0 <= x_px <= m_field - 1 and 0 <= y_px <= m_field - 1:
            truth.append({**c, "x": x_px, "y": y_px, "x_px": x_px, "y_px": y_px, "x_A": x_px * px, "y_A": y_px * px})
    (folder / f"p{i}_columns.json").write_text(json.dumps(truth))
    meta = {"particle": i, "set": name, "key": cfg.key(name), "pixel_size_angstrom": px, "field_px": m_field,
            "cell_A": cfg.cell_A, "cell_px": m, "origin_px": o, "potential_sampling_A": sampling, "sim_gpts": n,
            "n_atoms_particle": n_particle_atoms, "n_atoms_carbon": len(atoms) - n_particle_atoms,
            "base": base if "shape" not in eff else {k: v for k, v in base.items() if k != "shape"},
            "effects": eff, "optics": optics, "background": bg_info, "cases": cases, "gain_adu_per_e": gain,
            "wave_from_cache": cached, "multislice_s": round(t_ms, 2),
            "build_s": round(time.perf_counter() - t0, 2), "n_columns": len(truth)}
    (folder / f"p{i}_meta.json").write_text(json.dumps(meta, indent=1, default=float))
    return meta


def set_is_built(folder: Path, name: str, cfg: BuildConfig) -> bool:
    """True when `folder` holds set `name` built with these settings and at least cfg.n_particles particles."""
    f = folder / "meta.json"
    if not f.exists():
        return False
    meta = json.loads(f.read_text())
    return meta.get("key") == cfg.key(name) and len(meta.get("particles", [])) >= cfg.n_particles


def build_set(name: str, cache: str | Path, cfg: BuildConfig | None = None, workers: int = 1,
              progress: bool = True) -> Path:
    """Build set `name` under `cache` (skipped when already there); returns its folder.

    Particles already written with the same settings are kept. `workers` > 1 simulates particles in a
    pool of at most 2 processes.
    """
    cfg = cfg or BuildConfig()
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    cache = Path(cache)
    folder = cache / name
    if set_is_built(folder, name, cfg):
        return folder
    todo, metas = [], {}
    for i in range(cfg.n_particles):
        f = folder / f"p{i}_meta.json"
        if f.exists() and json.loads(f.read_text()).get("key") == cfg.key(name):
            metas[i] = json.loads(f.read_text())
        else:
            todo.append(i)
    args = [(name, i, cfg, folder, cache / "_waves") for i in todo]
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(2, workers)) as pool:
            for meta in pool.starmap(build_particle, args):
                metas[meta["particle"]] = meta
    else:
        for a in args:
            meta = build_particle(*a)
            metas[meta["particle"]] = meta
            if progress:
                print(f"  {name} p{meta['particle']}: {meta['build_s']:.1f} s "
                      f"({'cached wave' if meta['wave_from_cache'] else 'multislice'} {meta['multislice_s']:.1f} s)",
                      flush=True)
    parts = [metas[i] for i in sorted(metas)]
    out = {"set": name, "spec": SETS[name], "key": cfg.key(name), "settings": dataclasses.asdict(cfg),
           "energy_eV": im.ENERGY_EV, "zone_axis": "[110]",
           "coords": "pixel index, x=column index, y=row index, (0,0)=centre of first pixel; x_A = x_px * pixel size",
           "cases": [c for p in parts for c in p["cases"]], "particles": parts}
    tmp = folder / "meta.json.tmp"
    tmp.write_text(json.dumps(out, indent=1, default=float))
    tmp.replace(folder / "meta.json")
    return folder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated set names")
    ap.add_argument("--cache", default="/work/data/robust", help="folder of the sets")
    ap.add_argument("--n-particles", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workers", type=int, default=1, help="particle processes (at most 2)")
    ap.add_argument("--threads", type=int, default=1, help="FFTW threads per process")
    a = ap.parse_args(argv)
    cfg = BuildConfig(n_particles=a.n_particles, seed=a.seed, threads=a.threads)
    for name in a.sets.split(","):
        t = time.perf_counter()
        folder = build_set(name.strip(), a.cache, cfg, workers=a.workers)
        print(f"{name}: {folder} ({time.perf_counter() - t:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
