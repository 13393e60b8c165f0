"""The contrast gain: a lower lattice contrast than the simulation's, put back before counting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.errors import HrtemError
from hrtem3d.evaluate.metrics import match_columns
from hrtem3d.segmentation.gain import (
    GAIN_CONFIDENCE_CAP,
    GAIN_STEPS,
    GAIN_TRIGGER,
    ContrastRead,
    estimate_gain,
    parse_gain,
)
from hrtem3d.segmentation.segmenter import Segmenter


class _Ratios:
    """A count_size_ratio that grows with the gain, recording the gains asked for."""

    def __init__(self, slope: float, nan_from: float = np.inf) -> None:
        self.slope, self.nan_from, self.asked = slope, nan_from, []

    def __call__(self, g: float) -> float:
        self.asked.append(g)
        return float("nan") if g >= self.nan_from else self.slope * g


def test_plausible_counts_keep_gain_one_in_one_pass():
    r = _Ratios(GAIN_TRIGGER + 0.01)
    assert estimate_gain(r) == 1.0 and r.asked == [1.0]
    r = _Ratios(float("nan"))  # too few columns to judge: left alone
    assert estimate_gain(r) == 1.0 and r.asked == [1.0]


def test_thin_counts_raise_the_gain_to_the_typical_ratio():
    r = _Ratios(0.35)  # ratio 0.35 g: the typical 0.70 is reached at g = 2
    assert estimate_gain(r, target=0.70) == pytest.approx(2.0)
    assert r.asked == [1.0, 1.5, 2.0]  # stops at the first step that reaches the target
    r = _Ratios(0.30)  # between steps 2 (0.60) and 2.5 (0.75): interpolated
    assert estimate_gain(r, target=0.70) == pytest.approx(2.0 + 0.5 * (0.70 - 0.60) / (0.75 - 0.60))
    r = _Ratios(0.10)  # even the largest step reads too thin: the largest step
    assert estimate_gain(r) == GAIN_STEPS[-1]
    r = _Ratios(0.30, nan_from=2.0)  # the columns vanish at gain 2: keep the last gain that could be judged
    assert estimate_gain(r) == 1.5


def test_the_particles_counts_only_raise_the_contrast_gates_reading():
    r = _Ratios(0.35)  # at the gate's 1.6 the counts read plausibly (0.56): the reading stands, one pass
    assert estimate_gain(r, start=1.6) == 1.6 and r.asked == [1.6]
    r = _Ratios(0.30)  # still too thin at 1.6 (0.48): the steps above it, interpolated to the typical 0.70
    assert estimate_gain(r, start=1.6, target=0.70) == pytest.approx(2.0 + 0.5 * (0.70 - 0.60) / (0.75 - 0.60))
    assert r.asked == [1.6, 2.0, 2.5]


def test_parse_gain():
    assert parse_gain("auto") == "auto" and parse_gain(None) == "auto" and parse_gain("2.5") == 2.5
    for bad in ("0.5", "11", "x"):
        with pytest.raises(ValueError):
            parse_gain(bad)
    with pytest.raises(HrtemError, match="contrast gain"):
        Segmenter(contrast_gain=0.5)


def _lower_contrast(frame: np.ndarray, b: float) -> np.ndarray:
    """The frame with a diffuse background b x its mean: relative contrast divided by 1 + b, mean kept."""
    return ((frame + b * frame.mean()) / (1 + b)).astype(np.float32)


def _dimmed(m, frame: int, g: float, dose: float = 1000.0) -> np.ndarray:
    """The movie's noise-free frame under a uniform background that lowers its contrast g times, with fresh
    shot noise at `dose` e/Å² (what a microscope's diffuse background does: the noise stays that of the dose)."""
    clean = m.clean[frame]
    dim = (clean + (g - 1) * clean.mean()) / g
    return np.random.default_rng(frame).poisson(dim * dose * m.pixel_size_A**2).astype(np.float32)


def test_gate_files_hold_their_outputs_and_a_contrast_read_needs_two(tmp_path):
    import torch

    from hrtem3d.model.gate import VibrationGate, load_gate, save_gate
    from hrtem3d.model.unet import UNetConfig

    meta = {"pixel_size_A": 0.16, "normalization": "relative", "threshold": 1.2}
    two = VibrationGate(UNetConfig(widths=(4, 8), n_classes=3), outputs=2).eval()
    save_gate(tmp_path / "c.safetensors", two, meta)
    back, got = load_gate(tmp_path / "c.safetensors")
    x = torch.randn(1, 1, 32, 32)
    assert back.outputs == got["outputs"] == 2 and back(x).shape == (1, 2)
    torch.testing.assert_close(back(x), two(x))
    assert ContrastRead.from_file(tmp_path / "c.safetensors").threshold == 1.2
    save_gate(tmp_path / "v.safetensors", VibrationGate(UNetConfig(widths=(4, 8), n_classes=3)), meta)
    with pytest.raises(ValueError, match="contrast gate has two"):
        ContrastRead.from_file(tmp_path / "v.safetensors")


def test_the_gate_raises_the_gain_only_when_its_lower_bound_clears_the_threshold():
    read = ContrastRead(gate=None, pixel_size_A=0.16, normalization="relative", threshold=1.2)
    assert read.decide(2.0, 0.2) == 2.0  # lower bound 1.64
    assert read.decide(1.3, 0.2) is None and read.decide(1.0, 0.01) is None  # 1.06, 0.99: not sure enough
    assert read.decide(1.5, 0.5) is None  # a high reading with a wide spread is no reading


def test_the_shipped_contrast_gate_reads_a_lost_contrast_and_leaves_a_full_one(shipped_movie):
    from hrtem3d.model.gate import default_gate_path, load_gate

    m = shipped_movie
    read = ContrastRead.shipped()
    assert read.threshold >= 1.2 and "percentile" in load_gate(default_gate_path("contrast"))[1]["threshold_source"]
    full = read.read(_dimmed(m, 0, 1.0), m.pixel_size_A)
    assert full[0] < 1.15 and full[1] < 0.1 and read.decide(*full) is None, full
    for g in (2.0, 3.0):  # a contrast halved, and cut to a third (read 1.91 and 2.97 when measured)
        got = read.read(_dimmed(m, 0, g), m.pixel_size_A)
        assert 0.8 * g < got[0] < 1.2 * g and got[1] > 0.1 and read.decide(*got) == got[0], (g, got)


def test_auto_counts_at_the_gates_reading_when_it_is_sure(shipped_movie):
    m = shipped_movie
    truth = m.truth[m.truth.frame == 0]
    low = _dimmed(m, 0, 3.0)  # a third of the lattice contrast
    auto = Segmenter(lattice="static").segment(low, m.pixel_size_A)
    at_one = Segmenter(lattice="static", contrast_gain=1.0).segment(low, m.pixel_size_A)
    assert auto.contrast_gain == pytest.approx(auto.contrast_loss) and auto.contrast_gain > 2.1
    assert at_one.contrast_loss is None and at_one.contrast_gain == 1.0  # a gain given: no gate asked
    assert _ce_exact(truth, auto.columns) >= _ce_exact(truth, at_one.columns) + 0.3
    assert auto.columns.confidence.max() <= GAIN_CONFIDENCE_CAP < at_one.columns.confidence.max()  # an estimate
    ideal = Segmenter(lattice="static").segment(m.frames[0], m.pixel_size_A)  # read, and counted at gain 1
    assert ideal.gates_map and not auto.gates_map and not at_one.gates_map  # the gates' map: counts at gain 1


def test_a_loss_the_gate_read_but_the_counts_were_not_made_at_lowers_every_confidence(shipped_movie):
    """The contrast gate's reading held with a gain that ignores it (a movie's first frame read a loss that the
    lattice guard or the threshold set aside): the map lowers the counts' confidence, thin and thick columns."""
    m = shipped_movie
    seg = Segmenter(lattice="static")
    plain = seg.segment(m.frames[0], m.pixel_size_A, gain=1.0)
    held = seg.segment(m.frames[0], m.pixel_size_A, gain=1.0, contrast_read=(2.0, 0.2))
    assert held.gates_map and not plain.gates_map and held.contrast_loss == 2.0
    assert (held.columns.n_atoms.to_numpy() == plain.columns.n_atoms.to_numpy()).all()  # the same counts
    lower = plain.columns.confidence.to_numpy() - held.columns.confidence.to_numpy()
    assert (lower > 0).all() and lower.mean() > 0.2, lower.mean()


def _ce_exact(truth, cols) -> float:
    t, p = truth[truth.species == "Ce"], cols[cols.species == "Ce"].reset_index(drop=True)
    m = match_columns(t, p)
    hit = m[m.pred_row >= 0]
    return float((p.loc[hit.pred_row, "n_atoms"].to_numpy() == hit.n_atoms.to_numpy()).mean())


def test_a_fixed_gain_multiplies_the_working_image(shipped_movie):
    m = shipped_movie
    one, two = Segmenter(contrast_gain=1.0), Segmenter(contrast_gain=2.0)
    a, b = one.segment(m.frames[0], m.pixel_size_A), two.segment(m.frames[0], m.pixel_size_A)
    np.testing.assert_allclose(b.working_image, 2 * a.working_image, rtol=1e-5, atol=1e-6)
    assert (a.contrast_gain, b.contrast_gain) == (1.0, 2.0)
    # a frame with half the contrast, segmented at gain 2, is the original frame again
    c = two.segment(_lower_contrast(m.frames[0], 1.0), m.pixel_size_A)
    np.testing.assert_allclose(c.working_image, a.working_image, atol=2e-3)


@pytest.mark.parametrize("gate", [True, False])
def test_auto_gain_finds_the_lost_contrast_and_leaves_a_clean_frame_alone(shipped_movie, gate):
    m = shipped_movie
    truth = m.truth[m.truth.frame == 0]
    seg = Segmenter(lattice="static")  # contrast_gain "auto", the default; the gain is the static reader's
    seg.use_contrast_gate = gate  # False: the particle's counts against its size alone
    clean = seg.segment(m.frames[0], m.pixel_size_A)
    assert clean.contrast_gain == 1.0 and (clean.contrast_loss is not None) == gate
    low = _lower_contrast(m.frames[0], 1.0)  # half the lattice contrast, as a diffuse background gives
    at_one = Segmenter(contrast_gain=1.0, lattice="static").segment(low, m.pixel_size_A)
    auto = seg.segment(low, m.pixel_size_A)
    assert 1.5 <= auto.contrast_gain <= 3.0, auto.contrast_gain
    if gate:  # the contrast gate's reading of the whole image (1.86 measured; its Ce counts 0.93 exact)
        assert auto.contrast_gain == pytest.approx(auto.contrast_loss) and auto.contrast_gain < 2.4
        assert _ce_exact(truth, auto.columns) >= 0.8
    else:  # the particle's counts alone: an estimate from its shape, flatter than typical (count_size_ratio 0.62
        # against 0.70), so the gain overshoots the true 2 (2.8 measured) and its counts read thicker (0.48)
        assert auto.contrast_loss is None and auto.contrast_gain > 2.4
    assert auto.columns.confidence.max() <= GAIN_CONFIDENCE_CAP < at_one.columns.confidence.max()  # an estimate
    at_two = Segmenter(contrast_gain=2.0, lattice="static").segment(low, m.pixel_size_A)  # a user who knows
    exact_one, exact_auto, exact_two, exact_clean = (_ce_exact(truth, s.columns) for s in (at_one, auto, at_two,
                                                                                               clean))
    assert exact_one < 0.3 and exact_auto >= exact_one + 0.2, (exact_one, exact_auto)
    assert exact_two >= exact_clean - 0.05 and exact_clean >= 0.9, (exact_two, exact_clean)
    # each image on its own: nothing leaks into the next one; a movie's frames take the first one's gain
    assert seg.segment(m.frames[1], m.pixel_size_A).contrast_gain == 1.0
    assert seg.segment(m.frames[1], m.pixel_size_A, gain=auto.contrast_gain).contrast_gain == auto.contrast_gain


def test_cli_records_the_gain_and_rejects_a_bad_one(shipped_movie, tmp_path):
    import tifffile

    m = shipped_movie
    f = tmp_path / "low.tif"
    tifffile.imwrite(f, _lower_contrast(m.frames[0], 1.0))
    r = CliRunner().invoke(app, ["segment", str(f), "--pixel-size", str(m.pixel_size_A), "--out",
                                 str(tmp_path / "o"), "--no-progress", "--contrast-gain", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o" / "low" / "trust.json").read_text())["contrast_gain"] == 2.0
    r = CliRunner().invoke(app, ["segment", str(f), "--pixel-size", str(m.pixel_size_A), "--out",
                                 str(tmp_path / "bad"), "--no-progress", "--contrast-gain", "0.4"])
    assert r.exit_code != 0 and "--contrast-gain" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad" / "low" / "columns.csv").exists()
    g = tmp_path / "full.tif"  # full contrast, "auto": read, counted at gain 1, through the gates' map
    tifffile.imwrite(g, m.frames[0])
    r = CliRunner().invoke(app, ["segment", str(g), "--pixel-size", str(m.pixel_size_A), "--out",
                                 str(tmp_path / "o"), "--no-progress", "--lattice", "static"])
    assert r.exit_code == 0, r.output
    trust = json.loads((tmp_path / "o" / "full" / "trust.json").read_text())
    assert trust["contrast_gain"] == 1.0 and trust["gates_map"] is True
    assert trust["contrast_loss_read"] < 1.2 and 0 < trust["contrast_spread_read"] < 0.2


def test_a_movie_is_counted_at_the_gain_of_its_first_frame(shipped_movie, tmp_path):
    """track decides the gain once, on the reference frame, and every chunk (a worker each) uses it."""
    import dataclasses

    import pandas as pd

    from hrtem3d.simulate.movie import write_movie

    m = shipped_movie
    low = dataclasses.replace(m, frames=np.stack([_lower_contrast(f, 1.0) for f in m.frames]))
    files = write_movie(low, tmp_path / "movie")
    out = tmp_path / "auto"
    r = CliRunner().invoke(app, ["track", str(files["movie"]), "--out", str(out), "--chunk", "2", "--no-progress",
                                 "--no-figures", "--lattice", "static"])
    assert r.exit_code == 0, r.output
    trust = json.loads((out / "trust.json").read_text())
    assert trust["contrast_gain"] > 1.4 and trust["contrast_gain_source"] == "auto"
    assert trust["contrast_loss_read"] == pytest.approx(trust["contrast_gain"], abs=1e-3)  # the gate's reading
    assert trust["contrast_spread_read"] > 0.05 and not trust["gates_map"]  # a raised gain: capped, not mapped
    assert pd.read_parquet(out / "columns.parquet").confidence.max() <= GAIN_CONFIDENCE_CAP
    assert any("--contrast-gain" in w for w in trust["warnings"]) and "--contrast-gain" in r.output
    cols = pd.read_parquet(out / "columns.parquet")
    assert cols.frame.nunique() == len(m.frames)
    # the same frames with the contrast given: no search, no warning, the number recorded
    out2 = tmp_path / "given"
    r = CliRunner().invoke(app, ["track", str(files["movie"]), "--out", str(out2), "--chunk", "2", "--no-progress",
                                 "--no-figures", "--contrast-gain", "2", "--lattice", "static"])
    assert r.exit_code == 0, r.output
    trust = json.loads((out2 / "trust.json").read_text())
    assert trust["contrast_gain"] == 2.0 and "contrast_gain_source" not in trust


def test_segment_movie_holds_the_first_frames_gain_and_its_cap(shipped_movie):
    """The Python API's movie path: every frame at the first frame's estimated gain, every count capped."""
    import hrtem3d

    m = shipped_movie
    low = np.stack([_lower_contrast(f, 1.0) for f in m.frames])
    mc = hrtem3d.segment_movie(low, m.pixel_size_A, hrtem3d.load_model(lattice="static"))
    cols = mc.columns
    assert cols.frame.nunique() == len(m.frames)
    assert cols.confidence.max() <= GAIN_CONFIDENCE_CAP


def test_a_movies_frames_hold_the_first_frames_reading_and_go_through_its_map(shipped_movie, monkeypatch):
    """The gate reads the first frame only; a loss it read there but did not take (here: a threshold out of
    reach) lowers every frame's confidence alike, though the later frames are never read."""
    import hrtem3d

    m = shipped_movie
    model = hrtem3d.load_model(lattice="static")
    plain = hrtem3d.segment_movie(m.frames, m.pixel_size_A, model).columns  # a full contrast: read as ideal
    model.segment(m.frames[0], m.pixel_size_A)  # loads the gate
    reads = []
    monkeypatch.setattr(model.contrast_read, "threshold", 10.0)  # no reading is taken: counts at gain 1
    monkeypatch.setattr(model.contrast_read, "read", lambda *a: reads.append(1) or (2.0, 0.3))
    held = hrtem3d.segment_movie(m.frames, m.pixel_size_A, model).columns
    assert len(reads) == 1 and len(held) == len(plain)  # read once; the same counts
    drop = (plain.groupby("frame").confidence.mean() - held.groupby("frame").confidence.mean()).to_numpy()
    assert len(drop) == len(m.frames) and (drop > 0.15).all(), drop


def test_the_gates_reading_is_taken_only_where_the_image_shows_the_ceria_lattice(shipped_movie, monkeypatch):
    """A gate reading of an image without the CeO2 [110] lattice (a bare film, noise, another material) means
    nothing: the gain is then left to the particle's counts, however sure the gate is."""
    m = shipped_movie
    seg = Segmenter(lattice="static")
    seg.segment(m.frames[0], m.pixel_size_A)  # loads the gate
    monkeypatch.setattr(seg.contrast_read, "threshold", 0.0)  # every reading counts as sure
    on = seg.segment(m.frames[0], m.pixel_size_A)
    assert on.contrast_gain == pytest.approx(on.contrast_loss)  # the lattice is there: the reading is taken
    noise = np.random.default_rng(5).poisson(1000 * m.pixel_size_A**2, m.frames[0].shape).astype(np.float32)
    off = seg.segment(noise, m.pixel_size_A)
    assert off.contrast_loss is not None and off.contrast_gain != pytest.approx(off.contrast_loss)
