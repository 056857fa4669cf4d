"""Size reports of packed models: per tensor and total, as a table (rich or plain) and as JSON.

Every number comes from the encoders' :class:`~converters.tflm.encoding.Encoded` or from the
model bytes themselves, never re-derived here; the arena numbers come from the real
TFLite-Micro interpreter (:mod:`converters.tflm.arena`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TensorReport:
    """What packing did to one constant tensor.

    ``method`` is ``none`` when the tensor stayed dense; ``reason`` then says why (not a weight,
    excluded, packing would grow it, ...). ``candidates`` maps each tried method to its packed
    bytes, or to the one-line reason it does not apply.
    """

    subgraph: int
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    original_bytes: int
    method: str
    packed_bytes: int
    entropy_bound_bytes: float
    table_bytes: int
    reason: str = ""
    candidates: dict[str, int | str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Original / packed (> 1 means smaller)."""
        return self.original_bytes / self.packed_bytes if self.packed_bytes else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["ratio"] = None if math.isnan(self.ratio) else round(self.ratio, 4)
        d["entropy_bound_bytes"] = round(self.entropy_bound_bytes, 2)
        return d


@dataclass(frozen=True)
class PackReport:
    """Size report of one packed model (tensors, totals, model files, arena, verification)."""

    method: str
    tensors: tuple[TensorReport, ...]
    model_bytes_before: int
    model_bytes_after: int
    verified_rows: int = 0
    verification: str = ""
    arena_before: dict[str, Any] | None = None
    arena_after: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def original_bytes(self) -> int:
        return sum(t.original_bytes for t in self.tensors)

    @property
    def packed_bytes(self) -> int:
        return sum(t.packed_bytes for t in self.tensors)

    @property
    def entropy_bound_bytes(self) -> float:
        return sum(t.entropy_bound_bytes for t in self.tensors)

    @property
    def table_bytes(self) -> int:
        return sum(t.table_bytes for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model_bytes_before": self.model_bytes_before,
            "model_bytes_after": self.model_bytes_after,
            "model_ratio": round(self.model_bytes_before / self.model_bytes_after, 4) if self.model_bytes_after else None,
            "tensors": [t.to_dict() for t in self.tensors],
            "totals": {
                "original_bytes": self.original_bytes,
                "packed_bytes": self.packed_bytes,
                "entropy_bound_bytes": round(self.entropy_bound_bytes, 2),
                "table_bytes": self.table_bytes,
                "ratio": round(self.original_bytes / self.packed_bytes, 4) if self.packed_bytes else None,
            },
            "verified_rows": self.verified_rows,
            "verification": self.verification,
            "arena_before": self.arena_before,
            "arena_after": self.arena_after,
            **({"extra": self.extra} if self.extra else {}),
        }


COLUMNS = ("tensor", "dtype", "shape", "original", "encoding", "packed", "entropy", "tables", "ratio", "note")


def rows(report: PackReport) -> list[list[str]]:
    out = []
    for t in report.tensors:
        out.append([
            t.name[-40:], t.dtype, "x".join(str(d) for d in t.shape) or "scalar", str(t.original_bytes), t.method,
            str(t.packed_bytes), f"{t.entropy_bound_bytes:.0f}", str(t.table_bytes),
            "" if math.isnan(t.ratio) else f"{t.ratio:.2f}x", t.reason[:60],
        ])
    total_ratio = report.original_bytes / report.packed_bytes if report.packed_bytes else math.nan
    out.append(["TOTAL", "", "", str(report.original_bytes), report.method, str(report.packed_bytes),
                f"{report.entropy_bound_bytes:.0f}", str(report.table_bytes),
                "" if math.isnan(total_ratio) else f"{total_ratio:.2f}x", ""])
    return out


def summary_lines(report: PackReport) -> list[str]:
    lines = [f"model: {report.model_bytes_before} B -> {report.model_bytes_after} B"]
    if report.verification:
        lines.append(f"verified: {report.verification}")
    for label, arena in (("arena before", report.arena_before), ("arena after", report.arena_after)):
        if arena:
            alt = arena.get("min_arena_with_alt")
            extra = (f", {alt} B with {arena['alt_decompression_memory_size']} B alternate decompression memory"
                     if alt else "")
            lines.append(f"{label}: {arena['min_arena']} B minimum{extra}")
    for key, value in report.extra.items():
        lines.append(f"{key}: {value}")
    return lines


def plain_table(report: PackReport) -> str:
    """A fixed-width text table (no colours), followed by the summary lines."""
    table = [list(COLUMNS), *rows(report)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    text = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(text + summary_lines(report))


def print_table(report: PackReport, console: Any = None) -> None:
    """Print with rich when available (a terminal gets a boxed table), else plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency, but keep the library usable without it
        print(plain_table(report))
        return
    console = console or Console()
    if not console.is_terminal:  # pipes and logs get the fixed-width text, never wrapped cells
        console.print(plain_table(report), highlight=False, soft_wrap=True)
        return
    table = Table(title=f"packed with {report.method}")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("original", "packed", "entropy", "tables", "ratio") else "left",
                         no_wrap=col != "note", overflow="ellipsis")
    for r in rows(report):
        table.add_row(*r)
    console.print(table)
    for line in summary_lines(report):
        console.print(line, highlight=False)


__all__ = ["PackReport", "TensorReport", "plain_table", "print_table", "rows"]
