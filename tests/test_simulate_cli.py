"""The `simulate` command: determinism, resume after a kill, dask, bad input."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from conftest import TINY_CLI, tiny_settings
from typer.testing import CliRunner

from hrtem3d.cli import app
from hrtem3d.data import store
from hrtem3d.data.generate import SimulationSettings, simulate_dataset
from hrtem3d.errors import HrtemError

runner = CliRunner()


def _waves(path):
    root = store.open_store(path)
    return {int(g.attrs["index"]): g["exit_wave"][:] for g in store.structure_groups(root)}


def _columns(path):
    root = store.open_store(path)
    return {int(g.attrs["index"]): store.read_columns(g) for g in store.structure_groups(root)}


def _same(a, b):
    """Same structures exactly; same waves to FFT rounding (FFTW plans may differ between processes)."""
    ca, cb = _columns(a), _columns(b)
    wa, wb = _waves(a), _waves(b)
    return (sorted(ca) == sorted(cb) and all(ca[i].equals(cb[i]) for i in ca)
            and all(np.allclose(wa[i], wb[i], atol=2e-5) for i in wa))


def test_same_seed_same_dataset_other_seed_other(tmp_path):
    a, b, c = tmp_path / "a.zarr", tmp_path / "b.zarr", tmp_path / "c.zarr"
    simulate_dataset(a, 2, tiny_settings(1), workers=0, progress=False)
    simulate_dataset(b, 2, tiny_settings(1), workers=0, progress=False)
    simulate_dataset(c, 2, tiny_settings(2), workers=0, progress=False)
    assert _same(a, b)
    assert not _columns(a)[0].equals(_columns(c)[0])
    assert not np.allclose(_waves(a)[0], _waves(c)[0], atol=1e-3)


def test_killed_run_resumes_without_duplicates(tmp_path):
    out = tmp_path / "k.zarr"
    cmd = [sys.executable, "-m", "hrtem3d.cli", "simulate", str(out), "-n", "6", "--workers", "0",
           "--seed", "4", "--no-progress", *TINY_CLI]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        sdir = out / "structures"
        if sdir.exists() and len([d for d in sdir.iterdir() if d.is_dir()]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(store.completed(zarr.open_group(str(out), mode="r")))
    assert n_before < 6
    # leave a half-written structure behind as a crash would
    root = zarr.open_group(str(out), mode="r+")
    root["structures"].create_group("s000005")
    r = runner.invoke(app, ["simulate", str(out), "-n", "6", "--workers", "0", "--seed", "4", "--no-progress",
                            *TINY_CLI])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (out / "structures").iterdir() if p.is_dir())
    assert names == [f"s{i:06d}" for i in range(6)]
    fresh = tmp_path / "fresh.zarr"
    same = SimulationSettings.from_dict(store.settings_of(store.open_store(out)))
    simulate_dataset(fresh, 6, same, workers=0, progress=False)
    assert sorted(_waves(out)) == list(range(6))
    assert _same(out, fresh)


def test_dask_local_cluster_gives_the_same_result(tmp_path):
    a, b = tmp_path / "serial.zarr", tmp_path / "dask.zarr"
    simulate_dataset(a, 3, tiny_settings(6), workers=0, progress=False)
    simulate_dataset(b, 3, tiny_settings(6), workers=2, progress=False)
    assert sorted(_waves(b)) == [0, 1, 2]
    assert _same(a, b)


def test_other_settings_or_version_refused(tmp_path):
    out = tmp_path / "v.zarr"
    simulate_dataset(out, 1, tiny_settings(1), workers=0, progress=False)
    with pytest.raises(HrtemError, match="other settings"):
        simulate_dataset(out, 2, tiny_settings(2), workers=0, progress=False)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["format_version"] = 99
    (out / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(HrtemError, match="version 99"):
        store.open_store(out)


def test_full_disk_is_one_clear_error_and_leaves_nothing_complete(tmp_path, monkeypatch):
    out = tmp_path / "f.zarr"
    real = zarr.Group.create_array

    def full(self, name, **kw):
        if name == "alpha":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, **kw)

    monkeypatch.setattr(zarr.Group, "create_array", full)
    with pytest.raises(HrtemError, match="disk full.*resume"):
        simulate_dataset(out, 2, tiny_settings(1), workers=0, progress=False)
    monkeypatch.setattr(zarr.Group, "create_array", real)
    assert store.completed(zarr.open_group(str(out), mode="r")) == set()
    simulate_dataset(out, 2, tiny_settings(1), workers=0, progress=False)
    assert store.completed(zarr.open_group(str(out), mode="r")) == {0, 1}


@pytest.mark.parametrize("args,message", [
    (["--min-diameter", "30", "--max-diameter", "20"], "diameter"),
    (["--potential-sampling", "0.5"], "potential_sampling"),
    (["--gpts", "96", "--max-diameter", "40"], "do not fit the 15.4 Å cell; raise --gpts or lower --max-diameter"),
    (["-n", "0"], "n-structures"),
])
def test_bad_parameters_exit_2_with_one_line(tmp_path, args, message):
    r = runner.invoke(app, ["simulate", str(tmp_path / "bad.zarr"), "--workers", "0", *args])
    assert r.exit_code == 2
    out = r.output.strip()
    assert out.startswith("error:") and message in out
    assert "Traceback" not in out and len(out.splitlines()) == 1
    assert not (tmp_path / "bad.zarr" / "structures").exists() or not os.listdir(tmp_path / "bad.zarr" / "structures")


def test_not_a_store_is_refused(tmp_path):
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "x.txt").write_text("hi")
    r = runner.invoke(app, ["simulate", str(tmp_path / "junk.zarr"), "-n", "1", "--workers", "0"])
    assert r.exit_code == 2 and "not a zarr store" in r.output


def test_help_explains_every_command():
    import re

    import click
    import typer.main

    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    group = typer.main.get_command(app)
    commands = sorted(group.commands)
    assert {"simulate", "train", "segment", "track", "evaluate", "calibrate", "demo"} <= set(commands)
    for cmd in commands:
        assert re.search(rf"│ {cmd} +\S", r.output), (cmd, r.output)  # listed with a summary
        sub = runner.invoke(app, [cmd, "--help"], terminal_width=200)
        assert sub.exit_code == 0 and f" {cmd} " in sub.output.split("Usage:")[1].splitlines()[0], sub.output
        doc = group.commands[cmd].help or ""
        assert len(doc.split()) >= 5, (cmd, doc)  # a real sentence, not a placeholder
        for param in group.commands[cmd].params:  # every option says what it does
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                assert param.help and len(param.help.split()) >= 2, (cmd, param.name)
    r = runner.invoke(app, ["simulate", "--help"])
    assert "Resumable" in r.output and "--scheduler" in r.output


def _die_on_two(index, sdict):
    if index == 2:
        os._exit(1)  # the worker process dies, as when the OOM killer strikes
    from hrtem3d.data.generate import simulate_one

    return simulate_one(index, sdict)


def test_killed_worker_is_one_clear_error_and_keeps_finished_work(tmp_path):
    import dask
    import distributed  # noqa: F401  (load its config defaults before overriding one)

    from hrtem3d.data.generate import _run_dask

    written = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            pytest.raises(HrtemError, match="worker died.*resume"):
        _run_dask([0, 1, 2], tiny_settings(1).to_dict(), 1, None, lambda r: written.append(r["index"]),
                  task=_die_on_two)
    assert 2 not in written


def _index_only(index: int, sdict: dict) -> dict:
    return {"index": index}


def test_every_structure_is_done_when_there_are_more_than_the_submission_window():
    from hrtem3d.data.generate import _run_dask

    written = []
    _run_dask(list(range(23)), {}, 1, None, lambda r: written.append(r["index"]), task=_index_only)
    assert sorted(written) == list(range(23))  # the window is 8: none lost at its edge


def test_runs_on_a_scheduler_address(tmp_path, monkeypatch):
    from dask.distributed import LocalCluster

    from hrtem3d.data import generate

    monkeypatch.setattr(generate, "SCHEDULER_TIMEOUT_S", 2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        r = simulate_dataset(tmp_path / "c.zarr", 2, tiny_settings(1), scheduler=cluster.scheduler_address,
                             progress=False)
    assert r["done"] == 2 and store.completed(store.open_store(tmp_path / "c.zarr")) == {0, 1}
    with pytest.raises(HrtemError, match="cannot reach"):
        simulate_dataset(tmp_path / "d.zarr", 1, tiny_settings(1), scheduler="tcp://127.0.0.1:9", progress=False)


def test_frozen_phonons_are_seeded_configurations():
    from hrtem3d.simulate import MultisliceConfig, exit_wave
    from hrtem3d.structure import ParticleEnvelope, random_particle

    cfg = MultisliceConfig(potential_sampling_A=0.08, store_gpts=96, frozen_phonons=2)
    atoms, _ = random_particle(np.random.default_rng(0), ParticleEnvelope(diameter_A=(8, 10)),
                               cell_A=(cfg.cell_A, cfg.cell_A))
    a, b, c = exit_wave(atoms, cfg, seed=1), exit_wave(atoms, cfg, seed=1), exit_wave(atoms, cfg, seed=2)
    assert a.shape == (2, 96, 96)
    assert np.allclose(a, b, atol=1e-5)
    assert not np.allclose(a[0], a[1], atol=1e-3) and not np.allclose(a, c, atol=1e-3)
