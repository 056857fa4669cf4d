"""Parsers for the text a MLPerf Tiny / EEMBC device under test prints.

Kept apart from the transport (:mod:`devices.protocol.eembc`) so every rule about what a line
means lives in one place and can be fuzzed without a device. The grammar follows the upstream
DUT library (``internally_implemented.cpp``): lines end in ``\\r\\n``, ``m-`` marks a message and
``e-`` an error; see docs/mlperf-tiny-protocol.md §2. Interface boards prefix relayed lines
with ``[dut]: ``; that prefix is stripped here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "TranscriptError",
    "Line",
    "classify",
    "parse_results",
    "parse_lap_us",
    "parse_name",
    "split_lines",
]

BOOT_MARKERS = ("m-timestamp-mode-", "m-init-done")


class TranscriptError(ValueError):
    """A line that should carry a value is corrupted or truncated."""


@dataclass(frozen=True)
class Line:
    """One classified DUT line: ``kind`` plus its payload (the text after the prefix)."""

    kind: str
    text: str
    payload: str = ""


_DUT_PREFIX = re.compile(r"^\[dut\]:\s?")
# Order matters: longer prefixes first.
_MESSAGES: tuple[tuple[str, str], ...] = (
    ("m-ready", "ready"),
    ("m-lap-us-", "lap_us"),
    ("m-results-", "results"),
    ("m-name-", "name"),
    ("m-profile-", "profile"),
    ("m-model-", "model"),
    ("m-load-done", "load_done"),
    ("m-init-done", "init_done"),
    ("m-timestamp-mode-", "timestamp_mode"),
    ("m-warmup-start-", "warmup_start"),
    ("m-warmup-done", "warmup_done"),
    ("m-infer-start-", "infer_start"),
    ("m-infer-done", "infer_done"),
    ("m-buffer-", "buffer"),
    ("m-[Expecting", "expecting"),
)
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


def split_lines(buffer: bytes) -> tuple[list[str], bytes]:
    """Split complete ``\\n``-terminated lines off ``buffer``; returns (lines, remainder).

    Bytes that are not ASCII are kept as U+FFFD so that garbage is visible, never fatal.
    """
    *complete, rest = buffer.split(b"\n")
    lines = [raw.rstrip(b"\r").decode("ascii", errors="replace") for raw in complete]
    return lines, rest


def classify(raw: str) -> Line:
    """Classify one line (without its terminator).

    Kinds: the message kinds above, ``error`` (``e-[...]`` and the unprefixed
    ``Supplied buffer size ... exceeds maximum`` of an oversized ``db load``), ``empty``,
    ``garbage`` (non-printable or not a protocol line) and ``text`` (printable free text such
    as the ``help%`` menu or a timestamp in the boot banner).
    """
    text = _DUT_PREFIX.sub("", raw.strip())
    if not text:
        return Line("empty", text)
    if not _PRINTABLE.match(text):
        return Line("garbage", text)
    if text.startswith("e-"):
        return Line("error", text, _bracketed(text[2:]))
    if text.startswith("Supplied buffer size"):
        return Line("error", text, text)
    for prefix, kind in _MESSAGES:
        if text.startswith(prefix):
            return Line(kind, text, text[len(prefix):])
    if text.startswith("m-"):
        return Line("message", text, text[2:])
    return Line("text", text)


def _bracketed(s: str) -> str:
    if s.startswith("[") and s.endswith("]"):
        return s[1:-1]
    return s


def parse_results(payload: str) -> tuple[float, ...]:
    """Parse the payload of ``m-results-[f,f,...]`` (a trailing comma is tolerated).

    Raises :class:`TranscriptError` when the brackets are missing, a value is not a finite
    float, or the list is empty: a truncated line must never pass as a shorter result.
    """
    if payload.startswith("m-results-"):
        payload = payload[len("m-results-"):]
    if not (payload.startswith("[") and payload.endswith("]")):
        raise TranscriptError(f"results line is not bracketed: {payload!r}")
    body = payload[1:-1].strip()
    items = body.split(",")
    if items and items[-1].strip() == "":
        items = items[:-1]
    if not items:
        raise TranscriptError("results line has no values")
    values = []
    for item in items:
        item = item.strip()
        if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", item):
            raise TranscriptError(f"results value {item!r} is not a number")
        v = float(item)
        if not math.isfinite(v):
            raise TranscriptError(f"results value {item!r} is not finite")
        values.append(v)
    return tuple(values)


def parse_lap_us(payload: str) -> int:
    """Parse the payload of ``m-lap-us-<N>`` (microseconds since boot, unsigned)."""
    if payload.startswith("m-lap-us-"):
        payload = payload[len("m-lap-us-"):]
    if not re.fullmatch(r"\d{1,20}", payload):
        raise TranscriptError(f"timestamp {payload!r} is not an unsigned integer")
    return int(payload)


def parse_name(payload: str) -> tuple[str, str]:
    """Parse ``m-name-<device>-[<vendor>]`` into (device, vendor)."""
    if payload.startswith("m-name-"):
        payload = payload[len("m-name-"):]
    m = re.fullmatch(r"([^\[\]]+?)-\[(.*)\]", payload)
    if not m:
        raise TranscriptError(f"name line {payload!r} is not '<device>-[<vendor>]'")
    return m.group(1), m.group(2)


def parse_expecting(payload: str) -> int:
    """Parse ``m-[Expecting N bytes]`` (payload after ``m-[Expecting``)."""
    m = re.fullmatch(r"\s*(\d+) bytes\]", payload)
    if not m:
        raise TranscriptError(f"'db load' reply {payload!r} is not 'Expecting N bytes'")
    return int(m.group(1))


def parse_buffer(payload: str) -> bytes:
    """Parse one ``m-buffer-xx-xx-...`` line of ``db print`` into bytes."""
    parts = [p for p in payload.split("-") if p]
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError as exc:
        raise TranscriptError(f"buffer line {payload!r} is not hex bytes") from exc
