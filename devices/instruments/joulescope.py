"""Joulescope JS110 / JS220: live capture through the vendor's ``joulescope`` package (optional),
and replay of recorded JLS v2 files through ``pyjls`` (optional).

Edges come from GPI0, where the DUT's timestamp pin is wired; like the MLCommons runner
(``trigger_source=gpi0``), the rising edge (the end of the DUT's low pulse) is the timestamp.
The vendor packages are imported only when used, with a one-line error naming the pip package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devices import DeviceError
from devices.instruments.base import PowerTrace, edges_from_logic

__all__ = ["Joulescope", "trace_from_arrays", "trace_from_jls"]


def trace_from_arrays(current_a: np.ndarray, voltage_v: np.ndarray | float, gpi0: np.ndarray, fs: float, *,
                      source: str = "joulescope") -> PowerTrace:
    """A trace from per-sample current, voltage and GPI0 bits (0/1) sampled at ``fs``."""
    dt = 1.0 / fs
    current = np.nan_to_num(np.asarray(current_a, dtype=np.float64))  # NaN = dropped USB sample
    edges = edges_from_logic(np.asarray(gpi0, dtype=np.uint8), 0, dt, falling=False)
    return PowerTrace.from_current(current, voltage_v, dt, edges=edges, source=source)


def trace_from_jls(path: str | Path, *, current: str = "current", voltage: str = "voltage",
                   gpi: str = "gpi[0]") -> PowerTrace:
    """Replay a JLS v2 recording (Joulescope UI or ``pyjls.Writer``)."""
    try:
        from pyjls import Reader
    except ImportError:
        raise DeviceError("reading .jls recordings needs pyjls: pip install pyjls") from None
    try:
        with Reader(str(path)) as r:
            by_name = {s.name: s for s in r.signals.values()}
            missing = [n for n in (current, voltage, gpi) if n not in by_name]
            if missing:
                raise DeviceError(f"{path}: JLS file has no signal(s) {missing}; it has {sorted(by_name)}")
            sig = {n: by_name[n] for n in (current, voltage, gpi)}
            data = {n: np.asarray(r.fsr(s.signal_id, 0, s.length)) for n, s in sig.items()}
            g = sig[gpi]
            if len(data[gpi]) * 8 >= g.length > len(data[gpi]):  # U1 signals come back bit-packed
                data[gpi] = np.unpackbits(data[gpi], bitorder="little")[: g.length]
            fs = float(sig[current].sample_rate)
    except RuntimeError as exc:
        raise DeviceError(f"cannot read JLS file {path}: {exc}") from None
    n = min(len(v) for v in data.values())
    return trace_from_arrays(data[current][:n], data[voltage][:n], data[gpi][:n], fs, source=f"jls:{Path(path).name}")


class Joulescope:
    """A live Joulescope (first found, or ``serial``), streaming into the driver's buffer.

    Configured like the MLCommons runner's JS220 manager (``source=raw``, ``sensor_power=on``,
    ``current_lsb=gpi0`` so GPI0 rides in the current's least significant bit); ``start`` notes
    the buffer's newest sample id and ``stop`` reads every sample since, so a window must fit the
    driver's ``buffer_duration`` (set to ``buffer_s``). Not exercised against hardware here.
    """

    def __init__(self, serial: str | None = None, *, sampling_hz: int = 100_000, buffer_s: int = 120):
        try:
            import joulescope
        except ImportError:
            raise DeviceError("the joulescope instrument needs the vendor package: pip install joulescope") from None
        self.name = f"joulescope:{serial}" if serial else "joulescope"
        self.fs = float(sampling_hz)
        devices = joulescope.scan(config="off")
        if serial:
            devices = [d for d in devices if serial in str(d)]
        if not devices:
            raise DeviceError("no Joulescope found over USB" + (f" with serial {serial}" if serial else "") +
                              "; plug it in (and check the udev rules on Linux)")
        self.device = devices[0]
        self.device.open()
        for key, value in (("source", "raw"), ("sensor_power", "on"), ("i_range", "auto"),
                           ("sampling_frequency", sampling_hz), ("buffer_duration", buffer_s),
                           ("current_lsb", "gpi0")):
            try:
                self.device.parameter_set(key, value)
            except Exception as exc:  # noqa: BLE001
                raise DeviceError(f"Joulescope rejected {key}={value}: {exc}; update the joulescope package") from None
        self.device.start()
        self._start_id: int | None = None

    def _newest(self) -> int:
        rng = self.device.stream_buffer.sample_id_range
        if rng is None:
            raise DeviceError("the Joulescope is not streaming; replug it and retry")
        return int(rng[1])

    def start(self) -> None:
        self._start_id = self._newest()

    def stop(self) -> PowerTrace:
        if self._start_id is None:
            raise DeviceError("Joulescope: stop() without start()")
        end = self._newest()
        try:
            d = self.device.stream_buffer.samples_get(self._start_id, end,
                                                      fields=["current", "voltage", "current_lsb"])
        except ValueError as exc:
            raise DeviceError(f"the Joulescope buffer no longer holds the window ({exc}); shorten the window "
                              f"or raise buffer_s") from None
        self._start_id = None
        sig = d["signals"]
        return trace_from_arrays(sig["current"]["value"], sig["voltage"]["value"], sig["current_lsb"]["value"],
                                 self.fs, source=self.name)

    def close(self) -> None:
        for step in (self.device.stop, self.device.close):
            try:
                step()
            except Exception:  # noqa: BLE001
                pass
