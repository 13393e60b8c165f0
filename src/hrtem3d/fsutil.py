"""Small file helpers: write to a temporary name, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and rename the result to `path` only if it succeeded.

    The temporary file sits in the same folder and keeps the suffix (so writers that
    look at the extension work). Nothing with the final name exists until the end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files owner-only; give the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_fingerprint(path: str | Path, block: int = 1 << 16) -> str:
    """A cheap identity of a file's content: SHA-256 of its size, first and last `block` bytes (16 hex digits).

    Reads at most 2 x `block` bytes whatever the file's size. A model file's first bytes hold its
    metadata (training, calibration) and its last bytes weights, so another model differs.
    """
    import hashlib

    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(block))
        if size > block:
            f.seek(max(block, size - block))
            h.update(f.read(block))
    return h.hexdigest()[:16]


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure atomically."""
    return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi))
