"""Command line: `hrtem3d simulate | train | evaluate | segment | track | demo`.

Each command parses its options, calls one library function and prints a summary.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from hrtem3d.errors import HrtemError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Column depths (atoms per column) of nanoparticles from noisy HRTEM images "
                       "and movies: simulate training data, train, segment, track.")


def _friendly(fn):
    """Turn HrtemError and Ctrl-C into one line and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HrtemError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished work is kept; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_friendly
def simulate(
    out: Path = typer.Argument(..., help="Output dataset store (a new or partly written *.zarr folder)."),
    n_structures: int = typer.Option(100, "--n-structures", "-n", help="Number of particles to simulate."),
    workers: int = typer.Option(2, help="Local dask worker processes (0 = run in this process)."),
    scheduler: str = typer.Option(None, help="Address of a running dask scheduler, e.g. tcp://host:8786 "
                                             "(a cluster; overrides --workers)."),
    seed: int = typer.Option(0, help="Seed: the same seed and settings give the same dataset."),
    potential_sampling: float = typer.Option(0.05, help="Potential and multislice sampling (Å)."),
    store_sampling: float = typer.Option(0.16, help="Pixel size of the stored exit waves (Å)."),
    gpts: int = typer.Option(320, help="Stored exit-wave size (pixels); cell = gpts x store-sampling."),
    min_diameter: float = typer.Option(20.0, help="Smallest particle width (Å)."),
    max_diameter: float = typer.Option(40.0, help="Largest particle width (Å)."),
    frozen_phonons: int = typer.Option(0, help="Frozen-phonon configurations (0 = static lattice)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Simulate a training set: CeO2 [110] particles, multislice exit waves and column ground truth.

    Resumable: rerun the same command after an interruption and it simulates only what is missing.
    The electron optics and the noise are drawn later, per training sample.
    """
    from hrtem3d.data.generate import SimulationSettings, simulate_dataset

    s = SimulationSettings(seed=seed)
    s.multislice.potential_sampling_A = potential_sampling
    s.multislice.store_sampling_A = store_sampling
    s.multislice.store_gpts = gpts
    s.multislice.frozen_phonons = frozen_phonons
    s.particles.diameter_A = (min_diameter, max_diameter)
    r = simulate_dataset(out, n_structures, s, workers=workers, scheduler=scheduler, progress=progress)
    typer.echo(f"{out}: {r['total']} structures ({r['done']} simulated now, {r['skipped']} already there)")


@app.command()
@_friendly
def demo(out: Path = typer.Option(Path("demo_output"), help="Folder for the demo's figures and tables."),
         seed: int = typer.Option(7, help="Seed of the example particle.")) -> None:
    """Run the pipeline on a built-in simulated example and write its figures (a few minutes)."""
    from hrtem3d.demo import data_demo

    r = data_demo(out, seed=seed)
    typer.echo(f"simulated {r['formula']} ({r['atoms']} atoms, {r['columns']} columns, "
               f"deepest {r['max_depth']} atoms)")
    for f in r["files"]:
        typer.echo(f"wrote {f}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
