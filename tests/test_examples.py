"""examples/quickstart.py runs, writes nothing unless asked, and its numbers agree with the truth."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


def test_quickstart_runs_and_writes_only_where_asked(tmp_path, monkeypatch, capsys):
    if not (EXAMPLE.parent.parent / ".." / "shared" / "testdata" / "microscope").exists():
        pytest.skip("the microscope test data are not next to this checkout")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    main = runpy.run_path(str(EXAMPLE))["main"]
    r = main(tmp_path / "figures")
    assert os.listdir(work) == []  # nothing written anywhere else
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(Path(f).name for f in r["files"])
    assert {"quickstart.png", "particle.xyz", "particle.cif"} <= {Path(f).name for f in r["files"]}
    assert r["recall"] > 0.85 and r["exact"] > 0.6  # the simulated particle, against its truth
    assert len(r["atoms"]) == r["columns"].n_atoms.sum()
    assert r["changes_found"] >= len(r["movie"].events) - 1  # the movie's events, against its truth
    out = capsys.readouterr().out
    assert "64x64_TEM_images_acquire.emi" in out and "wrote" in out
