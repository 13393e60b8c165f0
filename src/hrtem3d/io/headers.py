"""Header guards: cheap parses of TIA .ser, DM3/DM4, MRC and HDF5/EMD headers before a library reads them.

A library reader given a corrupted header may allocate or loop on the sizes it declares; these walks check
those sizes against the file first and raise :class:`hrtem3d.errors.HrtemError` with a one-line message
that says what is wrong and what to do. Internal to :mod:`hrtem3d.io` (the format readers call them).
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

import numpy as np

from hrtem3d.errors import HrtemError
from hrtem3d.io.checks import MAX_FRAME_PIXELS, MAX_FRAMES, MAX_SIZE, check_declared_bytes

_SER_ITEMSIZE = {1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 16}


def _bad_ser(path: Path, what: str) -> HrtemError:
    return HrtemError(
        f"{path.name} is not a readable TIA .ser file ({what}): it is truncated or corrupted; "
        "copy it again from the microscope PC"
    )


def precheck_ser(path: Path) -> None:
    """Validate a TIA ``.ser`` header against the file size before rosettasciio reads it.

    rosettasciio allocates ``ValidNumberElements`` records and loops over ``NumberDimensions``
    straight from the header, so a corrupted header can exhaust memory or time.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(34)
        if len(head) < 30:
            raise _bad_ser(path, "header too short")
        order, series_id, version = struct.unpack_from("<HHH", head, 0)
        data_type_id, tag_type_id, total, valid = struct.unpack_from("<IIII", head, 6)
        if order != 0x4949 or series_id != 0x0197 or version not in (0x0210, 0x0220):
            raise _bad_ser(path, "bad signature")
        if data_type_id not in (0x4120, 0x4122) or tag_type_id not in (0x4152, 0x4142):
            raise _bad_ser(path, "unknown data or tag type")
        if version <= 0x0210:
            (offset_array,) = struct.unpack_from("<I", head, 22)
            (ndim,) = struct.unpack_from("<I", head, 26)
            pos, offset_size = 30, 4
        else:
            if len(head) < 34:
                raise _bad_ser(path, "header too short")
            (offset_array,) = struct.unpack_from("<Q", head, 22)
            (ndim,) = struct.unpack_from("<I", head, 30)
            pos, offset_size = 34, 8
        if not (1 <= valid <= total) or valid > size or total > size:
            raise _bad_ser(path, f"{valid} of {total} elements declared")
        if ndim > 8:
            raise _bad_ser(path, f"{ndim} dimensions declared")
        for _ in range(ndim):
            f.seek(pos + 24)
            raw = f.read(4)
            if len(raw) < 4:
                raise _bad_ser(path, "dimension table cut short")
            (desc_len,) = struct.unpack("<I", raw)
            pos += 28 + desc_len
            f.seek(pos)
            raw = f.read(4)
            if len(raw) < 4 or pos > size:
                raise _bad_ser(path, "dimension table cut short")
            (unit_len,) = struct.unpack("<I", raw)
            pos += 4 + unit_len
            if pos > size:
                raise _bad_ser(path, "dimension table cut short")
        if offset_array + valid * offset_size > size:
            raise _bad_ser(path, "offset table beyond the end of the file")
        f.seek(offset_array)
        offsets = np.frombuffer(f.read(valid * offset_size), dtype="<u4" if offset_size == 4 else "<u8")
        if offsets.size != valid or (offsets.size and int(offsets.max()) >= size):
            raise _bad_ser(path, "data offsets beyond the end of the file")
        first = int(offsets[0])
        if data_type_id == 0x4122:  # images
            f.seek(first + 40)
            raw = f.read(10)
            if len(raw) < 10:
                raise _bad_ser(path, "first image header cut short")
            dtype_code, sx, sy = struct.unpack("<HII", raw)
            element = 50 + sx * sy * _SER_ITEMSIZE.get(dtype_code, 0)
            ok = dtype_code in _SER_ITEMSIZE and sx > 0 and sy > 0
        else:  # spectra
            f.seek(first + 20)
            raw = f.read(6)
            if len(raw) < 6:
                raise _bad_ser(path, "first spectrum header cut short")
            dtype_code, length = struct.unpack("<HI", raw)
            element = 26 + length * _SER_ITEMSIZE.get(dtype_code, 0)
            ok = dtype_code in _SER_ITEMSIZE and length > 0
        if not ok:
            raise _bad_ser(path, "bad data type or size in the first element")
        if first + element > size or valid * element > size:
            raise _bad_ser(path, f"{valid} element(s) of {element} bytes do not fit in {size} bytes")


_DM_SIMPLE = {2: 2, 3: 4, 4: 2, 5: 4, 6: 4, 7: 8, 8: 1, 9: 1, 10: 1, 11: 8, 12: 8}


