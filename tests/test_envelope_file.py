"""The microscope envelope as a TOML file: the shipped default, validation, and a store that keeps it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_CLI
from typer.testing import CliRunner

from hrtem3d.errors import HrtemError
from hrtem3d.simulate.envelope_file import default_envelope_path, envelope_of, load_envelope
from hrtem3d.simulate.optics import OpticsEnvelope
from hrtem3d.simulate.scope import ScopeEnvelope


def test_shipped_envelope_is_the_training_default():
    env = load_envelope(default_envelope_path())
    assert env.optics == OpticsEnvelope() and env.scope == ScopeEnvelope()


@pytest.mark.parametrize("text, words", [
    ("[optics]\nc3 = [-15, -5]\n", ["optics.c3", "known"]),
    ("[optics]\naperture_mrad = 25\n", ["aperture_mrad", "range"]),
    ("[optics]\naperture_mrad = [30, 20]\n", ["aperture_mrad", "above max"]),
    ("[optics]\nvoltage_kV = 'high'\n", ["voltage_kV"]),
    ("[scope]\np_effect = 2.0\n", ["probabilities"]),
    ("[lens]\nc1_nm = [0, 1]\n", ["[lens]"]),
    ("[optics\n", ["not valid TOML"]),
])
def test_bad_envelope_files_are_one_line_errors(tmp_path, text, words):
    f = tmp_path / "scope.toml"
    f.write_text(text)
    with pytest.raises(HrtemError) as e:
        load_envelope(f)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_simulate_keeps_the_envelope_and_training_draws_from_it(tmp_path):
    from hrtem3d.cli import app
    from hrtem3d.data import store
    from hrtem3d.data.dataset import HrtemDataset

    f = tmp_path / "mine.toml"
    f.write_text("[optics]\nvoltage_kV = 200\naperture_mrad = [14.0, 16.0]\ndose = [50.0, 60.0]\n"
                 "[scope]\npixel_size_A = [0.05, 0.06]\n")
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(app, ["simulate", str(out), "-n", "1", "--workers", "0", "--films", "1",
                                 "--envelope", str(f), "--no-progress", *TINY_CLI])
    assert r.exit_code == 0, r.output
    settings = store.settings_of(store.open_store(out))
    assert settings["multislice"]["energy_eV"] == 200e3
    env = envelope_of(settings)
    assert env.optics.aperture_mrad == (14.0, 16.0) and env.scope.pixel_size_A == (0.05, 0.06)
    ds = HrtemDataset(out, crop=64, samples_per_epoch=4, seed=1)
    optics, det = ds.envelope.sample(np.random.default_rng(0))
    assert 14.0 <= optics.aperture_mrad <= 16.0 and 50.0 <= det.dose_e_per_A2 <= 60.0
    assert optics.energy_eV == 200e3
    r = CliRunner().invoke(app, ["simulate", str(tmp_path / "t.zarr"), "-n", "1", "--envelope",
                                 str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_documented_example_envelopes_load():
    """The envelopes docs/your-microscope.md tells users to copy are valid files, with what their comments say."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "docs" / "examples"
    envs = {p.name: load_envelope(p) for p in sorted(folder.glob("*.toml"))}
    assert {"my_scope.toml", "scope_200kV.toml"} <= set(envs)
    assert envs["scope_200kV.toml"].optics.energy_eV == 200e3
    assert envs["my_scope.toml"].optics.energy_eV == 300e3
    assert envs["scope_200kV.toml"].scope.pixel_size_A == (0.08, 0.12)
