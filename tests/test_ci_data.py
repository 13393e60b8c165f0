"""Under CI=true, missing shared test data is a failure, not a silent skip (issue 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PROBE = '''
def test_needs_the_microscope_files(microscope_dir):
    assert microscope_dir.is_dir()
'''


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "HRTEM3D_SHARED", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env={**clean, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **env},
                          capture_output=True, text=True, timeout=120)


def test_missing_shared_data_fails_under_ci_and_skips_otherwise(tmp_path):
    gone = str(tmp_path / "nowhere")
    ci = _pytest(tmp_path, CI="true", HRTEM3D_SHARED=gone)
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "CI=true but the shared test data is missing" in ci.stdout and "1 error" in ci.stdout, ci.stdout
    local = _pytest(tmp_path, HRTEM3D_SHARED=gone)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    found = tmp_path / "there" / "testdata" / "microscope"
    found.mkdir(parents=True)
    here = _pytest(tmp_path, CI="true", HRTEM3D_SHARED=str(tmp_path / "there"))
    assert here.returncode == 0 and "1 passed" in here.stdout, here.stdout
