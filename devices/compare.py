"""Tables and plots of benchmark records: ``edge-lottery bench`` and ``bench compare``.

Tables show one row per (model, target). Estimated values always carry "(estimated)" in the
cell, and plots draw estimated points hollow with "(estimated)" in the legend, so a reader never
mistakes an analytical estimate for a measurement. Plots put one point per model (per ticket
level when the models come from a search, joined with its ``summary.json``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from devices import DeviceError
from devices.records import BenchRecord, Figure
from edge_lottery.errors import expected

#: Figures shown in tables, in this order (others follow alphabetically unless per-operator).
MAIN_FIGURES = ("latency_p50", "latency_p90", "latency_p99", "latency_min", "latency_mean", "throughput",
                "peak_memory", "arena_bytes", "arena_bytes_with_alt", "energy_per_inference", "energy_ops",
                "accuracy_top1", "macs", "model_size")
_OP_FIGURE = re.compile(r"^op\d{3}_")
_LEVEL = re.compile(r"level[_-]?(\d+)", re.IGNORECASE)
ESTIMATED_MARK = " (estimated)"


def format_value(fig: Figure | None) -> str:
    """Human units (µs / ms / s, B / KiB / MiB, uJ / mJ); estimated values say so."""
    if fig is None:
        return "-"
    value, unit = fig.value, fig.unit
    if math.isnan(value):
        text = "n/a"
    elif unit in ("ms", "us", "s"):
        seconds = value * {"ms": 1e-3, "us": 1e-6, "s": 1.0}[unit]
        text = (f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else
                f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s")
    elif unit == "bytes":
        text = (f"{value:.0f} B" if value < 10 * 1024 else
                f"{value / 1024:.1f} KiB" if value < 1024 * 1024 else f"{value / 1048576:.1f} MiB")
    elif unit in ("uJ", "mJ", "J"):
        joules = value * {"uJ": 1e-6, "mJ": 1e-3, "J": 1.0}[unit]
        text = (f"{joules * 1e9:.3g} nJ" if joules < 1e-6 else
                f"{joules * 1e6:.3g} µJ" if joules < 1e-3 else f"{joules * 1e3:.3g} mJ")
    elif unit == "fraction":
        text = f"{value * 100:.2f} %"
    elif unit in ("MACs", "count", "cycles"):
        text = f"{value:,.0f}" + ("" if unit == "count" else f" {unit}")
    elif unit == "inferences/s":
        text = f"{value:,.1f}/s"
    else:
        text = f"{value:.4g} {unit}"
    return text + (ESTIMATED_MARK if fig.kind == "estimated" else "")


def figure_columns(records: Sequence[BenchRecord], include_ops: bool = False) -> list[str]:
    names: list[str] = []
    present = {f.name for r in records for f in r.figures}
    names.extend(n for n in MAIN_FIGURES if n in present)
    extra = sorted(n for n in present if n not in names and (include_ops or not _OP_FIGURE.match(n)))
    return names + extra


#: Compact table columns: header -> figure names tried in order.
TABLE_COLUMNS = (
    ("p50", ("latency_p50",)),
    ("p99", ("latency_p99",)),
    ("memory", ("peak_memory", "arena_bytes")),
    ("arena+alt", ("arena_bytes_with_alt",)),
    ("energy", ("energy_per_inference",)),
    ("top-1", ("accuracy_top1",)),
    ("size", ("model_size",)),
)


def _first(record: BenchRecord, names: Sequence[str]) -> Figure | None:
    for name in names:
        fig = record.figure(name)
        if fig is not None:
            return fig
    return None


def record_kind(record: BenchRecord) -> str:
    """"measured", "estimated" or "mixed" over the record's figures (file size excluded)."""
    kinds = {f.kind for f in record.figures if f.name != "model_size"}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "-")


def records_table(records: Sequence[BenchRecord], title: str = "edge-lottery bench") -> Any:
    """A compact rich table, one row per record; the ``kind`` column says measured or estimated.

    Memory is ``peak_memory`` (host) or ``arena_bytes`` (tflm); every figure is in the JSON lines.
    """
    from rich.table import Table

    columns = [(h, names) for h, names in TABLE_COLUMNS if any(_first(r, names) for r in records)]
    table = Table(title=title)
    table.add_column("model", overflow="fold", min_width=12)
    table.add_column("target", overflow="fold", min_width=6)
    table.add_column("kind", no_wrap=True)
    for header, _ in columns:
        table.add_column(header, justify="right")
    for record in records:
        if record.status != "ok":
            table.add_row(Path(record.model).name, record.target, "failed", *["" for _ in columns])
            continue
        cells = []
        for _, names in columns:
            fig = _first(record, names)
            cells.append(format_value(fig).removesuffix(ESTIMATED_MARK))
        kind = record_kind(record)
        table.add_row(Path(record.model).name, record.target,
                      f"[yellow]{kind}[/yellow]" if kind == "estimated" else kind, *cells)
    if any(record_kind(r) in ("estimated", "mixed") for r in records):
        table.caption = "estimated = analytical estimate from a device profile, not a measurement"
    return table


def op_table(record: BenchRecord) -> Any | None:
    """Per-operator figures of one record (``--profile-ops``), or None."""
    from rich.table import Table

    rows: dict[str, dict[str, Figure]] = {}
    for fig in record.figures:
        if _OP_FIGURE.match(fig.name):
            op, _, what = fig.name.rpartition("_")
            rows.setdefault(op, {})[what] = fig
    if not rows:
        return None
    table = Table(title=f"per operator: {Path(record.model).name} on {record.target}")
    table.add_column("operator")
    table.add_column("MACs", justify="right")
    table.add_column("latency", justify="right")
    for op, figs in rows.items():
        table.add_row(op, format_value(figs.get("macs")), format_value(figs.get("latency")))
    table.caption = "per-operator values are estimated (LiteRT exposes no per-operator timer to Python)"
    return table


