"""Fuzz the readers: mutated microscope files may only ever raise HrtemError.

Each example copies a real sample (or a pair: TIA .emi + .ser) into a fresh temporary folder,
flips, overwrites, inserts, deletes or truncates a few bytes (mostly in the header, where the sizes
live), then calls ``open_image`` and ``read_all``. Any exception other than HrtemError fails, and so
does a reader that hangs (a watchdog alarm raises a BaseException that the readers cannot wrap).

The examples are derandomised so that CI is reproducible; set HRTEM3D_FUZZ_EXAMPLES=2000 to fuzz
harder with fresh random examples.
"""

from __future__ import annotations

import io
import os
import signal
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import MICROSCOPE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hrtem3d.errors import HrtemError
from hrtem3d.io import open_image

DATA = MICROSCOPE  # ../shared/testdata/microscope, or under $HRTEM3D_SHARED

_EXTRA = int(os.environ.get("HRTEM3D_FUZZ_EXAMPLES", "0"))


def _settings(examples: int) -> settings:
    return settings(
        max_examples=_EXTRA or examples,
        deadline=None,
        derandomize=not _EXTRA,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


FUZZ = _settings(30)
# Each .emd open walks the HDF5 metadata in a separate process (~0.3 s): fewer examples.
FUZZ_EMD = _settings(12)
HANG_SECONDS = 60  # longer than hrtem3d.io.headers.HDF5_CHECK_TIMEOUT_S

# name -> files (relative to DATA) copied together; the first one is opened.
EMD_SAMPLES = {
    "emd_velox": ["emd/fei_example_tem_stack.emd"],
    "emd_ncem": ["emd/example_image.emd"],
}
SAMPLES = {
    "dm3": ["dm/test_STEM_image.dm3"],
    "dm4_stack": ["dm/3D_test-2.dm4"],
    "tia_pair": ["tia/64x64x5_TEM_preview.emi", "tia/64x64x5_TEM_preview_1.ser"],
    "tia_ser": ["tia/64x64_TEM_images_acquire_1.ser"],
    "mrc": ["mrc/Custom_movie.mrc"],
    "tiff_stack": ["tiff/test_loading_image_saved_with_DM_stack.tif"],
}


def _npy_sample() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, (np.arange(3 * 16 * 16) % 97).reshape(3, 16, 16).astype(np.float32))
    return buffer.getvalue()


class _Hang(BaseException):
    """Raised by the watchdog; a BaseException so that no `except Exception` can turn it into HrtemError."""


def _alarm(signum, frame):  # noqa: ARG001
    raise _Hang(f"a reader ran for more than {HANG_SECONDS} s")


OPS = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "int32"]),
    st.floats(0.0, 1.0, allow_nan=False),  # where, as a fraction
    st.booleans(),  # within the first 2 kB (headers) rather than anywhere
    st.integers(0, 2**32 - 1),  # value
)


def _mutate(raw: bytes, ops: list[tuple[str, float, bool, int]]) -> bytes:
    data = bytearray(raw)
    for op, where, header, value in ops:
        span = min(len(data), 2048) if header else len(data)
        pos = min(int(where * span), max(len(data) - 1, 0))
        if op == "flip" and data:
            data[pos] ^= 1 << (value % 8)
        elif op == "set" and data:
            data[pos] = value % 256
        elif op == "insert":
            data[pos:pos] = value.to_bytes(4, "little")[: 1 + value % 4]
        elif op == "delete":
            del data[pos : pos + 1 + value % 16]
        elif op == "truncate":
            del data[pos:]
        elif op == "int32" and len(data) >= 4:
            pos = min(pos, len(data) - 4)
            special = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**16, 65537, value]
            struct.pack_into("<I" if value % 2 else ">I", data, pos, special[value % len(special)])
    return bytes(data)


def _open_and_read(path: Path, pixel_size_A: float | None) -> None:
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(HANG_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = open_image(path, pixel_size_A=pixel_size_A, min_size=1, pixel_size_range_A=(1e-30, 1e30))
            data = source.read_all()
        assert data.shape == source.shape and data.dtype == np.float32
    except HrtemError as exc:
        message = str(exc)
        assert message and "\n" not in message
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def _fuzz_sample(files: list[Path], ops, which: int, pixel_size_A: float | None) -> None:
    target = which % len(files)
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(files):
            raw = src.read_bytes()
            (Path(tmp) / src.name).write_bytes(_mutate(raw, ops) if i == target else raw)
        _open_and_read(Path(tmp) / files[0].name, pixel_size_A)


needs_data = pytest.mark.usefixtures("microscope_dir")  # skips when missing; fails under CI=true
MUTATIONS = {
    "ops": st.lists(OPS, min_size=1, max_size=4),
    "which": st.integers(0, 1),
    "pixel_size_A": st.sampled_from([None, 1.0]),
}


@needs_data
@pytest.mark.parametrize("sample", sorted(SAMPLES))
@FUZZ
@given(**MUTATIONS)
def test_mutated_real_files_raise_only_hrtem_error(sample, ops, which, pixel_size_A) -> None:
    _fuzz_sample([DATA / rel for rel in SAMPLES[sample]], ops, which, pixel_size_A)


@needs_data
@pytest.mark.parametrize("sample", sorted(EMD_SAMPLES))
@FUZZ_EMD
@given(**MUTATIONS)
def test_mutated_emd_files_raise_only_hrtem_error(sample, ops, which, pixel_size_A) -> None:
    _fuzz_sample([DATA / rel for rel in EMD_SAMPLES[sample]], ops, which, pixel_size_A)


@FUZZ
@given(ops=st.lists(OPS, min_size=1, max_size=4), pixel_size_A=st.sampled_from([None, 1.0]))
def test_mutated_npy_raises_only_hrtem_error(ops, pixel_size_A) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "movie.npy"
        path.write_bytes(_mutate(_npy_sample(), ops))
        _open_and_read(path, pixel_size_A)


def test_mutation_changes_the_bytes() -> None:
    """The fuzzer is not a no-op: every operation changes a sample."""
    raw = _npy_sample()
    for op in ("flip", "set", "insert", "delete", "truncate", "int32"):
        assert _mutate(raw, [(op, 0.5, True, 12345)]) != raw
