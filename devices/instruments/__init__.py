"""Power monitors for energy mode: one :class:`PowerTrace` interface, one adapter per instrument.

``open_instrument(spec)`` turns ``--option instrument=SPEC`` into an adapter:

- ``lpm01a:PORT[,volt=1800,freq=1k]`` - ST LPM01A PowerShield (serial ASCII, no extra package);
- ``ppk2:PORT[,volt=1800,pin=0]`` - Nordic PPK2 (serial binary, no extra package);
- ``joulescope[:SERIAL]`` - Joulescope JS110/JS220 (needs ``pip install joulescope``).
"""

from __future__ import annotations

from devices import DeviceError
from devices.instruments.base import PowerInstrument, PowerTrace, edges_from_logic

__all__ = ["PowerTrace", "PowerInstrument", "edges_from_logic", "open_instrument", "INSTRUMENTS"]

INSTRUMENTS = ("lpm01a:PORT[,volt=MV,freq=1k]", "ppk2:PORT[,volt=MV,pin=N]", "joulescope[:SERIAL]")


def _options(text: str) -> tuple[str, dict[str, str]]:
    head, *rest = text.split(",")
    opts = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise DeviceError(f"instrument option {item!r}: expected key=value")
        opts[key.strip()] = value.strip()
    return head, opts


def open_instrument(spec: str) -> PowerInstrument:
    """Build the adapter named by ``spec`` (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    arg, opts = _options(rest) if rest else ("", {})
    try:
        if kind == "lpm01a":
            from devices.instruments.lpm01a import Lpm01a

            if not arg:
                raise DeviceError("instrument lpm01a needs a port: lpm01a:/dev/ttyACM1")
            return Lpm01a(arg, voltage_mv=int(opts.get("volt", "1800")), freq=opts.get("freq", "1k"))
        if kind == "ppk2":
            from devices.instruments.ppk2 import Ppk2

            if not arg:
                raise DeviceError("instrument ppk2 needs a port: ppk2:/dev/ttyACM2")
            return Ppk2(arg, voltage_mv=int(opts.get("volt", "1800")), pin=int(opts.get("pin", "0")))
        if kind == "joulescope":
            from devices.instruments.joulescope import Joulescope

            return Joulescope(arg or None)
    except ValueError as exc:
        raise DeviceError(f"instrument {spec!r}: {exc}; expected one of {', '.join(INSTRUMENTS)}") from None
    raise DeviceError(f"instrument: expected one of {', '.join(INSTRUMENTS)}, received {spec!r}")