def latest(records: Iterable[BenchRecord]) -> list[BenchRecord]:
    """The newest record per (model hash or path, target), in first-seen order."""
    chosen: dict[tuple[str, str], BenchRecord] = {}
    for r in records:
        key = (r.model_sha256 or r.model, r.target)
        if key not in chosen or r.timestamp >= chosen[key].timestamp:
            chosen[key] = r
    return list(chosen.values())


def comparison_tables(records: Sequence[BenchRecord], metrics: Sequence[str] | None = None) -> list[Any]:
    """One table per metric: rows are models, columns are targets (side by side)."""
    from rich.table import Table

    records = latest(r for r in records if r.status == "ok")
    targets = list(dict.fromkeys(r.target for r in records))
    models = list(dict.fromkeys(r.model for r in records))
    by_key = {(r.model, r.target): r for r in records}
    present = {f.name for r in records for f in r.figures}
    wanted = [m for m in (metrics or ("latency_p50", "energy_per_inference", "peak_memory", "arena_bytes",
                                      "accuracy_top1", "model_size")) if m in present]
    tables = []
    for metric in wanted:
        table = Table(title=metric)
        table.add_column("model", overflow="fold")
        for target in targets:
            table.add_column(target, justify="right")
        for model in models:
            table.add_row(Path(model).name,
                          *(format_value(by_key[(model, t)].figure(metric)) if (model, t) in by_key else "-"
                            for t in targets))
        tables.append(table)
    return tables


# ---------------------------------------------------------------- search summary join
def load_summary(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Ticket-branch rows of a search ``summary.json`` (or a work dir holding one), by level."""
    source = Path(path)
    if source.is_dir():
        source = source / "summary.json"
    if not source.is_file():
        raise DeviceError(expected("--summary", "a search summary.json or its work directory", str(path)))
    try:
        summary = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DeviceError(f"{source}: not valid JSON ({exc})") from None
    rows = summary.get("levels", []) if isinstance(summary, dict) else []
    return {int(r["level"]): r for r in rows if r.get("branch", "ticket") == "ticket" and "level" in r}


def model_level(model: str) -> int | None:
    """The ticket level named in a model path (``.../level_3/...`` or ``lenet_level3.tflite``)."""
    found = _LEVEL.findall(model)
    return int(found[-1]) if found else None


def _find_summary(records: Sequence[BenchRecord]) -> Path | None:
    for r in records:
        for parent in Path(r.model).resolve().parents:
            if (parent / "summary.json").is_file():
                return parent / "summary.json"
    return None


def accuracy_of(record: BenchRecord, summary: Mapping[int, Mapping[str, Any]]) -> tuple[float, str] | None:
    """(accuracy, source): the record's own accuracy_top1, else the search's test accuracy."""
    fig = record.figure("accuracy_top1")
    if fig is not None and not math.isnan(fig.value):
        return fig.value, fig.kind
    level = model_level(record.model)
    if level is not None and level in summary and summary[level].get("test_accuracy") is not None:
        return float(summary[level]["test_accuracy"]), "search"
    return None


# ---------------------------------------------------------------- plots
def plot(records: Sequence[BenchRecord], out_dir: str | os.PathLike[str],
         summary: str | os.PathLike[str] | None = None) -> list[Path]:
    """Latency and energy against model size and accuracy: PNG files, one series per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_lottery.atomic import atomic_open

    records = latest(r for r in records if r.status == "ok")
    if not records:
        raise DeviceError(expected("records to plot", "at least one successful record", 0))
    summary_path = Path(summary) if summary else _find_summary(records)
    rows = load_summary(summary_path) if summary_path else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for y_name, y_label in (("latency_p50", "latency p50"), ("energy_per_inference", "energy per inference")):
        for x_name in ("model_size", "accuracy"):
            series: dict[str, list[tuple[float, float, str, bool]]] = {}
            unit = ""
            for r in records:
                y = r.figure(y_name)
                if y is None or math.isnan(y.value):
                    continue
                if x_name == "model_size":
                    fx = r.figure("model_size")
                    x = fx.value / 1024 if fx is not None else None
                else:
                    acc = accuracy_of(r, rows)
                    x = acc[0] * 100 if acc else None
                if x is None:
                    continue
                unit = y.unit
                level = model_level(r.model)
                label = f"L{level}" if level is not None else Path(r.model).stem
                series.setdefault(r.target, []).append((x, y.value, label, y.kind == "estimated"))
            if not series:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.4))
            for target, points in series.items():
                points.sort()
                estimated = all(p[3] for p in points)
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                name = target + (" (estimated)" if estimated else "")
                line = ax.plot(xs, ys, "-", alpha=0.5)[0]
                ax.scatter(xs, ys, label=name, edgecolors=line.get_color(),
                           facecolors="none" if estimated else line.get_color(), zorder=3)
                for x, y, label, _ in points:
                    ax.annotate(label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
            ax.set_xlabel("model size (KiB)" if x_name == "model_size" else "top-1 accuracy (%)")
            ax.set_ylabel(f"{y_label} ({unit})")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(f"{y_label} vs {'model size' if x_name == 'model_size' else 'accuracy'}")
            fig.tight_layout()
            path = out / f"{y_name}_vs_{x_name}.png"
            with atomic_open(path, "wb") as handle:
                fig.savefig(handle, format="png", dpi=120)
            plt.close(fig)
            written.append(path)
    return written


__all__ = ["TABLE_COLUMNS", "accuracy_of", "record_kind", "comparison_tables", "figure_columns", "format_value", "latest", "load_summary",
           "model_level", "op_table", "plot", "records_table"]
