"""Device profiles for the estimate target: ``devices/profiles/*.toml``, read with ``tomllib``.

A profile holds a clock, cycles per MAC per operator and dtype, cycles per element for cheap
operators and for each DECODE type, a memory bandwidth, and energy constants; every number has a
source cited in the file (``[sources]``). A profile may name a ``base`` profile whose values it
overrides, so a faster clock of the same core is one line. Users add their own profile by
passing a path to a ``.toml`` file instead of a name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices import DeviceError
from edge_lottery.errors import expected

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class DeviceProfile:
    """Constants of one device for the analytical latency and energy model."""

    name: str
    description: str
    core: str
    clock_mhz: float
    cycles_per_mac: Mapping[str, Mapping[str, float]]
    cycles_per_element: Mapping[str, float]
    decode_cycles_per_element: Mapping[str, float]
    op_overhead_cycles: float
    memory_bandwidth_mb_s: float
    energy: Mapping[str, Any]
    sources: Mapping[str, str]
    path: str = ""
    calibration: str = field(default="uncalibrated prior")

    def cpm(self, op: str, dtype: str) -> float:
        table = self.cycles_per_mac.get(dtype) or self.cycles_per_mac.get("default") or {}
        value = table.get(op, table.get("default"))
        if value is None:
            raise DeviceError(expected(f"profile {self.name} cycles_per_mac", f"an entry for {dtype}", op))
        return float(value)

    def with_clock(self, clock_mhz: float) -> DeviceProfile:
        import dataclasses

        if not clock_mhz > 0:
            raise DeviceError(expected("clock", "a positive MHz value", clock_mhz))
        return dataclasses.replace(self, clock_mhz=float(clock_mhz), name=f"{self.name}@{clock_mhz:g}MHz")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "core": self.core, "clock_mhz": self.clock_mhz, "path": self.path,
                "memory_bandwidth_mb_s": self.memory_bandwidth_mb_s, "calibration": self.calibration}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _load_raw(source: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DeviceError(f"profile {source}: not valid TOML ({exc})") from None
    base = raw.pop("base", None)
    if base:
        if base in seen:
            raise DeviceError(f"profile {source}: circular base {base!r}")
        raw = _merge(_load_raw(_resolve(base), (*seen, base)), raw)
    return raw


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise DeviceError(expected("profile file", "an existing .toml file", name_or_path))
        return candidate
    path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise DeviceError(expected("estimate profile", ", ".join(list_profiles()) + " or a .toml path", name_or_path))
    return path


def load_profile(name_or_path: str) -> DeviceProfile:
    """A bundled profile by name (``cortex-m4-80mhz``) or a user's ``.toml`` by path."""
    path = _resolve(name_or_path)
    raw = _load_raw(path)
    required = ("clock_mhz", "cycles_per_mac", "memory_bandwidth_mb_s", "energy", "sources")
    missing = [k for k in required if k not in raw]
    if missing:
        raise DeviceError(expected(f"profile {path}", f"keys {list(required)}", f"missing {missing}"))
    return DeviceProfile(
        name=raw.get("name", path.stem),
        description=raw.get("description", ""),
        core=raw.get("core", ""),
        clock_mhz=float(raw["clock_mhz"]),
        cycles_per_mac={k: dict(v) for k, v in raw["cycles_per_mac"].items()},
        cycles_per_element=dict(raw.get("cycles_per_element", {"default": 1.0})),
        decode_cycles_per_element=dict(raw.get("decode_cycles_per_element", {"default": 4.0})),
        op_overhead_cycles=float(raw.get("op_overhead_cycles", 0.0)),
        memory_bandwidth_mb_s=float(raw["memory_bandwidth_mb_s"]),
        energy=dict(raw["energy"]),
        sources=dict(raw["sources"]),
        path=str(path),
        calibration=raw.get("calibration", "uncalibrated prior"),
    )


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


__all__ = ["DeviceProfile", "PROFILE_DIR", "list_profiles", "load_profile"]
