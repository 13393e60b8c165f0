"""Model files: safetensors weights plus JSON metadata. Never pickles.

A model file is a safetensors file whose string metadata is::

    {"format": "hrtem3d-model", "format_version": "1", "hrtem3d": json.dumps(full_metadata)}

``full_metadata`` holds ``unet`` (the `UNetConfig` as a dict), ``package_version`` and
whatever the caller passed (class scheme, pixel size, envelope, training configuration,
calibration temperature...). The tensors are the network's ``state_dict`` (BatchNorm
running statistics included), contiguous and on CPU.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import struct
import tempfile
from pathlib import Path

import torch

from hrtem3d.errors import HrtemError
from hrtem3d.model.unet import UNet, UNetConfig, pick_device

FORMAT = "hrtem3d-model"
FORMAT_VERSION = 1
#: Metadata that `hrtem3d calibrate` fits for one network's weights (thresholds, confidence map, and each
#: lattice reading's own): a file whose weights change (a checkpoint snapshot, a soup) must drop them.
CALIBRATION_KEYS = ("column_calibration", "detection_threshold", "calibration_by_lattice")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def save_model(path: str | os.PathLike, model: UNet, metadata: dict | None = None) -> None:
    """Write ``model`` and ``metadata`` to ``path`` (``*.safetensors``).

    The file is written to a temporary name in the same folder and renamed into place,
    so a file with the final name is always complete. ``metadata`` must be
    JSON-serialisable; its ``unet`` and ``package_version`` keys are set here.
    """
    from safetensors.torch import save_file

    from hrtem3d._version import __version__

    path = Path(path)
    full = dict(metadata or {})
    full["unet"] = model.config.to_dict()
    full["package_version"] = __version__
    try:
        meta_json = json.dumps(full, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise HrtemError(
            f"model metadata is not JSON-serialisable ({e}); pass plain dicts, lists, numbers and strings"
        ) from e
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    file_meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "hrtem3d": meta_json}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=file_meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_header(path: Path) -> dict:
    """The safetensors JSON header of ``path``, after checking the file is complete."""
    if not path.is_file():
        raise HrtemError(f"model file not found: {path}; give the path of an existing .safetensors model")
    size = path.stat().st_size
    bad = f"{path} is not a valid safetensors model file (corrupted, truncated or another format); "
    bad += "re-download or re-train it"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HrtemError(bad)
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            raise HrtemError(bad)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HrtemError(bad) from e
    if not isinstance(header, dict):
        raise HrtemError(bad)
    end = 0
    try:
        for name, info in header.items():
            if name != "__metadata__":
                end = max(end, int(info["data_offsets"][1]))
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise HrtemError(bad) from e
    if 8 + n + end != size:
        raise HrtemError(bad)
    return header


def _metadata_from_header(path: Path, header: dict) -> dict:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "hrtem3d" not in meta:
        raise HrtemError(
            f"{path} is a safetensors file but not an hrtem3d model (no hrtem3d metadata); "
            "use a model written by `hrtem3d train`"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError as e:
        raise HrtemError(f"{path}: unreadable model format_version {meta.get('format_version')!r}") from e
    if version > FORMAT_VERSION:
        raise HrtemError(
            f"{path} uses model format {version}, newer than this hrtem3d reads ({FORMAT_VERSION}); upgrade hrtem3d"
        )
    try:
        full = json.loads(meta["hrtem3d"])
    except json.JSONDecodeError as e:
        raise HrtemError(f"{path}: hrtem3d metadata is not valid JSON; re-train or re-save the model") from e
    if not isinstance(full, dict) or not isinstance(full.get("unet"), dict):
        raise HrtemError(f"{path}: hrtem3d metadata lacks the network configuration; re-save the model")
    return full


def read_metadata(path: str | os.PathLike) -> dict:
    """The full hrtem3d metadata of a model file, without building the network."""
    path = Path(path)
    return _metadata_from_header(path, _read_header(path))


def _mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """Short description of how two state dicts differ ('' when they match)."""
    parts = []
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(expected[k].shape) != tuple(got[k].shape)]

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    if missing:
        parts.append(f"missing {show(missing)}")
    if extra:
        parts.append(f"unexpected {show(extra)}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k} {list(got[k].shape)} vs {list(expected[k].shape)}")
    return "; ".join(parts)


def load_model(path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[UNet, dict]:
    """Rebuild the network stored in ``path``: returns ``(model in eval mode on device, metadata)``.

    Raises HrtemError for a missing, corrupted or truncated file, a safetensors file
    without hrtem3d metadata, a newer format, or weights that do not fit the stored
    configuration.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    full = read_metadata(path)
    try:
        config = UNetConfig.from_dict(full["unet"])
    except (TypeError, ValueError) as e:
        raise HrtemError(f"{path}: invalid network configuration in metadata ({e}); re-save the model") from e
    model = UNet(config)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise HrtemError(f"{path} could not be read as safetensors ({e}); re-download or re-train it") from e
    diff = _mismatch(model.state_dict(), state)
    if diff:
        raise HrtemError(f"{path}: weights do not match the stored network configuration ({diff}); re-save the model")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        msg = str(e).splitlines()[0]
        raise HrtemError(f"{path}: weights do not fit the network ({msg}); re-save the model") from e
    model.eval()
    model.to(pick_device(device))
    return model, full


def default_model_path() -> Path:
    """Where the shipped default model lives: ``hrtem3d/weights/default.safetensors``."""
    return Path(str(importlib.resources.files("hrtem3d") / "weights" / "default.safetensors"))


def load_default_model(device: str | torch.device | None = None) -> tuple[UNet, dict]:
    """`load_model` on the shipped default; HrtemError if none is shipped yet."""
    path = default_model_path()
    if not path.is_file():
        raise HrtemError(
            f"no default model is installed ({path} is missing); give a `model` file (*.safetensors, "
            "as `train` writes it)",
            param="model",
        )
    return load_model(path, device)
