"""Command line: `hrtem3d simulate | train | evaluate | segment | track | demo`.

Each command parses its options, calls one library function and prints a summary.
User mistakes end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import functools
import re
import sys
import warnings
from pathlib import Path

import typer

from hrtem3d.errors import HrtemError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Column depths (atoms per column) of nanoparticles from noisy HRTEM images "
                       "and movies: simulate training data, train, segment, track.")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {_flags_in(str(message))}", err=True)


#: Library parameters (HrtemError.param, or `name` in a library message) and the options that set them.
_FLAGS = {"contrast": "--contrast", "tta": "--tta", "pixel_size_A": "--pixel-size", "stack_rule": "--stack-rule",
          "chunk": "--chunk", "workers": "--workers", "model": "--model", "out_dir": "--out", "fps": "--fps",
          "init": "--init", "widths": "--widths", "store_gpts": "--gpts", "diameter_A": "--max-diameter",
          "n_structures": "--n-structures", "scheduler": "--scheduler", "backend": "--backend",
          "lattice": "--lattice", "lattice_heads": "--lattice-heads", "contrast_gain": "--contrast-gain",
          "keep_thresholds": "--keep-thresholds"}
LATTICE_HELP = ("Read the columns as a static lattice (simulations without frozen phonons), a vibrating one "
                "(thermal diffuse scattering: every real specimen at room temperature; thick columns otherwise read "
                "0.5-1 atom low) or auto (each input routed by the shipped vibration gate, a movie once). With the "
                "shipped model: auto (default), static or vibrating; with a model trained with lattice heads: its "
                "readings, default its own. trust.json records the reading and the gate's p_vibrating.")
GAIN_HELP = ("How many times lower the lattice contrast is than in simulation (the Stobbs factor of your "
             "microscope, e.g. 2.5), or auto: the contrast gate's reading of the whole image when it is sure "
             "the contrast is lower, else 1 unless the particle's counts read thinner than its size allows, "
             "then estimated from the particle. Counts at an estimated gain carry a warning and confidence "
             "at most 0.5. Recorded in trust.json.")
BACKEND_HELP = ("How the network runs: auto (ONNX Runtime on the CPU, PyTorch on CUDA), onnx, "
                "torch, or int8 (quantised, calibrated on the first image: faster, less accurate; see "
                "docs/benchmarks.md).")
WHOLE_FRAME_HELP = ("Run the network on the whole frame. Default: only on boxes around what is not vacuum "
                    "(found by its lattice-band energy over shot noise, 10 Å of context kept); the rest "
                    "is background.")
_NAMED = re.compile(r"`(\w+)(?:=['\"]?([^`'\"]*)['\"]?)?`")


def _flags_in(text: str) -> str:
    """A library message in CLI terms: each `name` or `name=value` a known parameter becomes `--flag value`."""
    def flag(m: re.Match) -> str:
        opt = _FLAGS.get(m.group(1))
        if opt is None:
            return m.group(0)
        return f"{opt} {m.group(2)}" if m.group(2) else opt

    return _NAMED.sub(flag, text)


def _in_cli_terms(e: HrtemError) -> str:
    """The error's message, its parameter named as the option the user typed."""
    msg = _flags_in(str(e))
    flag = _FLAGS.get(getattr(e, "param", None) or "")
    if flag and flag not in msg and not msg.startswith("-"):
        msg = msg.replace(e.param, flag, 1) if e.param in msg else f"{flag}: {msg}"
    return msg


