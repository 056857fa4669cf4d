"""adb access through ``adbutils`` (a pure-Python client of the adb server's smart-socket protocol).

Every failure a user can fix (no server, no device, several devices, offline, unauthorised,
a binary for the wrong ABI) becomes one :class:`~devices.DeviceError` line with the next step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices import DeviceError

__all__ = ["connect", "select_device", "ShellResult", "shell", "push", "pull", "REMOTE_DIR"]

REMOTE_DIR = "/data/local/tmp/edge_lottery"


def _adbutils() -> Any:
    try:
        import adbutils
    except ImportError:
        raise DeviceError("the android target needs adbutils: pip install 'edge-lottery[android]'") from None
    return adbutils


def connect(host: str | None = None, port: int | None = None) -> Any:
    """An ``AdbClient`` for the server at host:port (default ``$ANDROID_ADB_SERVER_PORT`` or 5037)."""
    adbutils = _adbutils()
    host = host or os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    port = int(port or os.environ.get("ANDROID_ADB_SERVER_PORT", 5037))
    client = adbutils.AdbClient(host=host, port=port, socket_timeout=30)
    try:
        client.server_version()
    except Exception as exc:  # AdbConnectionError, AdbTimeout, OSError
        raise DeviceError(f"no adb server at {host}:{port} ({exc}); start one with `adb start-server` "
                          f"(or set ANDROID_ADB_SERVER_PORT)") from None
    return client


def select_device(client: Any, serial: str | None) -> Any:
    """The one ready device (or ``serial``); DeviceError for none, several, offline, unauthorized."""
    try:
        infos = client.list(extended=False)
    except Exception as exc:
        raise DeviceError(f"adb server did not list devices ({exc}); restart it with `adb kill-server`") from None
    states = {i.serial: i.state for i in infos}
    if serial is None:
        if not infos:
            raise DeviceError("no Android device attached (adb lists none); plug in a phone with USB debugging "
                              "enabled, or `adb connect HOST:PORT` for adb over Wi-Fi")
        ready = [s for s, st in states.items() if st == "device"]
        if len(ready) > 1:
            raise DeviceError(f"{len(ready)} Android devices attached ({', '.join(sorted(ready))}); choose one with "
                              f"--target android:SERIAL")
        if not ready:
            serial = next(iter(states))
        else:
            serial = ready[0]
    state = states.get(serial)
    if state is None:
        listed = ", ".join(f"{s} ({st})" for s, st in states.items()) or "none"
        raise DeviceError(f"Android device {serial!r} is not attached (adb lists: {listed}); check the serial "
                          f"with `adb devices`")
    if state == "unauthorized":
        raise DeviceError(f"Android device {serial} is unauthorized; unlock it and accept the 'Allow USB "
                          f"debugging' prompt, then retry")
    if state == "offline":
        raise DeviceError(f"Android device {serial} is offline; replug the cable or run `adb reconnect`, then retry")
    if state != "device":
        raise DeviceError(f"Android device {serial} is in state {state!r}, expected 'device'; boot it to Android "
                          f"with USB debugging enabled")
    return client.device(serial=serial)


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    output: str


def shell(device: Any, command: str, timeout: float = 120.0) -> ShellResult:
    """Run ``command`` and return its exit code (shell protocol v2 when the device has it)."""
    try:
        r = device.shell2(command, timeout=timeout, v2=True)
    except Exception as exc:  # AdbTimeout, AdbError, socket errors
        raise DeviceError(f"adb shell on {device.serial} failed ({type(exc).__name__}: {exc}); check the "
                          f"cable, or raise --timeout") from None
    return ShellResult(int(r.returncode), r.output)


def push(device: Any, local: str | Path | bytes, remote: str, mode: int = 0o644) -> None:
    try:
        device.sync.push(local if isinstance(local, bytes) else Path(local), remote, mode=mode)
    except Exception as exc:
        raise DeviceError(f"adb push to {device.serial}:{remote} failed ({exc}); check free space and that "
                          f"/data/local/tmp is writable") from None


def pull(device: Any, remote: str) -> bytes:
    try:
        return device.sync.read_bytes(remote)
    except Exception as exc:
        raise DeviceError(f"adb pull of {device.serial}:{remote} failed ({exc})") from None
