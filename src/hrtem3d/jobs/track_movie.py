"""`hrtem3d track`: segment every frame of a movie, link columns, denoise depths in time, find events.

Streaming and resumable: frames are segmented a chunk at a time (in this process, or in
parallel on dask workers), and each finished chunk is written to `DIR/.parts/` under a
temporary name, then renamed. A killed run, started again with the same command, skips
the finished chunks. Linking, the depth HMM, the events and the figures run at the end
on the column tables alone (never on the whole movie in memory).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hrtem3d.errors import HrtemError
from hrtem3d.fsutil import atomic_write, file_fingerprint
from hrtem3d.io import open_image
from hrtem3d.jobs.trust import LATTICE, assess_frame, lattice_record, parse_pixel_size
from hrtem3d.segmentation.envelope_check import CONFIDENCE_CAP
from hrtem3d.segmentation.gain import GAIN_CONFIDENCE_CAP, estimated_gain_warning, parse_gain
from hrtem3d.segmentation.segmenter import TABLE_FIELDS, Segmenter
from hrtem3d.tracking.analysis import analyze_movie
from hrtem3d.tracking.drift import DriftReference, drift_reference, frame_shift
from hrtem3d.tracking.temporal import TemporalModel, name_probabilities

PARTS = ".parts"
DRIFT_BIN = 2  # drift from the lowest half of the working images' spatial frequencies (periods above 0.64 Å
# for the shipped model): 4x fewer points, the same 1/20-pixel precision (docs/benchmarks.md, issue 13)


@dataclass
class TrackSettings:
    """What `track` needs besides the input and output paths.

    Attributes:
        pixel_size_A: overrides the file's calibration (Å/pixel), or "lattice": measured from the CeO2
            [110] lattice of the first frame. Either way the pixel size is checked against the lattice
            and the first frame against the model's envelope (`jobs.trust`; `trust.json`).
        fps: frames per second; overrides the file's frame interval.
        start, stop: frame range [start, stop) to process.
        chunk: frames per unit of work (and per resumable part).
        workers: dask worker processes (1 = this process).
        scheduler: address of a running dask scheduler (overrides workers).
        model: a model file; None uses the shipped default.
        contrast: "bright" (as recorded), "dark" or "auto" (decided once, on the reference frame).
        compile: run the network through torch.compile (see `Segmenter`).
        backend: how the network runs ("auto", "onnx", "torch", "int8"; see `Segmenter`).
        skip_vacuum: run the network only around what is not vacuum (see `Segmenter`).
        lattice: the reading of a model with lattice heads ("static", "vibrating", "auto"; None: the model's
            default; see `Segmenter`).
        contrast_gain: how many times lower the lattice contrast is than the simulation's, or "auto"
            (`Segmenter`): decided once, on the reference frame, and held for the whole movie.
        search_range_A, memory: linking (see `tracking.linking.link_columns`).
        temporal: the depth HMM settings.
    """

    pixel_size_A: float | str | None = None
    fps: float | None = None
    start: int = 0
    stop: int | None = None
    chunk: int = 16
    workers: int = 1
    scheduler: str | None = None
    model: str | None = None
    contrast: str = "bright"
    search_range_A: float = 0.6
    memory: int = 5
    temporal: TemporalModel = field(default_factory=TemporalModel)
    compile: bool = False
    backend: str = "auto"
    skip_vacuum: bool = True
    lattice: str | None = None
    contrast_gain: float | str = "auto"


_SEGMENTERS: dict = {}


def _segmenter(model: str | None, threads: int | None = None, compile: bool = False,
               backend: str = "auto", skip_vacuum: bool = True, lattice: str | None = None) -> Segmenter:
    """One loaded model per process: the run and dask workers reuse it across chunks (contrast set per use)."""
    key = (model, threads, compile, backend, skip_vacuum, lattice)
    if key not in _SEGMENTERS:
        _SEGMENTERS.clear()  # a long-lived process keeps one network, not one per model it ever used
        _SEGMENTERS[key] = Segmenter(model, threads=threads, compile=compile, backend=backend,
                                     skip_vacuum=skip_vacuum, lattice=lattice)
    return _SEGMENTERS[key]


@dataclass(frozen=True)
class Chunk:
    """One unit of `track`'s work: frames [first, last) of one input, written to the part files `part`.

    Attributes:
        path: the input file; pixel_size_A: its pixel size (Å), as the run decided it.
        first, last: the frame range [first, last).
        part: the part files' path without suffix (`.parquet` and `.json` are added).
        model: a model file (None: the shipped one); contrast: "bright" or "dark", decided for the run.
        threads: torch CPU threads on a worker (None: torch's default); compile, backend, skip_vacuum,
            lattice: `Segmenter`'s; contrast_gain: the run's gain (a number, decided on the reference frame);
            lattice_reading: the run's reading of a routed segmenter ("static" or "vibrating", decided likewise);
            contrast_read: the contrast gate's (g, sigma) on the reference frame (None: not asked), held likewise.
    """

    path: str
    pixel_size_A: float
    first: int
    last: int
    part: str
    model: str | None = None
    contrast: str = "bright"
    threads: int | None = None
    compile: bool = False
    backend: str = "auto"
    skip_vacuum: bool = True
    lattice: str | None = None
    contrast_gain: float = 1.0
    lattice_reading: str | None = None
    contrast_read: tuple[float, float] | None = None


def held_read(trust: dict) -> tuple[float, float] | None:
    """The contrast gate's (g, sigma) of a run's reference frame as `trust.json` records it (None: not asked)."""
    if "contrast_loss_read" not in trust or "contrast_spread_read" not in trust:
        return None
    return float(trust["contrast_loss_read"]), float(trust["contrast_spread_read"])


def track_frame(seg: Segmenter, frame: np.ndarray, *, index: int, pixel_size_A: float,
                reference: np.ndarray | DriftReference | None, gain: float | None = None,
                lattice: str | None = None, contrast_read: tuple[float, float] | None = None
                ) -> tuple[pd.DataFrame, tuple[float, float], np.ndarray]:
    """Segment one movie frame for tracking: (its column table, its drift (dx, dy) in Å, its working image).

    The table has the class probabilities named (`p_Ce3`...) and the frame's drift `drift_x_A`,
    `drift_y_A` against `reference`, the working image of the movie's reference frame, or its
    `tracking.drift.drift_reference` when many frames meet it (None: this frame is the reference, drift 0).
    `gain`: the movie's contrast gain (None: the segmenter's setting); the one used is `table.attrs["contrast_gain"]`;
    `lattice`: the movie's reading of a routed segmenter (None: its gate decides); the one used is
    `table.attrs["lattice_reading"]`; `contrast_read`: the contrast gate's (g, sigma) of the movie's first frame,
    held with its gain (None: read here, when the gain is the segmenter's "auto"); the one used is
    `table.attrs["contrast_read"]`.
    """
    s = seg.segment(frame, pixel_size_A, frame=index, gain=gain, lattice=lattice, contrast_read=contrast_read)
    dx, dy = frame_shift(reference, s.working_image, bin=DRIFT_BIN) if reference is not None else (0.0, 0.0)
    d = (dx * seg.pixel_size_A, dy * seg.pixel_size_A)
    table = name_probabilities(s.columns, seg.scheme).assign(drift_x_A=d[0], drift_y_A=d[1])
    table.attrs["contrast_gain"] = s.contrast_gain
    table.attrs["lattice_reading"] = s.lattice
    table.attrs["contrast_read"] = s.contrast_read
    table.attrs["gates_map"] = s.gates_map
    return table, d, s.working_image


def segment_chunk(chunk: Chunk, reference: np.ndarray) -> dict:
    """Segment the chunk's frames and write its part files; returns the part's summary.

    `part.parquet` holds the per-frame column tables with the class probabilities and the
    frame's drift; `part.json` (written last, so it marks the part complete) lists the
    processed frames, their drift (Å) and the skipped frames with the reason.
    """
    c = chunk
    seg = _segmenter(c.model, c.threads, c.compile, c.backend, c.skip_vacuum, c.lattice)
    seg.set_contrast(c.contrast, gain=c.contrast_gain)
    src = open_image(c.path, pixel_size_A=c.pixel_size_A)
    first, last = c.first, c.last
    tables, done, drift, skipped = [], [], [], {}
    reference = drift_reference(reference)  # transformed once for the chunk's frames
    for i, frame in _frames(src, first, last, skipped):
        if not np.isfinite(frame).all():
            skipped[i] = "NaN or Inf pixels"
            continue
        table, d, _ = track_frame(seg, frame, index=i, pixel_size_A=src.pixel_size_A, reference=reference,
                                  lattice=c.lattice_reading, contrast_read=c.contrast_read)
        tables.append(table)
        done.append(i)
        drift.append(d)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    part = Path(c.part)
    atomic_write(part.with_suffix(".parquet"), lambda p: table.to_parquet(p, index=False))
    info = {"first": first, "last": last, "frames": done, "drift_A": drift,
            "skipped": {str(k): v for k, v in skipped.items()}}
    atomic_write(part.with_suffix(".json"), lambda p: p.write_text(json.dumps(info)))
    return info


def _frames(src, first: int, last: int, skipped: dict):
    """Frames of [first, last); an unreadable block is retried frame by frame and bad frames skipped."""
    try:
        for start, block in src.frames(first, last, chunk=last - first):
            yield from ((start + k, block[k]) for k in range(len(block)))
        return
    except HrtemError:
        pass
    for i in range(first, last):
        try:
            (_, block), = list(src.frames(i, i + 1, chunk=1))
        except HrtemError as e:
            skipped[i] = str(e)
            continue
        yield i, block[0]


def _model_file(model: str | None) -> Path:
    """The model file a run uses: `model`, or the one shipped with hrtem3d."""
    from hrtem3d.model.io import default_model_path

    return Path(model) if model else default_model_path()


def model_scheme(model: str | None = None):
    """The class scheme of `model` (None: the shipped model)."""
    from hrtem3d.labels.scheme import ClassScheme
    from hrtem3d.model.io import read_metadata

    return ClassScheme.from_dict(read_metadata(_model_file(model))["scheme"])


def _fingerprint(path: Path, src, s: TrackSettings, model: str | None) -> dict:
    """What a resumed run must share with the first: the input, the chunking, the model (by its size,
    metadata header and last bytes, so a multi-megabyte model is never read whole) and whether vacuum is
    skipped (a part segmented otherwise would differ in its vacuum)."""
    st = path.stat()
    return {"input": str(path.resolve()), "bytes": st.st_size, "shape": list(src.shape),
            "pixel_size_A": s.pixel_size_A if s.pixel_size_A == LATTICE else src.pixel_size_A, "chunk": s.chunk,
            "model": file_fingerprint(_model_file(model)),
            "skip_vacuum": s.skip_vacuum, **({"lattice": s.lattice} if s.lattice else {}),
            **({"contrast_gain": s.contrast_gain} if s.contrast_gain != "auto" else {})}


def _prepare(path: Path, dest: Path, s: TrackSettings):
    """Open the input, check or write the run's settings, fix the reference frame and contrast, and judge the
    first frame (`jobs.trust.assess_frame`: the pixel size used and the envelope). Returns
    (source opened at the pixel size used, stop, reference working image, contrast, trust dict)."""
    lattice = s.pixel_size_A == LATTICE
    src = open_image(path, require_pixel_size=False) if lattice else open_image(path, pixel_size_A=s.pixel_size_A)
    stop = src.n_frames if s.stop is None else s.stop
    if not (0 <= s.start < stop <= src.n_frames):
        raise HrtemError(f"{path.name}: frame range {s.start}..{stop} is outside its {src.n_frames} frame(s)")
    parts = dest / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(path, src, s, s.model)
    fp_file = parts / "settings.json"
    if fp_file.exists() and json.loads(fp_file.read_text()) != fp:
        raise HrtemError(f"{dest} holds a run of another input or settings; use another `out_dir` or delete "
                         f"{fp_file.parent}", param="out_dir")
    atomic_write(fp_file, lambda p: p.write_text(json.dumps(fp)))
    ref_file, trust_file = parts / "reference.npz", parts / "trust.json"
    if ref_file.exists() and trust_file.exists():
        trust = json.loads(trust_file.read_text())
        with np.load(ref_file) as z:
            return _at(path, src, trust), stop, z["image"], str(z["contrast"]), trust
    seg = _segmenter(s.model, None, s.compile, s.backend, s.skip_vacuum, s.lattice)
    seg.set_contrast(s.contrast, gain=s.contrast_gain)
    source = LATTICE if lattice else ("given" if s.pixel_size_A is not None else "file")
    for first, block in src.frames(s.start, stop, chunk=1):
        if np.isfinite(block[0]).all():
            t = assess_frame(block[0], None if lattice else src.pixel_size_A, source, name=path.name,
                             file_pixel_size_A=src.pixel_size_from_file_A)
            src = _at(path, src, t.to_dict())
            s0 = seg.segment(block[0], src.pixel_size_A, frame=first)
            trust = json.loads(json.dumps(t.reconsider(s0.columns).to_dict(), default=float))
            trust["contrast_gain"] = round(float(s0.contrast_gain), 3)  # decided here, held for the run
            if s0.contrast_loss is not None:
                trust["contrast_loss_read"] = round(float(s0.contrast_loss), 3)
                trust["contrast_spread_read"] = round(float(s0.contrast_spread), 3)
                trust["gates_map"] = s0.gates_map  # whether the gate's reading set the confidence (held below)
            trust.update(lattice_record(s0.lattice, s0.p_vibrating))  # likewise the lattice reading
            if s.contrast_gain == "auto" and s0.contrast_gain > 1:
                trust["contrast_gain_source"] = "auto"
                trust["warnings"] = list(trust.get("warnings", [])) + [
                    estimated_gain_warning(path.name, s0.contrast_gain, counted="the movie was")]
            ref = s0.working_image
            contrast = "bright" if seg.polarity(ref) > 0 else "dark"
            atomic_write(trust_file, lambda p, t=trust: p.write_text(json.dumps(t, indent=1)))
            atomic_write(ref_file, lambda p, r=ref, c=contrast, f=first: np.savez(p, image=r, contrast=c, frame=f))
            return src, stop, ref, contrast, trust
    raise HrtemError(f"{path.name}: every frame in {s.start}..{stop} holds NaN or Inf values; nothing to track")


def _at(path: Path, src, trust: dict):
    """`src`, opened again at the pixel size `trust` decided when that was measured from the lattice."""
    if trust["pixel_size_source"] != LATTICE:
        return src
    return open_image(path, pixel_size_A=trust["pixel_size_A"])


def run_chunks(path: Path, dest: Path, s: TrackSettings, progress: bool = True) -> tuple:
    """Segment every frame not yet done; returns (source, stop, contrast, trust dict)."""
    from tqdm.auto import tqdm

    src, stop, ref, contrast, trust = _prepare(path, dest, s)
    parts = dest / PARTS
    todo = [(a, min(a + s.chunk, stop)) for a in range(s.start, stop, s.chunk)
            if not (parts / f"chunk_{a:08d}.json").exists()]
    bar = tqdm(total=stop - s.start, initial=stop - s.start - sum(b - a for a, b in todo), disable=not progress,
               desc=f"track {path.name}", unit="frame", smoothing=0.1)
    chunks = [Chunk(path=str(path), pixel_size_A=src.pixel_size_A, first=a, last=b,
                    part=str(parts / f"chunk_{a:08d}"), model=s.model, contrast=contrast, compile=s.compile,
                    backend=s.backend, skip_vacuum=s.skip_vacuum, lattice=s.lattice,
                    contrast_gain=float(trust.get("contrast_gain", 1.0)),
                    lattice_reading=trust.get("lattice_reading"), contrast_read=held_read(trust))
              for a, b in todo]
    if s.workers <= 1 and not s.scheduler:
        for c in chunks:
            segment_chunk(c, ref)
            bar.update(c.last - c.first)
    else:
        _run_dask(chunks, s, ref, bar)
    bar.close()
    return src, stop, contrast, trust


def _run_dask(chunks: list[Chunk], s: TrackSettings, ref: np.ndarray, bar) -> None:
    from distributed import Client, LocalCluster, as_completed

    threads = max(1, (os.cpu_count() or 1) // max(1, s.workers))
    cluster = None if s.scheduler else LocalCluster(n_workers=s.workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=None)
    try:
        with Client(s.scheduler or cluster) as client:
            ref_f = client.scatter(ref, broadcast=True)
            futs = {client.submit(segment_chunk, replace(c, threads=threads), ref_f, pure=False): c.last - c.first
                    for c in chunks}
            for f in as_completed(futs):
                f.result()
                bar.update(futs[f])
    finally:
        if cluster is not None:
            cluster.close()


def gather_parts(dest: Path, start: int, stop: int, chunk: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """All finished parts: (columns, frames, drift_A [n, 2], skipped {frame: reason})."""
    tables, frames, drift, skipped = [], [], [], {}
    for a in range(start, stop, chunk):
        base = dest / PARTS / f"chunk_{a:08d}"
        info = json.loads(base.with_suffix(".json").read_text())
        t = pd.read_parquet(base.with_suffix(".parquet"))
        if len(t):
            tables.append(t)
        frames += info["frames"]
        drift += info["drift_A"]
        skipped.update({int(k): v for k, v in info["skipped"].items()})
    cols = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=TABLE_FIELDS)
    return cols, np.asarray(frames, int), np.asarray(drift, float).reshape(-1, 2), skipped


def track_movie(path: str | Path, out_dir: str | Path, settings: TrackSettings | None = None,
                progress: bool = True, figures: bool = True) -> dict:
    """The whole `track` command: see the module docstring. Returns a summary dict."""
    s = settings or TrackSettings()
    for name in ("chunk", "workers"):
        if getattr(s, name) < 1:
            raise HrtemError(f"`{name}` must be at least 1, got {getattr(s, name)}", param=name)
    if s.contrast not in ("auto", "bright", "dark"):  # before any model is loaded
        raise HrtemError(f"contrast must be bright, dark or auto, got {s.contrast!r}", param="contrast")
    try:
        s = replace(s, contrast_gain=parse_gain(s.contrast_gain))
    except ValueError as e:
        raise HrtemError(str(e), param="contrast_gain") from None
    path, dest = Path(path), Path(out_dir)
    t0 = time.perf_counter()
    s = replace(s, pixel_size_A=parse_pixel_size(s.pixel_size_A))
    src, stop, contrast, trust = run_chunks(path, dest, s, progress)
    t_seg = time.perf_counter() - t0
    cols, frames, drift, skipped = gather_parts(dest, s.start, stop, s.chunk)
    if len(frames) == 0:
        raise HrtemError(f"{path.name}: no frame could be segmented (skipped: {_ranges(sorted(skipped))})")
    interval = 1.0 / s.fps if s.fps else src.frame_interval_s
    times = frames * (interval if interval else 1.0)
    seg = _segmenter(s.model, None, s.compile, s.backend, s.skip_vacuum, s.lattice)  # the run's one network
    scheme = seg.scheme
    ny, nx = src.shape[1:]
    field_A = (nx * src.pixel_size_A, ny * src.pixel_size_A)
    cols, tracks, events = analyze_movie(cols, frames=frames, drift_A=drift, field_A=field_A, times_s=times,
                                         pixel_size_A=src.pixel_size_A, scheme=scheme,
                                         search_range_A=s.search_range_A, memory=s.memory, temporal=s.temporal)
    # out of the envelope no count is trusted, per frame or in time; at an estimated contrast gain, half
    top = CONFIDENCE_CAP if not trust["in_envelope"] else (
        GAIN_CONFIDENCE_CAP if trust.get("contrast_gain_source") == "auto" else None)
    if top is not None:
        cap = {c: np.minimum(cols[c].to_numpy(float), top) for c in ("confidence", "confidence_raw") if c in cols}
        cols = cols.assign(**cap)
        if "confidence" in tracks:
            tracks = tracks.assign(confidence=np.minimum(tracks["confidence"].to_numpy(float), top))
    if seg.lattice_reading and "lattice_reading" not in trust:
        trust = {**trust, "lattice_reading": seg.lattice_reading}
    atomic_write(dest / "trust.json", lambda p: p.write_text(json.dumps(trust, indent=1)))
    atomic_write(dest / "columns.parquet", lambda p: cols.to_parquet(p, index=False))
    atomic_write(dest / "tracks.parquet", lambda p: tracks.to_parquet(p, index=False))
    atomic_write(dest / "events.csv", lambda p: events.to_csv(p, index=False, float_format="%.4f"))
    summary = {"input": str(path), "out": str(dest), "frames": int(len(frames)), "skipped_frames": sorted(skipped),
               "skipped_reasons": {int(k): v for k, v in sorted(skipped.items())},
               "frame_interval_s": interval, "pixel_size_A": src.pixel_size_A,
               "pixel_size_source": trust["pixel_size_source"], "in_envelope": trust["in_envelope"],
               "warnings": trust["warnings"], "contrast": contrast,
               "columns_per_frame": float(len(cols) / len(frames)), "tracks": int(len(tracks)),
               "events": int(len(events)), "event_kinds": events["kind"].value_counts().to_dict(),
               "segment_seconds": round(t_seg, 2), "settings": _jsonable(asdict(s))}
    if interval is None:
        summary["note"] = "the file gives no frame interval and `fps` was not set: time_s counts frames"
    if figures:
        from hrtem3d.jobs.track_figures import movie_figures

        seg.set_contrast(contrast)
        summary["figures"] = movie_figures(src, dest, cols=cols, tracks=tracks, events=events, frames=frames,
                                           drift_A=drift, seg=seg, fps=1.0 / interval if interval else None,
                                           lattice=trust.get("lattice_reading"))
    atomic_write(dest / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2)))
    return summary


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


def _ranges(frames: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out, i = [], 0
    while i < len(frames):
        j = i
        while j + 1 < len(frames) and frames[j + 1] == frames[j] + 1:
            j += 1
        out.append(f"{frames[i]}" if i == j else f"{frames[i]}-{frames[j]}")
        i = j + 1
    return ", ".join(out) or "none"