def _float_range(text: str, flag: str) -> tuple[float, float]:
    """`LOW,HIGH` as two floats, or a one-line HrtemError naming `flag`."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise HrtemError(f"{flag} must be two comma-separated numbers LOW,HIGH, got {text!r}") from None
    return lo, hi


def _friendly(fn):
    """Turn HrtemError and Ctrl-C into one line and an exit code; our warnings into one line each."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        warnings.showwarning = _one_line_warning
        try:
            return fn(*args, **kwargs)
        except HrtemError as e:
            typer.echo(f"error: {_in_cli_terms(e)}", err=True)
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
    phonon_share: float = typer.Option(1.0, help="Fraction of the structures given --frozen-phonons "
                                                 "configurations (thermal diffuse scattering); the rest static."),
    phonon_scale: str = typer.Option("1,1", help="Range LOW,HIGH of a factor on the thermal r.m.s. displacements "
                                                 "(Ce 0.055 Å, O 0.085 Å at room temperature), drawn per structure: "
                                                 "0.9,1.2 is room temperature; raise it for a heating holder."),
    facet_110: float = typer.Option(0.0, "--facet-110", help="Chance that a particle also has {110} facets."),
    films: int = typer.Option(16, help="Amorphous carbon support films (1 nm each) stored for training images."),
    envelope: Path = typer.Option(None, help="Microscope envelope TOML (voltage, aberrations, aperture, dose, "
                                  "pixel size, MTF, film...; start from the shipped default_envelope.toml): kept "
                                  "in the store, and train/evaluate draw the images from it."),
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
    s.multislice.phonon_share = phonon_share
    s.multislice.phonon_scale = _float_range(phonon_scale, "--phonon-scale")
    s.particles.facet_110_prob = facet_110
    s.particles.diameter_A = (min_diameter, max_diameter)
    if not 0 <= films <= 1000:
        raise HrtemError(f"--films must lie in 0..1000, got {films}")
    if envelope is not None:
        from hrtem3d.simulate.envelope_file import load_envelope

        env = load_envelope(envelope)
        s.envelope = env.to_dict()
        s.multislice.energy_eV = env.optics.energy_eV
    r = simulate_dataset(out, n_structures, s, workers=workers, scheduler=scheduler, progress=progress,
                         n_films=films)
    typer.echo(f"{out}: {r['total']} structures ({r['done']} simulated now, {r['skipped']} already there)")


