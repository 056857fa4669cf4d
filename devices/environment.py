"""What machine and software produced a result: recorded in every :class:`BenchRecord`.

Everything is read from the standard library, ``/proc`` and installed package metadata; a value
that cannot be read is left out rather than guessed.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions matter for a benchmark figure.
PACKAGES = ("edge-lottery", "ai-edge-litert", "tflite-micro", "tensorflow", "tflite-runtime", "numpy")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_governor() -> str | None:
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def _host_environment() -> tuple[tuple[str, Any], ...]:
    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
    }
    try:
        env["cores_available"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    governor = cpu_governor()
    if governor:
        env["governor"] = governor
    return tuple(env.items())


def host_environment(**device: Any) -> dict[str, Any]:
    """The host's identity and versions; ``device`` adds the target's identity (``device={...}``)."""
    env = {k: (dict(v) if isinstance(v, dict) else v) for k, v in _host_environment()}
    env.update({k: v for k, v in device.items() if v is not None})
    return env


__all__ = ["PACKAGES", "cpu_governor", "cpu_model", "host_environment", "package_versions"]
