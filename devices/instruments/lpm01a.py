"""ST X-NUCLEO-LPM01A (PowerShield) over its serial ASCII protocol.

No vendor Python package exists; the protocol (UM2269, and the MLCommons runner's
``power_manager_lpm.py``) is small text: commands end in a newline, replies are
``PowerShield > ack <cmd>`` or ``error <cmd>`` + ``Error detail: ...``; after ``start`` the board
streams one sample per line as ``dddd±ee`` (mantissa times a power of ten: joules per period with
``output energy``, amperes with ``output current``), ``event N ris`` for each edge on D7 and
``TimeStamp: ...`` status lines; ``stop`` ends with ``Acquisition completed``. Edges are timed by
the number of samples received before them, as the runner does.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from devices import DeviceError
from devices.instruments.base import PowerTrace

__all__ = ["Lpm01aParser", "Lpm01a", "parse_value"]

PROMPT = "PowerShield > "
BAUD = 3686400
_VALUE = re.compile(r"(\d{4})([-+])(\d{2})")
_EVENT = re.compile(r"event (\d+) ris")
_FREQS = {"100k": 1e5, "50k": 5e4, "20k": 2e4, "10k": 1e4, "5k": 5e3, "2k": 2e3, "1k": 1e3, "500": 500.0,
          "200": 200.0, "100": 100.0, "50": 50.0, "20": 20.0, "10": 10.0, "5": 5.0, "2": 2.0, "1": 1.0}


def parse_value(token: str) -> float:
    """``6409-07`` -> 6409e-7."""
    m = _VALUE.fullmatch(token)
    if not m:
        raise ValueError(f"not an LPM01A ascii_dec value: {token!r}")
    return int(m.group(1)) * 10.0 ** (int(m.group(3)) * (-1 if m.group(2) == "-" else 1))


@dataclass
class Lpm01aParser:
    """Incremental parser of the LPM01A byte stream (robust to any chunking)."""

    values: list = field(default_factory=list)
    events: list = field(default_factory=list)  # (event number, sample index)
    messages: list = field(default_factory=list)
    status: list = field(default_factory=list)
    corrupted: int = 0
    _buf: bytes = b""

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > 4096:  # no newline in 4 KB: noise, drop it
                    self._buf = b""
                    self.corrupted += 1
                return
            raw = self._buf[:idx].decode("ascii", "replace").replace(PROMPT, "").strip()
            self._buf = self._buf[idx + 1:]
            if raw:
                self._line(raw)

    def _line(self, line: str) -> None:
        if line.startswith("TimeStamp"):
            self.status.append(line)
            return
        m = _EVENT.fullmatch(line)
        if m:
            self.events.append((int(m.group(1)), len(self.values)))
            return
        if _VALUE.match(line):
            tokens = line.split()
            for tok in tokens:
                try:
                    self.values.append(parse_value(tok))
                except ValueError:
                    # A damaged sample still took one period: keep the count, mark it.
                    self.values.append(math.nan)
                    self.corrupted += 1
            return
        self.messages.append(line)

    def take_messages(self) -> list[str]:
        out, self.messages = self.messages, []
        return out


def _fill_nan(values: np.ndarray) -> np.ndarray:
    """Replace damaged samples by the mean of their neighbours (they cover real time)."""
    v = values.copy()
    bad = np.isnan(v)
    if bad.any() and (~bad).any():
        idx = np.arange(len(v))
        v[bad] = np.interp(idx[bad], idx[~bad], v[~bad])
    elif bad.all():
        v[:] = 0.0
    return v


class Lpm01a:
    """An LPM01A on ``port`` (device path or pyserial URL), configured like the MLCommons runner."""

    def __init__(self, port: str, *, voltage_mv: int = 1800, freq: str = "1k", output: str = "energy",
                 baudrate: int = BAUD, timeout_s: float = 3.0):
        if freq not in _FREQS:
            raise DeviceError(f"LPM01A freq: expected one of {', '.join(_FREQS)}, received {freq!r}")
        if output not in ("energy", "current"):
            raise DeviceError(f"LPM01A output: expected energy or current, received {output!r}")
        if output == "energy" and _FREQS[freq] > 1e4:
            raise DeviceError(f"LPM01A: 'output energy' in ascii_dec is limited to 10k samples/s, received {freq}")
        if not 1800 <= voltage_mv <= 3300:
            raise DeviceError(f"LPM01A voltage: expected 1800..3300 mV, received {voltage_mv}")
        from devices.protocol.eembc import open_stream

        self.port = port
        self.name = f"lpm01a:{port}"
        self.voltage_mv = voltage_mv
        self.freq = freq
        self.output = output
        self.timeout_s = timeout_s
        self.stream = open_stream(port, baudrate, what="LPM01A power monitor")
        self.parser = Lpm01aParser()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._configured = False

    def _read_some(self) -> None:
        try:
            data = self.stream.read(max(1, self.stream.in_waiting))
        except Exception as exc:
            raise DeviceError(f"reading the LPM01A on {self.port} failed: {exc}; check its USB cable") from exc
        if data:
            with self._lock:
                self.parser.feed(data)

    def _wait_message(self, predicate, what: str) -> str:
        end = time.monotonic() + self.timeout_s
        while time.monotonic() < end:
            with self._lock:
                msgs = self.parser.take_messages()
            for i, m in enumerate(msgs):
                if m.startswith("error") or m.startswith("Error detail"):
                    raise DeviceError(f"the LPM01A on {self.port} rejected {what}: {' '.join(msgs[i:])}")
                if predicate(m):
                    return m
            if self._reader is None:
                self._read_some()
            else:
                time.sleep(0.01)
        raise DeviceError(f"the LPM01A on {self.port} did not answer {what} within {self.timeout_s:g} s; "
                          f"check the port (it enumerates as an ST-Link VCP) and that it is in host-control mode")

    def send(self, command: str) -> None:
        self.stream.write((command + "\n").encode("ascii"))
        self._wait_message(lambda m: m.startswith("ack") and command.split()[0] in m, repr(command))

    def configure(self) -> None:
        for cmd in ("htc", "pwr off", "acqtime inf", "trigdelay 0", "trigsrc sw", "eventsrc d7 fal",
                    f"output {self.output}", "format ascii_dec", f"freq {self.freq}",
                    f"volt {self.voltage_mv}m", "pwr on"):
            self.send(cmd)
        self._configured = True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_some()
            except DeviceError:
                return

    def start(self) -> None:
        if not self._configured:
            self.configure()
        with self._lock:
            self.parser = Lpm01aParser()
        self.send("start")
        self._stop.clear()
        self._reader = threading.Thread(target=self._loop, daemon=True, name="lpm01a-reader")
        self._reader.start()

    def stop(self) -> PowerTrace:
        if self._reader is None:
            raise DeviceError("LPM01A: stop() without start()")
        self.stream.write(b"stop\n")
        self._wait_message(lambda m: "Acquisition completed" in m, "'stop'")
        self._stop.set()
        self._reader.join(timeout=2.0)
        self._reader = None
        with self._lock:
            parser = self.parser
        return self.trace_from(parser)

    def trace_from(self, parser: Lpm01aParser) -> PowerTrace:
        dt = 1.0 / _FREQS[self.freq]
        values = _fill_nan(np.asarray(parser.values, dtype=np.float64))
        edges = tuple(idx * dt for _, idx in parser.events)
        meta = {"corrupted_samples": parser.corrupted, "events": len(parser.events)}
        if self.output == "energy":
            return PowerTrace.from_energy(values, dt, edges=edges, voltage_v=self.voltage_mv / 1000,
                                          source=self.name, meta=meta)
        return PowerTrace.from_current(values, self.voltage_mv / 1000, dt, edges=edges, source=self.name, meta=meta)

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
