"""Nordic Power Profiler Kit II over its USB CDC serial wire format.

Why not ``ppk2-api``: its ``get_samples`` returns currents only (the logic port, which carries the
DUT's timestamp pin, is dropped) and applies a stateful spike filter. The wire format is small,
so it is spoken here directly with pyserial, following ``ppk2-api`` and Nordic's desktop app:

- one-byte opcodes (+ arguments): ``0x19`` get metadata (a text block of ``key: value`` lines
  ending in ``END``), ``0x11 0x02`` source-meter mode, ``0x0D b1 b2`` source voltage,
  ``0x0C 0x01`` DUT power on, ``0x06`` start and ``0x07`` stop continuous sampling;
- 100 kS/s little-endian 32-bit words: bits 0-13 ADC value, bits 14-16 measurement range
  (shunt R0..R4), bits 24-31 the logic port D0..D7;
- current (A) = ``UG[r] * (x * (GS[r] * x + GI[r]) + S[r] * Vdd + I[r])`` with
  ``x = (4 * adc - O[r]) * (1.8 / 163840) / R[r]`` using the calibration from the metadata.

Edges: the DUT's open-drain timestamp pin, wired to logic input ``D<pin>``, falls at each
``th_timestamp()``; falling edges of that bit are the timestamps.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from devices import DeviceError
from devices.instruments.base import PowerTrace, edges_from_logic

__all__ = ["Ppk2", "Modifiers", "parse_metadata", "decode_words", "voltage_command"]

SAMPLE_RATE = 100_000
ADC_MULT = 1.8 / 163840
GET_META_DATA, AVERAGE_START, AVERAGE_STOP = 0x19, 0x06, 0x07
SET_POWER_MODE, REGULATOR_SET, DEVICE_RUNNING_SET = 0x11, 0x0D, 0x0C

DEFAULT_MODIFIERS = {
    "R": [1031.64, 101.65, 10.15, 0.94, 0.043],
    "GS": [1.0] * 5, "GI": [1.0] * 5, "O": [0.0] * 5, "S": [0.0] * 5, "I": [0.0] * 5, "UG": [1.0] * 5,
}
Modifiers = dict


def parse_metadata(text: str) -> Modifiers:
    """Calibration from the metadata block (``R0: 1031.64`` ... ``END``); unknown keys are ignored."""
    if "END" not in text:
        raise DeviceError("PPK2 metadata is incomplete (no END marker); replug the PPK2 and retry")
    mods = {k: list(v) for k, v in DEFAULT_MODIFIERS.items()}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or len(key) < 2 or not key[-1].isdigit():
            continue
        name, idx = key[:-1], int(key[-1])
        if name in mods and idx < 5:
            try:
                v = float(value)
            except ValueError:
                continue
            if name == "R" and v == 0:
                continue  # some PPK2s report 0: keep the nominal shunt
            mods[name][idx] = v
    return mods


def decode_words(data: bytes, mods: Modifiers, vdd_mv: float) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(current A, logic byte per sample, leftover bytes) of a chunk of sample words."""
    n = len(data) // 4
    words = np.frombuffer(data[: n * 4], dtype="<u4").astype(np.int64)
    adc = (words & 0x3FFF) * 4
    rng = np.minimum((words >> 14) & 0x7, 4)
    logic = ((words >> 24) & 0xFF).astype(np.uint8)
    p = {k: np.asarray(v, dtype=np.float64)[rng] for k, v in mods.items()}
    x = (adc - p["O"]) * (ADC_MULT / p["R"])
    current = p["UG"] * (x * (p["GS"] * x + p["GI"]) + (p["S"] * (vdd_mv / 1000.0) + p["I"]))
    return current, logic, data[n * 4:]


def voltage_command(mv: int) -> bytes:
    """``REGULATOR_SET`` for ``mv`` (800-5000): base [3, 32] at 800 mV, +1 per mV."""
    if not 800 <= mv <= 5000:
        raise DeviceError(f"PPK2 source voltage: expected 800..5000 mV, received {mv}")
    diff = mv - 800 + 32
    return bytes([REGULATOR_SET, 3 + diff // 256, diff % 256])


class Ppk2:
    """A PPK2 in source-meter mode powering the DUT at ``voltage_mv``; edges on logic ``D<pin>``."""

    def __init__(self, port: str, *, voltage_mv: int = 1800, pin: int = 0, timeout_s: float = 3.0):
        if not 0 <= pin <= 7:
            raise DeviceError(f"PPK2 logic pin: expected 0..7, received {pin}")
        from devices.protocol.eembc import open_stream

        self.port = port
        self.name = f"ppk2:{port}"
        self.voltage_mv = voltage_mv
        self.pin = pin
        self.stream = open_stream(port, 115200, what="PPK2 power profiler")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._chunks: list[bytes] = []
        self.modifiers = self._metadata(timeout_s)
        self.stream.write(bytes([SET_POWER_MODE, 0x02]))
        self.stream.write(voltage_command(voltage_mv))
        self.stream.write(bytes([DEVICE_RUNNING_SET, 0x01]))

    def _metadata(self, timeout_s: float) -> Modifiers:
        self.stream.write(bytes([GET_META_DATA]))
        buf = b""
        end = time.monotonic() + timeout_s
        while b"END" not in buf and time.monotonic() < end:
            buf += self.stream.read(max(1, self.stream.in_waiting))
        if b"END" not in buf:
            self.stream.close()
            raise DeviceError(f"{self.port} did not answer the PPK2 metadata request within {timeout_s:g} s; "
                              f"is it a PPK2 (not its second, debug, port)?")
        return parse_metadata(buf.decode("ascii", "replace"))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.stream.read(max(1, self.stream.in_waiting))
            except Exception:  # noqa: BLE001 - unplugged: stop() reports what was collected
                return
            if data:
                self._chunks.append(data)

    def start(self) -> None:
        self._chunks = []
        self._stop.clear()
        self.stream.write(bytes([AVERAGE_START]))
        self._thread = threading.Thread(target=self._loop, daemon=True, name="ppk2-reader")
        self._thread.start()

    def stop(self) -> PowerTrace:
        if self._thread is None:
            raise DeviceError("PPK2: stop() without start()")
        self.stream.write(bytes([AVERAGE_STOP]))
        time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._thread = None
        return self.trace_from_bytes(b"".join(self._chunks))

    def trace_from_bytes(self, data: bytes) -> PowerTrace:
        current, logic, rest = decode_words(data, self.modifiers, self.voltage_mv)
        dt = 1.0 / SAMPLE_RATE
        return PowerTrace.from_current(current, self.voltage_mv / 1000.0, dt,
                                       edges=edges_from_logic(logic, self.pin, dt), source=self.name,
                                       meta={"trailing_bytes": len(rest), "samples": len(current)})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        try:
            self.stream.write(bytes([AVERAGE_STOP]))
            self.stream.close()
        except Exception:  # noqa: BLE001
            pass
