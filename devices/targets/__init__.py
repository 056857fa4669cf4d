"""Benchmark targets: a :class:`Target` protocol and a registry from a spec string to a target.

A spec is ``KIND`` or ``KIND:ARG`` (``host``, ``tflm``, ``serial:/dev/ttyACM0``,
``android:SERIAL``, ``estimate:cortex-m4-80mhz``). Each kind lives in its own module, imported only
when used so that ``host`` does not pay for pyserial or adb; every such module exposes
``make_target(arg: str | None) -> Target``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from devices import DeviceError
from edge_lottery.errors import expected

if TYPE_CHECKING:
    from devices.records import BenchRecord
    from devices.settings import BenchSettings

#: kind -> module defining ``make_target``.
TARGET_KINDS: dict[str, str] = {
    "host": "devices.targets.host",
    "tflm": "devices.targets.tflm",
    "serial": "devices.targets.serial",
    "android": "devices.targets.android",
    "estimate": "devices.targets.estimate",
}

#: How each kind is written on the command line (for help and error messages).
TARGET_USAGE: dict[str, str] = {
    "host": "host",
    "tflm": "tflm",
    "serial": "serial:PORT",
    "android": "android[:SERIAL]",
    "estimate": "estimate:PROFILE",
}


@runtime_checkable
class Target(Protocol):
    """Something that runs a .tflite model and returns one or more records."""

    name: str

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]: ...


def _valid() -> str:
    return ", ".join(TARGET_USAGE[k] for k in TARGET_KINDS)


def parse_target(spec: str) -> tuple[str, str | None]:
    """``"serial:/dev/ttyUSB0"`` -> ``("serial", "/dev/ttyUSB0")``; ``"android"`` -> ``("android", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise DeviceError(expected("target", _valid(), spec))
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in TARGET_KINDS:
        raise DeviceError(expected("target", _valid(), spec))
    if sep and not arg:
        raise DeviceError(expected(f"target {kind}", TARGET_USAGE[kind], spec))
    return kind, (arg if sep else None)


def get_target(spec: str) -> Target:
    """Build the target named by ``spec``; the kind's module is imported here, lazily."""
    kind, arg = parse_target(spec)
    module_name = TARGET_KINDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise DeviceError(f"target {kind!r} is not available in this installation "
                              f"(module {module_name} is missing)") from None
        raise DeviceError(f"target {kind!r} needs the Python package {exc.name!r}; "
                          f"install it (pip install {exc.name}) and retry") from None
    factory = getattr(module, "make_target", None)
    if factory is None:
        raise DeviceError(f"target {kind!r}: module {module_name} has no make_target(arg)")
    return factory(arg)


__all__ = ["TARGET_KINDS", "TARGET_USAGE", "Target", "get_target", "parse_target"]