class _DMWalker:
    """Walk a DM3/DM4 tag tree the way rosettasciio reads it, consuming sizes instead of values.

    rosettasciio loops over element counts taken from the file; an array of zero-byte elements
    (a struct without fields, empty strings) with a corrupted count makes it loop for ever, and a
    count beyond the end of the file makes it loop long. This walk refuses both before it runs.
    """

    def __init__(self, f: object, size: int, path: Path) -> None:
        self.f = f
        self.size = size
        self.path = path
        self.pos = 0
        self.lq = 4
        self.little = False
        self.dims: list[int] | None = None  # values of the tags of the ImageData/Dimensions group

    def bad(self, what: str) -> HrtemError:
        return HrtemError(
            f"{self.path.name} is not a readable DigitalMicrograph file ({what} at byte {self.pos}): it is "
            "truncated or corrupted; save it again from DigitalMicrograph"
        )

    def take(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.bad("data run past the end of the file")
        self.pos += n

    def uint(self, n: int) -> int:
        self.f.seek(self.pos)  # type: ignore[attr-defined]
        raw = self.f.read(n)  # type: ignore[attr-defined]
        if len(raw) < n:
            raise self.bad("file cut short")
        self.pos += n
        return int.from_bytes(raw, "big")

    def simple(self, etype: int) -> int:
        if etype not in _DM_SIMPLE:
            raise self.bad(f"unknown data type {etype}")
        return _DM_SIMPLE[etype]

    def array(self, count: int, element: int) -> None:
        if count and element == 0:
            raise self.bad("array of empty elements")
        self.take(count * element)

    def struct_size(self) -> int:
        self.uint(self.lq)
        nfields = self.uint(self.lq)
        total = 0
        for _ in range(nfields):
            self.uint(self.lq)
            total += self.simple(self.uint(self.lq))
        return total

    def data_tag(self) -> None:
        if self.lq == 8:
            self.take(8)
        self.f.seek(self.pos)  # type: ignore[attr-defined]
        if self.f.read(4) != b"%%%%":  # type: ignore[attr-defined]
            raise self.bad("missing tag delimiter")
        self.pos += 4
        n_info = self.uint(self.lq)
        if n_info == 1:
            etype = self.uint(self.lq)
            nbytes = self.simple(etype)
            if self.dims is not None and etype in (2, 3, 4, 5, 11, 12):
                self.f.seek(self.pos)  # type: ignore[attr-defined]
                raw = self.f.read(nbytes)  # type: ignore[attr-defined]
                order = "little" if self.little else "big"
                self.dims.append(int.from_bytes(raw, order, signed=etype in (2, 3, 11)))
            self.take(nbytes)
        elif n_info == 2:
            if self.uint(self.lq) != 18:
                raise self.bad("bad string tag")
            self.take(self.uint(self.lq))
        elif n_info == 3:
            if self.uint(self.lq) != 20:
                raise self.bad("bad array tag")
            element = self.simple(self.uint(self.lq))
            self.array(self.uint(self.lq), element)
        elif n_info > 3:
            enc = self.uint(self.lq)
            if enc == 15:
                self.take(self.struct_size())
            elif enc == 20:
                eltype = self.uint(self.lq)
                if eltype == 15:
                    element = self.struct_size()
                elif eltype == 18:
                    element = self.uint(self.lq)
                elif eltype == 20:
                    element = self.simple(self.uint(self.lq))
                    self.uint(self.lq)
                else:
                    raise self.bad(f"unknown array type {eltype}")
                self.array(self.uint(self.lq), element)
            else:
                raise self.bad(f"unknown tag encoding {enc}")
        else:
            raise self.bad("empty tag")

    def group(self, ntags: int, depth: int, name: bytes = b"") -> None:
        if depth > 64:
            raise self.bad("tag groups nested too deep")
        if name == b"Dimensions":
            self.dims = []
        for _ in range(ntags):
            tag_id = self.uint(1)
            name_length = self.uint(2)
            self.f.seek(self.pos)  # type: ignore[attr-defined]
            tag_name = self.f.read(min(name_length, 16))  # type: ignore[attr-defined]
            self.take(name_length)
            if tag_id == 21:
                self.data_tag()
            elif tag_id == 20:
                self.take(2 + (8 if self.lq == 8 else 0))
                self.group(self.uint(self.lq), depth + 1, tag_name)
            else:
                raise self.bad(f"unknown tag kind {tag_id}")
        if name == b"Dimensions" and self.dims is not None:
            dims, self.dims = self.dims, None
            if any(d <= 0 for d in dims) or math.prod(dims) > self.size:
                raise self.bad(f"image dimensions {dims} do not fit in the file")

    def walk(self) -> None:
        version = self.uint(4)
        if version not in (3, 4):
            raise self.bad(f"version {version}, expected 3 or 4")
        self.lq = 8 if version == 4 else 4
        self.uint(self.lq)  # declared file size
        self.little = self.uint(4) != 0  # byte order of the values
        self.take(2)  # root group: sorted, open
        self.group(self.uint(self.lq), 0)


def precheck_dm(path: Path) -> None:
    """Validate the tag tree of a ``.dm3``/``.dm4`` file against its size before rosettasciio parses it."""
    with open(path, "rb") as f:
        _DMWalker(f, path.stat().st_size, path).walk()


_MRC_ITEMSIZE = {0: 1, 1: 2, 2: 4, 4: 8, 6: 2, 12: 2}


def precheck_mrc(path: Path) -> None:
    """Validate the sizes in an MRC header before rosettasciio maps the data.

    rosettasciio builds its lazy array from NX, NY, NZ as stored; a corrupted size makes it plan
    billions of chunks.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1024)
    if len(head) < 1024:
        raise HrtemError(
            f"{path.name} is shorter than an MRC header (1024 bytes): it is truncated or corrupted"
        )
    nx, ny, nz, mode = struct.unpack_from("<iiii", head, 0)
    (next_bytes,) = struct.unpack_from("<i", head, 92)
    itemsize = _MRC_ITEMSIZE.get(mode)
    if itemsize is None or min(nx, ny, nz) < 1 or next_bytes < 0:
        raise HrtemError(
            f"{path.name} has an unreadable MRC header (size {nx} x {ny} x {nz}, mode {mode}): it is "
            "corrupted or not a little-endian MRC file"
        )
    if nx > MAX_SIZE or ny > MAX_SIZE or nx * ny > MAX_FRAME_PIXELS or nz > MAX_FRAMES:
        raise HrtemError(
            f"{path.name} declares {nz} frame(s) of {ny} x {nx} pixels, beyond the limits ({MAX_SIZE} "
            "pixels a side): the header is corrupted"
        )
    if size < 1024 + next_bytes:
        raise HrtemError(
            f"{path.name} is shorter ({size} bytes) than its MRC header and {next_bytes}-byte extended "
            "header: it is truncated or corrupted"
        )
    check_declared_bytes(path.name, nx * ny * nz * itemsize, size - 1024 - next_bytes)


#: Seconds the separate process that walks an HDF5 file's metadata may take (see precheck_hdf5).
HDF5_CHECK_TIMEOUT_S = 20.0
#: Datasets up to this many bytes are read whole by that walk (vlen data live in the global heap).
_HDF5_SMALL_BYTES = 2**20

# Run in a separate Python process: a corrupted HDF5 global heap can make the HDF5 library loop
# for ever inside C code (no Python signal or exception can stop it) or crash the interpreter.
_HDF5_WALK = r"""
import json, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except Exception:
    pass
import h5py

path, small = sys.argv[1], int(sys.argv[2])
datasets = []

def read_attrs(obj):
    for key in obj.attrs.keys():
        obj.attrs[key]

def visit(name, obj):
    read_attrs(obj)
    if isinstance(obj, h5py.Dataset) and obj.shape is not None:
        shape = [int(s) for s in obj.shape]
        datasets.append([name, shape, int(obj.dtype.itemsize)])
        n = obj.dtype.itemsize
        for s in shape:
            n *= s
        if n <= small:
            obj[()]
        elif all(shape):
            if obj.chunks:
                obj.id.get_num_chunks()  # walks the whole chunk index
            obj[tuple(0 for _ in shape)]
            obj[tuple(s - 1 for s in shape)]

with h5py.File(path, "r") as h5:
    read_attrs(h5)
    names, attrs = list(h5.keys()), list(h5.attrs.keys())
    h5.visititems(visit)
print(json.dumps({"names": names, "attrs": attrs, "datasets": datasets}))
"""


def _bad_hdf5(path: Path, what: str) -> HrtemError:
    return HrtemError(
        f"{path.name} is not a readable HDF5/EMD file ({what}): it is truncated or corrupted; "
        "copy or export it again"
    )


def precheck_hdf5(path: Path) -> tuple[set[str], set[str]]:
    """Walk an HDF5 (EMD) file's metadata in a separate process, then check its dataset sizes.

    The walk reads every attribute and every small dataset, as the EMD readers do, so a file that
    makes the HDF5 library hang or crash is refused (after ``HDF5_CHECK_TIMEOUT_S``) instead of
    stopping this process. Datasets may not declare far more data than the file could hold.
    Returns the names of the root group's members and of its attributes.
    """
    import json
    import subprocess
    import sys

    size = path.stat().st_size
    try:
        done = subprocess.run(
            [sys.executable, "-c", _HDF5_WALK, str(path), str(_HDF5_SMALL_BYTES)],
            capture_output=True,
            text=True,
            timeout=HDF5_CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _bad_hdf5(path, f"reading its metadata did not finish in {HDF5_CHECK_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        if done.returncode < 0:
            raise _bad_hdf5(path, f"the HDF5 library crashed on it (signal {-done.returncode})")
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise _bad_hdf5(path, re.sub(r"\s+", " ", lines[-1])[:160] if lines else "unknown error")
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
        names, attrs, found = set(info["names"]), set(info["attrs"]), info["datasets"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _bad_hdf5(path, "its metadata could not be listed") from None
    for name, shape, itemsize in found:
        if len(shape) > 8:
            raise HrtemError(
                f"{path.name}: dataset '{name}' has {len(shape)} dimensions: the file is corrupted"
            )
        declared = math.prod(shape) * itemsize
        check_declared_bytes(f"{path.name} (dataset '{name}')", declared, size, compressed=True)
    return names, attrs