@app.command()
@_friendly
def train(
    data: Path = typer.Argument(..., help="Dataset store made by `hrtem3d simulate`."),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (*.safetensors)."),
    steps: int = typer.Option(4000, help="Total optimiser steps (a resumed run continues to this)."),
    batch: int = typer.Option(16, help="Crops per step (per process under torchrun)."),
    crop: int = typer.Option(160, help="Crop side (pixels at the dataset's sampling)."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW, cosine decay)."),
    widths: str = typer.Option("16,32,64,128,256", help="U-Net filters per level, comma-separated."),
    seed: int = typer.Option(0, help="Seed for initialisation and data draws (same seed, same run)."),
    workers: int = typer.Option(1, help="Data-loading worker processes."),
    threads: int = typer.Option(0, help="Torch CPU threads (0 = torch's default)."),
    val_every: int = typer.Option(250, help="Steps between validations."),
    normalization: str = typer.Option("relative", help="Input normalisation: relative (intensity over the "
                                      "frame's mean, minus 1), mean/std (per-image standardisation) or "
                                      "median/MAD (the first model's)."),
    scope: bool = typer.Option(True, help="Form training images as a microscope would (native pixel sizes "
                                          "0.045-0.16 Å, calibration error, carbon film, residual "
                                          "aberrations, vibration, background, MTF) and resample them as "
                                          "segment does; --no-scope trains on the store's grid only."),
    init: Path = typer.Option(None, help="Start from this model file's weights (fine-tuning; same --widths)."),
    lattice_heads: bool = typer.Option(False, help="Two readings, for a static and for a vibrating lattice "
                                       "(thermal diffuse scattering), mixed by an image-level gate; needs a "
                                       "store with both kinds of structure (frozen phonons on some)."),
    val_fraction: float = typer.Option(0.1, help="Share of the store's structures held out for validation "
                                                 "(every k-th structure)."),
    val_samples: int = typer.Option(48, help="Validation crops drawn at each validation."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the column-depth U-Net on a simulated dataset (CPU, or CUDA with mixed precision).

    Resumable: a checkpoint OUT.ckpt is kept; rerun the same command to continue. Several GPUs or
    nodes: `torchrun --nproc_per_node N -m hrtem3d.cli train ...`.
    """
    from hrtem3d.train.loop import TrainConfig
    from hrtem3d.train.loop import train as run

    try:
        w = tuple(int(v) for v in widths.split(","))
    except ValueError:
        raise HrtemError(f"--widths must be comma-separated integers, got {widths!r}") from None
    cfg = TrainConfig(steps=steps, batch=batch, crop=crop, lr=lr, widths=w, seed=seed, workers=workers,
                      threads=threads, val_every=val_every, normalization=normalization, scope=scope,
                      init=str(init) if init else None, val_fraction=val_fraction, val_samples=val_samples,
                      lattice_heads=lattice_heads)
    m = run(data, out, cfg, progress=progress, device=device)
    typer.echo(f"wrote {out}: validation column-pixel accuracy {m.get('col_acc', float('nan')):.3f} "
               f"at step {m.get('step', steps)}")


@app.command()
@_friendly
def segment(
    inputs: list[Path] = typer.Argument(..., help="Images or stacks: DM3/DM4, SER/EMI, EMD, MRC, TIFF, NPY."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; one sub-folder per input."),
    pixel_size: str = typer.Option(None, "--pixel-size", help="Pixel size in Å (overrides the file's), or "
                                   "'lattice' to measure it from the CeO2 [110] lattice of the first frame."),
    model: Path = typer.Option(None, help="Model file (*.safetensors); default: the model shipped with hrtem3d."),
    contrast: str = typer.Option("bright", help="Atom contrast: bright (as recorded: the polarity the model "
                                  "was trained on, right for raw counts), dark (inverted) or auto (guessed per "
                                  "input; for processed images)."),
    tta: int = typer.Option(1, help="Test-time augmentation: average the class probabilities over 1, 2, 4 or "
                                    "8 flips/rotations (that many times slower; more accurate depths)."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    whole_frame: bool = typer.Option(False, "--whole-frame", help=WHOLE_FRAME_HELP),
    lattice: str = typer.Option(None, help=LATTICE_HELP),
    contrast_gain: str = typer.Option("auto", "--contrast-gain", help=GAIN_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    export_3d: bool = typer.Option(False, "--export-3d",
                                   help="Also write an estimated 3D atomic model: model.xyz (extended XYZ, "
                                        "every frame) and model.cif (first frame); each column's atoms are "
                                        "stacked along the beam at the crystal spacing by --stack-rule."),
    stack_rule: str = typer.Option("symmetric", "--stack-rule",
                                   help="symmetric or flat. symmetric: each column centred on the mid-plane "
                                        "(right volume and counts; heights unknown from one image); "
                                        "flat: every column on a flat bottom (particle on a support)."),
) -> None:
    """Find every atomic column and its depth (atoms in the column) in each image.

    Writes OUT/<input stem>/columns.csv (frame, column_id, x_px, y_px, x_A, y_A, species, n_atoms,
    confidence), labels.tif, confidence.tif, overlay.png and trust.json (pixel size used and its source,
    the lattice and envelope checks); with --export-3d also model.xyz and model.cif. A calibration that
    disagrees with the lattice by more than 2 %, or an image outside the model's envelope (then
    confidence is capped), gives a one-line warning on stderr.
    """
    from hrtem3d.api import load_model
    from hrtem3d.jobs.workflows import segment_file

    seg = load_model(model, device=device, tta=tta, backend=backend, skip_vacuum=not whole_frame,
                     lattice=lattice, contrast_gain=contrast_gain)  # one network
    seg.set_contrast(contrast)  # "auto": decided again on each input's first frame
    for path in inputs:
        r = segment_file(path, out, seg, pixel_size_A=pixel_size, progress=progress, export_3d=export_3d,
                         stack_rule=stack_rule)
        skipped = f", skipped frames {r['skipped_frames']} (NaN/Inf)" if r["skipped_frames"] else ""
        for w in r.get("warnings", []):
            typer.echo(f"warning: {_flags_in(w)}", err=True)
        routed = f", read as a {r['lattice_reading']} lattice (p_vibrating {r['p_vibrating']:.2f})" \
            if "p_vibrating" in r else ""
        typer.echo(f"{path}: {r['frames']} frame(s), {r['columns']} columns at {r['pixel_size_A']:.4g} Å/px "
                   f"({r['pixel_size_source']}){routed} -> {r['out']}{skipped}")
        if export_3d:
            typer.echo(f"  3D model ({stack_rule}, {r['model_atoms']} atoms in frame 0): "
                       f"{', '.join(r['model_files'])}")


@app.command()
@_friendly
def track(
    input: Path = typer.Argument(..., help="A movie: TIFF stack, EMD, DM4 stack, MRC, SER or NPY (frames, y, x)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (a rerun with the same settings resumes)."),
    pixel_size: str = typer.Option(None, "--pixel-size", help="Pixel size in Å (overrides the file's), or "
                                   "'lattice' to measure it from the CeO2 [110] lattice of the first frame."),
    fps: float = typer.Option(None, help="Frames per second (overrides the file's frame interval)."),
    start: int = typer.Option(0, help="First frame to process."),
    stop: int = typer.Option(None, help="Stop before this frame (default: the end)."),
    workers: int = typer.Option(1, help="Parallel dask worker processes over frame chunks (1 = this process)."),
    scheduler: str = typer.Option(None, help="Address of a running dask scheduler (a cluster)."),
    chunk: int = typer.Option(16, help="Frames per chunk: the unit of parallel work and of resuming."),
    model: Path = typer.Option(None, help="Model file; default: the model shipped with hrtem3d."),
    contrast: str = typer.Option("bright", help="Atom contrast: bright (as recorded, right for raw counts), "
                                  "dark (inverted) or auto (guessed on the first frame; for processed movies)."),
    change_threshold: float = typer.Option(50.0, help="Evidence a depth change needs: drop in squared error of a "
                                                      "column's expected depth and intensity, in noise variances."),
    figures: bool = typer.Option(True, help="Write the overlay movie and figures."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network (compiles for up to a "
                                                          "minute; no gain measured on 2 CPU cores)."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    whole_frame: bool = typer.Option(False, "--whole-frame", help=WHOLE_FRAME_HELP),
    lattice: str = typer.Option(None, help=LATTICE_HELP),
    contrast_gain: str = typer.Option("auto", "--contrast-gain",
                                      help=GAIN_HELP + " A movie's is decided on its first frame."),
    progress: bool = typer.Option(True, help="Show a progress bar (frames/s)."),
) -> None:
    """Segment every frame of a movie, correct drift, link columns, denoise depths in time, find events.

    Writes OUT/columns.parquet (every frame: the column table plus time_s; n_atoms and confidence
    after temporal denoising, the single-frame values as n_atoms_raw and confidence_raw),
    OUT/tracks.parquet, OUT/events.csv (migration, o_vacancy, ce_loss, ce_gain, o_gain),
    OUT/summary.json, OUT/trust.json (the pixel size used and its source, the lattice and envelope
    checks of the first frame, as `segment` writes) and the figures. Memory stays bounded: frames are
    read and segmented a chunk at a time. Interrupted? Rerun the same command: finished chunks are kept.
    """
    from hrtem3d.jobs.track_movie import TrackSettings, track_movie
    from hrtem3d.tracking.changepoint import ChangeModel
    from hrtem3d.tracking.temporal import TemporalModel

    if not change_threshold > 0:
        raise HrtemError(f"--change-threshold must be positive, got {change_threshold}")
    s = TrackSettings(pixel_size_A=pixel_size, fps=fps, start=start, stop=stop, chunk=chunk, workers=workers,
                      scheduler=scheduler, model=str(model) if model else None, contrast=contrast,
                      temporal=TemporalModel(change=ChangeModel(threshold=change_threshold)), compile=compile,
                      backend=backend, skip_vacuum=not whole_frame, lattice=lattice, contrast_gain=contrast_gain)
    r = track_movie(input, out, s, progress=progress, figures=figures)
    for w in r.get("warnings", []):
        typer.echo(f"warning: {_flags_in(w)}", err=True)
    skipped = f"; skipped frames {r['skipped_frames']}" if r["skipped_frames"] else ""
    kinds = ", ".join(f"{v} {k}" for k, v in r["event_kinds"].items()) or "none"
    typer.echo(f"{input}: {r['frames']} frames, {r['tracks']} tracked columns, {r['events']} events ({kinds})"
               f"{skipped} -> {out}")


@app.command()
@_friendly
def evaluate(
    data: Path = typer.Argument(..., help="Test dataset store (simulated with a seed not used for training)."),
    model: Path = typer.Option(None, help="Model file; default: the shipped model."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for tables and plots."),
    train_data: Path = typer.Option(None, help="Training store, to fit the intensity-counting baseline."),
    doses: str = typer.Option("100,300,1000,3000,10000", help="Doses (e/Å²), comma-separated."),
    max_structures: int = typer.Option(None, help="Use at most this many test structures."),
    tta: int = typer.Option(1, help="Test-time augmentation: 1, 2, 4 or 8 symmetries averaged."),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    lattice: str = typer.Option(None, help=LATTICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Accuracy against ground truth per dose, with the intensity-counting and majority baselines."""
    from hrtem3d.jobs.workflows import evaluate_to_folder

    d = tuple(float(v) for v in doses.split(","))
    summary = evaluate_to_folder(model, data, out, train_path=train_data, doses=d, max_structures=max_structures,
                                 progress=progress, tta=tta, backend=backend, lattice=lattice)
    typer.echo(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
@_friendly
def calibrate(
    model: Path = typer.Argument(..., help="Model file to calibrate (rewritten in place unless --out)."),
    data: Path = typer.Option(..., help="The training store: its validation structures are used."),
    out: Path = typer.Option(None, help="Write the calibrated model here instead."),
    n_images: int = typer.Option(300, help="Validation images a source (doses across the envelope; 300 take 1-2 "
                                 "minutes on 2 cores, and fit the map better than 60)."),
    lattice: str = typer.Option(None, help="For a model with lattice heads: calibrate this reading (static, "
                                "vibrating or auto) and keep it beside the others; calibrate the static reading "
                                "on a static store, the vibrating one on a store with frozen phonons."),
    extra_data: list[Path] = typer.Option(None, help="Another store whose validation structures the confidence "
                                          "map is fitted on too (repeatable), e.g. the same particles simulated "
                                          "with frozen phonons."),
    through_scope: bool = typer.Option(False, help="Fit the confidence map also on images drawn through the "
                                       "default microscope envelope (support film, residual aberrations, "
                                       "vibration, a diffuse background, MTF; docs/trust.md), so that it stays "
                                       "calibrated on images the model was not trained for. A model trained "
                                       "through an envelope is always calibrated through its own."),
    keep_thresholds: bool = typer.Option(False, help="Keep the model's detection thresholds; refit the map only."),
    shift_features: bool = typer.Option(False, help="Also fit the map on how thick the particle reads for its "
                                        "size and on each column's count (with --through-scope: lower ECE under a "
                                        "diffuse background or astigmatism, higher on ideal images; "
                                        "docs/benchmarks.md, Thirteenth look)."),
) -> None:
    """Fit per-species detection thresholds and calibrate the column confidence (a logistic map of the
    network's probability and of what the image shows: its noise, the network's overall certainty, how
    thick the particle reads for its size) on validation structures of the training store, never on
    test data."""
    from hrtem3d.evaluate.calibrate import calibrate_model
    from hrtem3d.segmentation.confidence import map_terms
    from hrtem3d.simulate.scope import ScopeEnvelope

    c = calibrate_model(model, data, out, n_images, lattice=lattice, extra_data=tuple(extra_data or ()),
                        through_scope=ScopeEnvelope() if through_scope else None, keep_thresholds=keep_thresholds,
                        shift_features=shift_features)
    t = c["detection_threshold"]
    terms = " ".join(f"{coef:+.3f} {name}" for coef, name in zip(*map_terms(c)))
    typer.echo(f"detection thresholds Ce {t['Ce']:.2f}, O {t['O']:.2f} (validation recall {t['recall']:.3f}, "
               f"precision {t['precision']:.3f} at {t['dose']:g} e/Å²); confidence map "
               f"sigma({c['a']:.3f} logit(p) {c['b']:+.3f} {terms}) from {c['n_columns']} columns")


@app.command()
@_friendly
def demo(out: Path = typer.Option(Path("demo_output"), help="Folder for the demo's figures and tables."),
         seed: int = typer.Option(7, help="Seed of the example particle."),
         movie_seed: int = typer.Option(0, help="Seed of the example in-situ movie."),
         movie: bool = typer.Option(True, help="Also simulate and track the in-situ movie.")) -> None:
    """Run the pipeline on built-in simulated examples: one particle imaged and segmented, then a
    24-frame in-situ movie with three known events, tracked and compared with the truth (a few minutes).
    """
    from hrtem3d.jobs.demo import data_demo, model_available, movie_demo

    r = data_demo(out, seed=seed)
    typer.echo(f"simulated {r['formula']} ({r['atoms']} atoms, {r['columns']} columns, "
               f"deepest {r['max_depth']} atoms)")
    for f in r["files"] + r.get("files_network", []):
        typer.echo(f"wrote {f}")
    if "ce_exact" in r:
        typer.echo(f"shipped model at 300 e/Å²: {r['detected']} columns found, recall {r['recall']:.2f}, "
                   f"Ce columns with exactly the right atom count {r['ce_exact']:.2f}")
    if movie and model_available():
        m = movie_demo(out / "movie_demo", seed=movie_seed)
        for f in m["files_movie"]:
            typer.echo(f"wrote {f}")
        typer.echo(f"in-situ movie: {m['found']} of {m['true_changes']} true column changes found, "
                   f"{m['false_events']} false event(s); Ce depth right in {m['ce_single_frame']:.2f} of single "
                   f"frames, {m['ce_denoised']:.2f} after temporal denoising (report: {m['report']})")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
