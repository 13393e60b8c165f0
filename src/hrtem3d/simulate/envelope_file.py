"""The microscope envelope as a TOML file: what `hrtem3d simulate --envelope scope.toml` reads.

Two tables: `[optics]` (`OpticsEnvelope`: lens, dose, detector; `voltage_kV` for the beam energy) and
`[scope]` (`ScopeEnvelope`: camera pixel size, calibration error, support film, residual aberrations,
vibration, background, MTF). Ranges are `[min, max]`; a key left out keeps its default. The default,
shipped with hrtem3d, is `default_envelope.toml` beside this module (`default_envelope_path()`).

Example:
    >>> env = load_envelope(default_envelope_path())
    >>> env.optics.energy_eV, env.scope.pixel_size_A
    (300000.0, (0.045, 0.16))
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import tomllib

from hrtem3d.errors import HrtemError
from hrtem3d.simulate.optics import OpticsEnvelope
from hrtem3d.simulate.scope import ScopeEnvelope


def default_envelope_path() -> Path:
    """The envelope file shipped with hrtem3d (the shipped model's training envelope)."""
    return Path(__file__).with_name("default_envelope.toml")


@dataclass
class Envelope:
    """A microscope envelope: optics and dose ranges, and what the microscope adds."""

    optics: OpticsEnvelope
    scope: ScopeEnvelope
    source: str = ""

    def to_dict(self) -> dict:
        return {"optics": self.optics.to_dict(), "scope": self.scope.to_dict(), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> Envelope:
        return cls(_build(OpticsEnvelope, d["optics"], "optics", ""), _build(ScopeEnvelope, d["scope"], "scope", ""),
                   d.get("source", ""))


def load_envelope(path: str | Path) -> Envelope:
    """Read and validate an envelope TOML file; a bad key or value is a one-line `HrtemError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HrtemError(f"{path} does not exist: give an envelope TOML file "
                         f"(start from {default_envelope_path()})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HrtemError(f"{path.name} is not valid TOML ({e}); fix the file") from None
    unknown = sorted(set(data) - {"optics", "scope"})
    if unknown:
        raise HrtemError(f"{path.name}: unknown table [{unknown[0]}]; use [optics] and [scope]")
    optics = dict(data.get("optics", {}))
    if "voltage_kV" in optics:
        kv = optics.pop("voltage_kV")
        if not isinstance(kv, int | float) or not 20 <= kv <= 1000:
            raise HrtemError(f"{path.name}: optics.voltage_kV must be a number in 20..1000, got {kv!r}")
        optics["energy_eV"] = float(kv) * 1e3
    env = Envelope(_build(OpticsEnvelope, optics, "optics", path.name),
                   _build(ScopeEnvelope, dict(data.get("scope", {})), "scope", path.name), str(path))
    return env


def _build(cls, values: dict, table: str, name: str):
    """`cls(**values)` with every key and value checked; ranges become tuples."""
    where = f"{name}: " if name else ""
    known = {f.name: f for f in fields(cls)}
    if table == "optics":
        known.pop("energy_eV")
    kwargs = {}
    for key, v in values.items():
        if key == "energy_eV" and table == "optics":
            kwargs[key] = float(v)
            continue
        if key not in known:
            extra = ", voltage_kV" if table == "optics" else ""
            raise HrtemError(f"{where}unknown key {table}.{key}; known: {', '.join(known)}{extra}")
        default = getattr(cls(), key)
        if isinstance(default, tuple):
            if (not isinstance(v, list | tuple) or len(v) != 2
                    or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
                raise HrtemError(f"{where}{table}.{key} must be a range [min, max] of two numbers, got {v!r}")
            kwargs[key] = tuple(type(default[0])(x) for x in v)
        else:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise HrtemError(f"{where}{table}.{key} must be a number, got {v!r}")
            kwargs[key] = float(v)
    obj = cls(**kwargs)
    try:
        obj.validate()
    except ValueError as e:
        raise HrtemError(f"{where}impossible [{table}] envelope: {e}; fix the file") from None
    return obj


def envelope_of(settings: dict) -> Envelope | None:
    """The envelope a dataset store was simulated for (its settings' "envelope"), or None."""
    d = settings.get("envelope")
    return Envelope.from_dict(d) if d else None
