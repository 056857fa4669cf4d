"""Power rails on Android phones through Perfetto (ODPM on Pixel 6 and later).

The trace is a protobuf ``Trace``; only the few fields needed are decoded here with a
small wire-format reader, so no protobuf bindings are needed and ``perfetto``'s
``TraceProcessor`` (which downloads a binary at run time) is avoided:

- ``Trace.packet`` = 1; ``TracePacket.timestamp`` = 8, ``TracePacket.power_rails`` = 40;
- ``PowerRails.rail_descriptor`` = 1 (``index`` 1, ``rail_name`` 2, ``subsys_name`` 3,
  ``sampling_rate`` 4) and ``PowerRails.energy_data`` = 2 (``index`` 1, ``timestamp_ms`` 2
  since boot, ``energy`` 3 accumulated µWs).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["PERFETTO_CONFIG", "RailTrace", "parse_power_rails", "encode_power_rails", "TraceError"]

PERFETTO_CONFIG = """\
buffers { size_kb: 8192 fill_policy: RING_BUFFER }
data_sources {
  config {
    name: "android.power"
    android_power_config {
      battery_poll_ms: 250
      collect_power_rails: true
      battery_counters: BATTERY_COUNTER_CURRENT
    }
  }
}
duration_ms: 600000
"""


class TraceError(ValueError):
    """The bytes are not a well-formed Perfetto trace."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TraceError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TraceError("varint too long")


def _fields(buf: bytes):
    """Yield (field number, wire type, value) of a message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise TraceError("truncated length-delimited field")
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise TraceError(f"unsupported wire type {wt}")
        if pos > len(buf):
            raise TraceError("truncated fixed-width field")
        yield num, wt, v


@dataclass
class RailTrace:
    """Rail names and accumulated-energy samples ``(t_ms, energy_uws)`` per rail index."""

    names: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)

    def energy_between(self, t0_ms: float, t1_ms: float, rails: list[str] | None = None) -> float:
        """Energy (J) summed over rails between two boot-time instants, interpolating counters."""
        total = 0.0
        for idx, pts in self.samples.items():
            name = self.names.get(idx, str(idx))
            if rails is not None and name not in rails:
                continue
            pts = sorted(pts)
            if len(pts) < 2 or t1_ms < pts[0][0] or t0_ms > pts[-1][0]:
                continue
            total += (_interp(pts, t1_ms) - _interp(pts, t0_ms)) * 1e-6
        return total

    def coverage_ms(self) -> tuple[float, float] | None:
        ts = [t for pts in self.samples.values() for t, _ in pts]
        return (min(ts), max(ts)) if ts else None


def _interp(pts: list[tuple[float, float]], t: float) -> float:
    times = [p[0] for p in pts]
    i = bisect.bisect_left(times, t)
    if i <= 0:
        return pts[0][1]
    if i >= len(pts):
        return pts[-1][1]
    (ta, ea), (tb, eb) = pts[i - 1], pts[i]
    return ea + (eb - ea) * (t - ta) / (tb - ta) if tb > ta else eb


def parse_power_rails(trace: bytes) -> RailTrace:
    out = RailTrace()
    for num, wt, packet in _fields(trace):
        if num != 1 or wt != 2:
            continue
        for pnum, pwt, rails in _fields(packet):
            if pnum != 40 or pwt != 2:
                continue
            for rnum, rwt, sub in _fields(rails):
                if rwt != 2:
                    continue
                f = {n: v for n, _, v in _fields(sub)}
                if rnum == 1:
                    name = f.get(2, b"")
                    out.names[int(f.get(1, 0))] = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
                elif rnum == 2:
                    out.samples.setdefault(int(f.get(1, 0)), []).append((float(f.get(2, 0)), float(f.get(3, 0))))
    return out


def _key(num: int, wt: int) -> bytes:
    return _enc_varint(num << 3 | wt)


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _enc_varint(len(payload)) + payload


def encode_power_rails(names: dict[int, str], samples: list[tuple[int, int, int]], *,
                       timestamp_ns: int = 0) -> bytes:
    """A Perfetto trace with one descriptor packet and one packet per (index, t_ms, energy_uws).

    Used by tests and the adb stand-in to produce real wire-format traces.
    """
    desc = b"".join(_ld(1, _key(1, 0) + _enc_varint(i) + _ld(2, n.encode())) for i, n in names.items())
    packets = [_ld(1, _key(8, 0) + _enc_varint(timestamp_ns) + _ld(40, desc))]
    for idx, t_ms, e in samples:
        data = _key(1, 0) + _enc_varint(idx) + _key(2, 0) + _enc_varint(t_ms) + _key(3, 0) + _enc_varint(e)
        packets.append(_ld(1, _key(8, 0) + _enc_varint(t_ms * 1_000_000) + _ld(40, _ld(2, data))))
    return b"".join(packets)
