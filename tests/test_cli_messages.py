"""Library messages name parameters in library terms; the CLI shows them as the options the user types."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import hrtem3d
from hrtem3d.cli import _flags_in, _in_cli_terms
from hrtem3d.errors import HrtemError

PKG = Path(hrtem3d.__file__).parent
FLAG = re.compile(r"(^|[\s(`'\"])--[a-z]")


def _error_strings(path: Path) -> list[str]:
    """The string parts of every `HrtemError(...)` call's message in one source file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "HrtemError" and node.args:
            out += [n.value for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return out


def test_no_library_error_names_a_cli_flag():
    bad = {str(p.relative_to(PKG)): s for p in PKG.rglob("*.py") if p.name != "cli.py"
           for s in _error_strings(p) if FLAG.search(s)}
    assert not bad, f"say what is missing in library terms (`name`, param=...), not as a CLI flag: {bad}"
    assert FLAG.search("pass --pixel-size lattice") and not FLAG.search("a 2--3 range")  # the checker sees one


def _raised(fn, *args, **kwargs) -> HrtemError:
    with pytest.raises(HrtemError) as info:
        fn(*args, **kwargs)
    return info.value


def test_cli_names_the_flags(tmp_path):
    from hrtem3d.data.generate import simulate_dataset
    from hrtem3d.io import open_image, validate_pixel_size
    from hrtem3d.jobs.track_movie import TrackSettings, track_movie
    from hrtem3d.jobs.trust import parse_pixel_size
    from hrtem3d.model.io import default_model_path
    from hrtem3d.segmentation.segmenter import Segmenter

    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros((16, 16), np.float32))
    cases = [
        (_raised(open_image, npy), "pixel_size_A", "give --pixel-size (Å per pixel)"),
        (_raised(validate_pixel_size, "abc"), "pixel_size_A", "--pixel-size 'abc' is not a number"),
        (_raised(parse_pixel_size, "big"), "pixel_size_A", "--pixel-size must be a number"),
        (_raised(track_movie, npy, tmp_path / "o", TrackSettings(chunk=0)), "chunk", "--chunk must be at least 1"),
        (_raised(track_movie, npy, tmp_path / "o", TrackSettings(workers=0)), "workers", "--workers must be"),
        (_raised(simulate_dataset, tmp_path / "s.zarr", 0), "n_structures", "--n-structures must lie"),
        (_raised(Segmenter.segment, None, np.zeros((8, 8)), 5.0), "pixel_size_A", "or give --pixel-size"),
        (_raised(Segmenter, default_model_path(), lattice="vibrating"), "lattice",  # a file: one reading
         "--lattice vibrating needs a model trained with --lattice-heads"),
    ]
    for e, param, cli in cases:
        assert e.param == param, str(e)
        assert "--" not in str(e), str(e)  # the library speaks of its own parameters
        assert cli in _in_cli_terms(e) and "`" not in _in_cli_terms(e), _in_cli_terms(e)


def test_too_large_particles_name_both_options():
    from hrtem3d.data.generate import SimulationSettings

    s = SimulationSettings()
    s.particles.diameter_A = (20.0, 200.0)
    e = _raised(s.validate)
    assert "`store_gpts`" in str(e) and "`diameter_A`" in str(e)
    assert "raise --gpts or lower --max-diameter" in _in_cli_terms(e)


def test_warnings_in_cli_terms():
    from hrtem3d.segmentation.lattice import check_pixel_size, lattice_image

    msg = check_pixel_size(lattice_image((192, 192), 0.1, rng=np.random.default_rng(0)), 0.11).message
    assert msg.endswith("pass `pixel_size_A='lattice'`")
    assert _flags_in(msg).endswith("pass --pixel-size lattice")
    assert _flags_in("`unknown` stays, `fps` goes") == "`unknown` stays, --fps goes"
