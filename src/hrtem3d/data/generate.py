"""Build a training set: random particles -> exit waves + ground truth, in parallel with dask.

Every structure depends only on (seed, index), so runs are deterministic, workers
never clash, and an interrupted run resumes by simulating what is missing.
Only the client process writes to the store, so any dask cluster works (workers
need hrtem3d installed, not a shared file system).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from hrtem3d.data import store
from hrtem3d.errors import HrtemError
from hrtem3d.labels import DEFAULT_SCHEME, ClassScheme, LabelConfig, make_targets
from hrtem3d.simulate import MultisliceConfig, exit_wave
from hrtem3d.structure import CERIA, ParticleEnvelope, column_table, random_particle

MATERIALS = {"CeO2": CERIA}
SCHEDULER_TIMEOUT_S = 15


@dataclass
class SimulationSettings:
    """Everything that determines a dataset (stored in the store, checked on resume)."""

    seed: int = 0
    material: str = "CeO2"
    multislice: MultisliceConfig = field(default_factory=MultisliceConfig)
    particles: ParticleEnvelope = field(default_factory=ParticleEnvelope)
    labels: LabelConfig = field(default_factory=LabelConfig)
    scheme: ClassScheme = DEFAULT_SCHEME
    envelope: dict | None = None  # the microscope envelope (simulate.envelope_file.Envelope.to_dict), or None

    def validate(self) -> None:
        """Raise HrtemError for impossible settings."""
        if self.material not in MATERIALS:
            raise HrtemError(f"unknown material {self.material!r}; known: {', '.join(MATERIALS)}")
        try:
            self.multislice.validate()
            self.particles.validate()
        except ValueError as e:
            raise HrtemError(f"impossible simulation settings: {e}") from None
        reach = self.particles.diameter_A[1] + 4
        if reach > self.multislice.cell_A:
            raise HrtemError(f"particles up to {self.particles.diameter_A[1]} Å do not fit the "
                             f"{self.multislice.cell_A:.1f} Å cell; raise `store_gpts` or lower `diameter_A`",
                             param="diameter_A")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scheme"] = self.scheme.to_dict()
        d["multislice"] = self.multislice.to_dict()
        if d["envelope"] is None:  # stores simulated without an envelope file keep their settings
            del d["envelope"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationSettings:
        def tuples(fields: dict) -> dict:  # JSON gives lists where the dataclasses hold (low, high) tuples
            return {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}

        return cls(seed=d["seed"], material=d["material"], multislice=MultisliceConfig(**tuples(d["multislice"])),
                   particles=ParticleEnvelope(**tuples(d["particles"])),
                   labels=LabelConfig(**d["labels"]), scheme=ClassScheme.from_dict(d["scheme"]),
                   envelope=d.get("envelope"))


def simulate_one(index: int, settings: dict) -> dict:
    """Simulate structure `index` of a dataset: particle, exit wave, column table, targets."""
    s = SimulationSettings.from_dict(settings)
    ms = s.multislice
    rng = np.random.default_rng([s.seed, index])
    atoms, params = random_particle(rng, s.particles, MATERIALS[s.material], (ms.cell_A, ms.cell_A))
    if ms.frozen_phonons and ms.phonon_share < 1:
        # its own stream, so the share does not change which particles are drawn
        if np.random.default_rng([s.seed, index, 1]).random() >= ms.phonon_share:
            ms = replace(ms, frozen_phonons=0)
    scale = 1.0
    if ms.frozen_phonons and tuple(ms.phonon_scale) != (1.0, 1.0):  # its own stream too
        scale = float(np.random.default_rng([s.seed, index, 2]).uniform(*ms.phonon_scale))
        ms = replace(ms, phonon_sigma_A={k: v * scale for k, v in ms.phonon_sigma_A.items()})
    wave = exit_wave(atoms, ms, seed=params.seed)
    cols = column_table(atoms, MATERIALS[s.material])
    cls, alpha = make_targets(cols, (ms.store_gpts, ms.store_gpts), ms.store_sampling_A, s.scheme, s.labels)
    return {"index": index, "exit_wave": wave, "cls": cls,
            "alpha": np.round(alpha * 255).astype(np.uint8), "columns": cols,
            "params": {**params.to_dict(), "formula": atoms.get_chemical_formula(),
                       "thickness_A": float(atoms.cell[2, 2]), "frozen_phonons": int(ms.frozen_phonons),
                       "phonon_scale": scale}}


def simulate_dataset(out: str | Path, n_structures: int, settings: SimulationSettings | None = None,
                     workers: int = 2, scheduler: str | None = None, progress: bool = True,
                     on_done: Callable[[int], None] | None = None, n_films: int = 16) -> dict:
    """Simulate structures 0..n_structures-1 into the zarr store `out` (resumable).

    Args:
        out: store path (`*.zarr`).
        n_structures: total number of structures wanted.
        settings: simulation settings (must match an existing store's).
        workers: local dask workers (processes, one thread each); 0 runs in this process.
        scheduler: address of a running dask scheduler (e.g. "tcp://host:8786"); overrides `workers`.
        progress: show a progress bar.
        on_done: called with each index once it is written.
        n_films: amorphous carbon films (1 nm each) to store for the training images' support film
            (`hrtem3d.simulate.film`); 0 for none.

    Returns:
        {"done": n written in this run, "skipped": n already present, "total": n_structures}.
    """
    settings = settings or SimulationSettings()
    settings.validate()
    if not 1 <= n_structures <= 10_000_000:
        raise HrtemError(f"`n_structures` must lie in 1..10000000, got {n_structures}", param="n_structures")
    root = store.create_or_open(out, settings.to_dict())
    store.remove_incomplete(root)
    have = store.completed(root)
    todo = [i for i in range(n_structures) if i not in have]
    sdict = settings.to_dict()
    bar = _progress(progress, initial=n_structures - len(todo), total=n_structures)

    def done(result: dict) -> None:
        store.write_structure(root, result)
        bar.update(1)
        if on_done:
            on_done(result["index"])

    try:
        if todo and scheduler is None and workers == 0:
            for i in todo:
                done(simulate_one(i, sdict))
        elif todo:
            _run_dask(todo, sdict, workers, scheduler, done)
    finally:
        bar.close()
    root.attrs["n_structures"] = max(n_structures, int(root.attrs.get("n_structures", 0)))
    ensure_film_bank(root, settings, n_films)
    return {"done": len(todo), "skipped": n_structures - len(todo), "total": n_structures}


FILM_THICKNESS_A = 10.0


def ensure_film_bank(root, settings: SimulationSettings, n_films: int = 16) -> None:
    """Simulate and store the bank of support-film exit waves, unless the store already has it."""
    if store.film_count(root) >= n_films:
        return
    from hrtem3d.simulate.film import carbon_film_bank

    waves = carbon_film_bank(n_films, settings.multislice, seed=settings.seed, thickness_A=FILM_THICKNESS_A)
    store.write_films(root, waves, FILM_THICKNESS_A)


def _run_dask(todo: list[int], sdict: dict, workers: int, scheduler: str | None,
              done: Callable[[dict], None], task: Callable[[int, dict], dict] = simulate_one) -> None:
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed.scheduler import KilledWorker

    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
        except OSError as e:
            raise HrtemError(f"cannot reach the dask scheduler at {scheduler} ({e}); "
                             "check the address or drop `scheduler` to run locally", param="scheduler") from None
        cluster = None
    else:
        if not 1 <= workers <= 512:
            raise HrtemError(f"`workers` must lie in 0..512, got {workers}", param="workers")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        window = max(4, 4 * max(1, len(client.scheduler_info().get("workers", {}))))
        pending = iter(todo)
        # islice, not zip(pending, range(window)): zip would draw one index too many and drop it
        futures = as_completed([client.submit(task, i, sdict, pure=False)
                                for i in itertools.islice(pending, window)])
        for fut in futures:
            try:
                result = fut.result()
            except KilledWorker:
                raise HrtemError("a dask worker died while simulating (out of memory?); finished "
                                 "structures are kept: rerun the same command to resume") from None
            except ValueError as e:
                raise HrtemError(f"simulation failed: {e}") from None
            fut.release()
            done(result)
            nxt = next(pending, None)
            if nxt is not None:
                futures.add(client.submit(task, nxt, sdict, pure=False))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _progress(enabled: bool, initial: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="structures", unit="structure")
