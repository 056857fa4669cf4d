"""One benchmark result: :class:`BenchRecord`, its :class:`Figure` values, and JSON-lines files.

Every figure carries ``kind`` ("measured" or "estimated") so that an analytical estimate is never
mistaken for a measurement: tables and plots show the kind next to the value. Records are
appended one JSON object per line and fsynced per record, so an interrupted benchmark keeps
everything measured before the interruption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices import DeviceError
from edge_lottery.errors import expected

FIGURE_KINDS = ("measured", "estimated")
RECORD_STATUSES = ("ok", "failed")
#: Units the project's own targets use; others are accepted (a power meter may report "mW").
UNITS = ("ms", "us", "s", "bytes", "uJ", "mJ", "J", "mW", "inferences/s", "fraction", "MACs", "cycles",
         "count")
RECORD_VERSION = 1


@dataclass(frozen=True)
class Figure:
    """A single named value with unit and provenance (``measured`` or ``estimated``)."""

    name: str
    value: float
    unit: str
    kind: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FIGURE_KINDS:
            raise DeviceError(expected(f"figure {self.name!r} kind", " or ".join(FIGURE_KINDS), self.kind))
        if not isinstance(self.unit, str) or not self.unit:
            raise DeviceError(expected(f"figure {self.name!r} unit", "a unit such as " + ", ".join(UNITS),
                                       self.unit))
        object.__setattr__(self, "value", float(self.value))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": _json_float(self.value), "unit": self.unit,
                               "kind": self.kind}
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Figure:
        value = d["value"]
        return cls(name=str(d["name"]), value=math.nan if value is None else float(value),
                   unit=str(d["unit"]), kind=str(d["kind"]), note=str(d.get("note", "")))

    def format(self) -> str:
        """``12.3 ms (estimated)`` - the kind is always shown for estimates."""
        text = f"{_fmt_number(self.value)} {self.unit}"
        return f"{text} (estimated)" if self.kind == "estimated" else text


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _fmt_number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.4g}"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class BenchRecord:
    """The result of benchmarking one model on one target with one set of settings."""

    model: str
    model_sha256: str
    target: str
    settings: dict
    environment: dict
    figures: tuple[Figure, ...]
    status: str = "ok"
    error: str = ""
    timestamp: str = field(default="")

    def __post_init__(self) -> None:
        if self.status not in RECORD_STATUSES:
            raise DeviceError(expected("record status", " or ".join(RECORD_STATUSES), self.status))
        object.__setattr__(self, "figures", tuple(self.figures))
        if not self.timestamp:
            object.__setattr__(self, "timestamp", utc_now())

    def figure(self, name: str) -> Figure | None:
        for fig in self.figures:
            if fig.name == name:
                return fig
        return None

    def value(self, name: str, default: float = math.nan) -> float:
        fig = self.figure(name)
        return default if fig is None else fig.value

    def to_json(self) -> dict[str, Any]:
        return {
            "version": RECORD_VERSION,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "target": self.target,
            "settings": dict(self.settings),
            "environment": dict(self.environment),
            "figures": [f.to_json() for f in self.figures],
            "status": self.status,
            "error": self.error,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BenchRecord:
        if not isinstance(d, Mapping):
            raise DeviceError(expected("benchmark record", "a JSON object", type(d).__name__))
        missing = [k for k in ("model", "target", "figures") if k not in d]
        if missing:
            raise DeviceError(expected("benchmark record", "keys model, target, figures", f"missing {missing}"))
        version = d.get("version", RECORD_VERSION)
        if version != RECORD_VERSION:
            raise DeviceError(expected("benchmark record version", RECORD_VERSION, version))
        return cls(
            model=str(d["model"]),
            model_sha256=str(d.get("model_sha256", "")),
            target=str(d["target"]),
            settings=dict(d.get("settings", {})),
            environment=dict(d.get("environment", {})),
            figures=tuple(Figure.from_json(f) for f in d["figures"]),
            status=str(d.get("status", "ok")),
            error=str(d.get("error", "")),
            timestamp=str(d.get("timestamp", "")),
        )

    def replace(self, **changes: Any) -> BenchRecord:
        return dataclasses.replace(self, **changes)


def failed_record(model: str | os.PathLike[str], target: str, settings: Mapping[str, Any],
                  environment: Mapping[str, Any], error: str) -> BenchRecord:
    """A record saying a model could not be run, kept so a comparison shows the gap."""
    path = Path(model)
    digest = model_sha256(path) if path.is_file() else ""
    return BenchRecord(model=str(model), model_sha256=digest, target=target, settings=dict(settings),
                       environment=dict(environment), figures=(), status="failed", error=error)


def append_jsonl(path: str | os.PathLike[str], records: Iterable[BenchRecord]) -> None:
    """Append records, one JSON object per line; each line is flushed and fsynced on its own.

    Appending (rather than an atomic rewrite) is deliberate: results of a long session survive
    Ctrl-C or a crash, and a partial last line is reported by :func:`read_jsonl` by number.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), sort_keys=True, allow_nan=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[BenchRecord]:
    """Read every record of a JSON-lines file; a corrupt line is a :class:`DeviceError` naming it."""
    source = Path(path)
    if not source.is_file():
        raise DeviceError(expected("benchmark results file", "an existing .jsonl file", str(source)))
    records: list[BenchRecord] = []
    with open(source, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(BenchRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, DeviceError) as exc:
                raise DeviceError(
                    f"{source}:{number}: corrupt benchmark record ({exc}); "
                    "delete or fix that line and re-run"
                ) from None
    return records


def model_sha256(path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview) -> str:
    """SHA-256 hex digest of a model file or its bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(path_or_bytes)).hexdigest()
    digest = hashlib.sha256()
    with open(path_or_bytes, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_LATENCY_SCALE = {"ms": 1e3, "us": 1e6, "s": 1.0}


def latency_figures(samples_s: Sequence[float], kind: str = "measured", unit: str = "ms",
                    note: str = "") -> list[Figure]:
    """p50 / p90 / p99 / min / mean latency figures from per-inference samples in seconds."""
    import numpy as np

    if unit not in _LATENCY_SCALE:
        raise DeviceError(expected("latency unit", ", ".join(_LATENCY_SCALE), unit))
    samples = np.asarray(samples_s, dtype=np.float64) * _LATENCY_SCALE[unit]
    if samples.size == 0:
        raise DeviceError(expected("latency samples", "at least one", "none"))
    n_note = f"n={samples.size}" + (f"; {note}" if note else "")
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return [
        Figure("latency_p50", float(p50), unit, kind, n_note),
        Figure("latency_p90", float(p90), unit, kind, n_note),
        Figure("latency_p99", float(p99), unit, kind, n_note),
        Figure("latency_min", float(samples.min()), unit, kind, n_note),
        Figure("latency_mean", float(samples.mean()), unit, kind, n_note),
    ]


__all__ = [
    "BenchRecord",
    "FIGURE_KINDS",
    "Figure",
    "UNITS",
    "append_jsonl",
    "failed_record",
    "latency_figures",
    "model_sha256",
    "read_jsonl",
    "utc_now",
]
