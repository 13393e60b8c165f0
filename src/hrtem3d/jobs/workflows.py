"""File-level workflows behind the CLI: read files, segment every frame, write every output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from hrtem3d.errors import HrtemError
from hrtem3d.export.model3d import RULES, columns_to_atoms, write_model
from hrtem3d.fsutil import atomic_write, save_figure
from hrtem3d.io import open_image
from hrtem3d.segmentation.gain import cap_at_estimated_gain, estimated_gain_warning
from hrtem3d.segmentation.segmenter import Segmenter
from hrtem3d.viz.overlay import overlay_figure


def segment_file(path: str | Path, out_dir: str | Path, segmenter: Segmenter, *,
                 pixel_size_A: float | str | None = None, progress: bool = False, export_3d: bool = False,
                 stack_rule: str = "symmetric") -> dict:
    """Segment every frame of one image or stack; write `out_dir/<stem>/` outputs.

    Outputs: `columns.csv` (the DESIGN.md column table), `labels.tif` (uint8 class per
    pixel, one page per frame), `confidence.tif` (float32), `overlay.png` (first frame).
    With `export_3d`, also the estimated 3D model (`export.model3d`, columns stacked along
    the beam by `stack_rule`): `model.xyz` (extended XYZ, one structure per segmented frame)
    and `model.cif` (the first). Each file is written to a temporary name and renamed when complete.
    With the segmenter's contrast "auto", the polarity is decided on this input's first frame.
    `pixel_size_A` "lattice" measures the pixel size from the CeO2 lattice of the first frame; otherwise the
    given or file calibration is checked against it. `trust.json` holds the pixel size used, its source,
    the lattice and envelope checks and the warnings (also in the returned dict); out of the envelope,
    column confidence is capped (`hrtem3d.jobs.trust`).
    """
    from tqdm.auto import tqdm

    from hrtem3d.jobs.trust import LATTICE, assess_frame, lattice_record, parse_pixel_size

    path = Path(path)
    if export_3d and stack_rule not in RULES:
        raise HrtemError(f"unknown stacking rule {stack_rule!r}; use one of {', '.join(RULES)}")
    pixel_size_A = parse_pixel_size(pixel_size_A)
    lattice = pixel_size_A == LATTICE
    # with "lattice" the pixel size is measured, so a file without a calibration opens all the same
    src = open_image(path, require_pixel_size=False) if lattice else open_image(path, pixel_size_A=pixel_size_A)
    source = LATTICE if lattice else ("given" if pixel_size_A is not None else "file")
    segmenter.set_contrast(segmenter.contrast)  # "auto" decides afresh for each input, on its first frame
    trust = None
    dest = Path(out_dir) / path.stem
    dest.mkdir(parents=True, exist_ok=True)
    tables, labels, confs, skipped = [], [], [], []
    first, held = None, None  # held: the contrast gain of the first frame, kept for the rest of the file
    reading, p_vibrating = None, None  # likewise the lattice reading (routed by the shipped gate: "auto")
    read, mapped = None, False  # the contrast gate's (g, sigma) of the first frame, and whether its map applied
    bar = tqdm(total=src.n_frames, disable=not progress, desc=path.name, unit="frame")
    for start, chunk in src.frames():
        for k, frame in enumerate(chunk):
            i = start + k
            if not np.isfinite(frame).all():
                skipped.append(i)
                bar.update(1)
                continue
            fresh = trust is None
            if fresh:
                trust = assess_frame(frame, None if lattice else src.pixel_size_A, source, name=path.name,
                                     file_pixel_size_A=src.pixel_size_from_file_A)
            s = segmenter.segment(frame, trust.pixel_size_A, frame=i, gain=held, lattice=reading, contrast_read=read)
            held = s.contrast_gain
            if fresh:
                reading, p_vibrating, read, mapped = s.lattice, s.p_vibrating, s.contrast_read, s.gates_map
                trust = trust.reconsider(s.columns)
            s.columns, s.confidence = trust.cap(s.columns, s.confidence)
            tables.append(s.columns)
            labels.append(s.labels)
            confs.append(s.confidence)
            if first is None:
                first = (frame, s.columns)
            bar.update(1)
    bar.close()
    if first is None:
        raise HrtemError(f"{path}: every frame holds NaN or Inf values; nothing to segment")
    estimated = segmenter.contrast_gain == "auto" and held > 1
    if estimated:  # every frame's counts rest on the gain estimated on the first
        tables = [cap_at_estimated_gain(t) for t in tables]
    table = pd.concat(tables, ignore_index=True)
    atomic_write(dest / "columns.csv", lambda p: table.to_csv(p, index=False, float_format="%.4f"))
    atomic_write(dest / "labels.tif", lambda p: tifffile.imwrite(p, np.stack(labels)))
    atomic_write(dest / "confidence.tif", lambda p: tifffile.imwrite(p, np.stack(confs).astype(np.float32)))
    fig = overlay_figure(first[0], first[1], trust.pixel_size_A, title=f"{path.name}: {len(first[1])} columns")
    save_figure(fig, dest / "overlay.png")
    reading = lattice_record(reading, p_vibrating)
    gain = {"contrast_gain": round(float(held), 3)}
    if read is not None:
        gain["contrast_loss_read"], gain["contrast_spread_read"] = (round(float(v), 3) for v in read)
        gain["gates_map"] = mapped  # whether the reading set the confidence (counts at gain 1)
    warnings = list(trust.warnings)
    if estimated:
        warnings.append(estimated_gain_warning(path.name, held))
        gain["contrast_gain_source"] = "auto"
    text = json.dumps({**trust.to_dict(), **reading, **gain, "warnings": warnings}, indent=1, default=float,
                      ensure_ascii=False)
    atomic_write(dest / "trust.json", lambda p: p.write_text(text, encoding="utf-8"))
    result = {"input": str(path), "out": str(dest), "frames": src.n_frames, "columns": len(table),
              "skipped_frames": skipped, "pixel_size_A": trust.pixel_size_A, "pixel_size_source": trust.source,
              "in_envelope": trust.in_envelope, "warnings": warnings, **gain, **reading}
    if export_3d:
        models = [columns_to_atoms(t, rule=stack_rule) for t in tables]
        result["model_files"] = [str(f) for f in write_model(models, dest / "model")]
        result["model_atoms"] = len(models[0])
    return result


def evaluate_to_folder(model_path: str | Path | None, test_path: str | Path, out_dir: str | Path, *,
                       train_path: str | Path | None = None, doses: tuple[float, ...] | None = None,
                       max_structures: int | None = None, progress: bool = True, tta: int = 1,
                       backend: str = "auto", lattice: str | None = None) -> pd.DataFrame:
    """Run `evaluate.metrics.evaluate` and write summary.csv/.md, columns.parquet and the plots."""
    from hrtem3d.evaluate.metrics import DOSES, evaluate, expected_calibration_error, reliability
    from hrtem3d.viz.evaluation import accuracy_vs_dose, confusion_figure, reliability_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter(model_path, contrast="bright", tta=tta, backend=backend, lattice=lattice)
    r = evaluate(model_path, test_path, train_path, doses or DOSES, max_structures, progress=progress, segmenter=seg)
    summary, cols = r["summary"], r["columns"]
    atomic_write(out / "summary.csv", lambda p: summary.to_csv(p, index=False, float_format="%.4f"))
    atomic_write(out / "summary.md", lambda p: p.write_text(summary.to_markdown(index=False, floatfmt=".3f")
                                                            if _has_tabulate() else summary.to_string()))
    atomic_write(out / "columns.parquet", lambda p: cols.astype({"pred_species": str}).to_parquet(p))
    matched = cols[cols.pred_row >= 0]
    correct = ((matched.pred_species == matched.species) & (matched.pred_n == matched.n_atoms)).to_numpy()
    conf = matched.confidence.to_numpy()
    save_figure(accuracy_vs_dose(summary), out / "accuracy_vs_dose.png")
    save_figure(confusion_figure(cols, "Ce"), out / "confusion_Ce.png")
    save_figure(confusion_figure(cols, "O"), out / "confusion_O.png")
    save_figure(reliability_figure(reliability(conf, correct), expected_calibration_error(conf, correct)),
                out / "reliability.png")
    return summary


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
