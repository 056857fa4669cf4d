"""Parse what LiteRT's ``benchmark_model`` prints, across the build variants in circulation.

Formats (docs/mlperf-tiny-protocol.md §7.4): modern builds prefix lines with ``INFO: `` on
stdout, older ones print bare lines on stderr; statistics lines are ``count=0``,
``count=N curr=V(all same)`` or ``count= first= curr= min= max= avg= std=`` with optional
``p5= median= p95=``; numbers may be in scientific notation; very old builds print
``Average inference timings in us: Warmup: …, Init: …, Inference: …``. Only newline-terminated
lines are trusted, so a transcript cut off mid-number (a crash, a lost connection) never yields a
wrong value, only a missing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Stats", "BenchmarkOutput", "parse_benchmark_output", "OutputError"]

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PREFIX = re.compile(r"^(?:(?:INFO|VERBOSE|WARNING|ERROR|W|I|E)\s*:\s*)?")
_KV = re.compile(rf"(\w+)=({NUM})")


class OutputError(ValueError):
    """The transcript holds no usable timing (the run failed or the output is not benchmark_model's)."""


@dataclass(frozen=True)
class Stats:
    """One ``count=…`` line; times in microseconds."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None
    all_same: bool = False


@dataclass
class BenchmarkOutput:
    threads: int | None = None
    graph: str | None = None
    init_ms: float | None = None
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    warmup: Stats | None = None
    run: Stats | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None
    delegates: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    truncated: bool = False

    @property
    def latency_avg_us(self) -> float | None:
        if self.inference_avg_us is not None:
            return self.inference_avg_us
        return self.run.avg if self.run is not None else None

    def require_timing(self) -> float:
        v = self.latency_avg_us
        if v is None:
            why = self.errors[-1] if self.errors else "no 'Inference (avg)' or timed 'count=' line"
            raise OutputError(f"benchmark_model output has no inference timing ({why})")
        return v


def parse_stats(text: str) -> Stats | None:
    """Parse a ``count=…`` statistics line (without prefix); None if it is not one."""
    text = text.strip()
    if not text.startswith("count="):
        return None
    all_same = text.endswith("(all same)")
    if all_same:
        text = text[: -len("(all same)")]
    kv = dict(_KV.findall(text))
    if "count" not in kv:
        return None
    try:
        count = int(float(kv["count"]))
    except ValueError:
        return None
    vals = {k: float(v) for k, v in kv.items() if k != "count" and k in Stats.__dataclass_fields__}
    return Stats(count=count, all_same=all_same, **vals)


def parse_benchmark_output(text: str, *, final: bool = False) -> BenchmarkOutput:
    """Parse a transcript (stdout and stderr concatenated or interleaved).

    Only complete lines are used unless ``final`` (the whole output is known to be complete).
    """
    out = BenchmarkOutput()
    lines = text.replace("\r\n", "\n").split("\n")
    if not final and lines and lines[-1]:
        out.truncated = True
    lines = lines if final else lines[:-1]
    phase_stats: list[Stats] = []
    expecting_stats = False
    for raw in lines:
        line = _PREFIX.sub("", raw.strip(), count=1)
        if not line:
            continue
        if line.startswith("Running benchmark for at least"):
            expecting_stats = True
            continue
        if line.startswith("count="):
            st = parse_stats(line)
            if st is not None and expecting_stats:
                phase_stats.append(st)
                expecting_stats = False
            continue
        if m := re.match(r"Num threads: \[(\d+)\]", line):
            out.threads = int(m.group(1))
        elif m := re.match(r"Graph: \[(.*)\]$", line):
            out.graph = m.group(1)
        elif m := re.match(rf"Initialized session in ({NUM})\s*ms", line):
            out.init_ms = float(m.group(1))
        elif m := re.match(rf"The input model file size \(MB\): ({NUM})", line):
            out.model_size_mb = float(m.group(1))
        elif line.startswith("Inference timings in us:"):
            kv = _timings(line.split(":", 1)[1])
            out.init_us = kv.get("Init", out.init_us)
            out.first_us = kv.get("First inference", out.first_us)
            out.warmup_avg_us = kv.get("Warmup (avg)", out.warmup_avg_us)
            out.inference_avg_us = kv.get("Inference (avg)", out.inference_avg_us)
        elif line.startswith("Average inference timings in us:"):
            kv = _timings(line.split(":", 1)[1])
            out.init_us = kv.get("Init", out.init_us)
            out.warmup_avg_us = kv.get("Warmup", out.warmup_avg_us)
            out.inference_avg_us = kv.get("Inference", out.inference_avg_us)
        elif m := re.match(rf"Memory footprint delta from the start of the tool \(MB\): init=({NUM}) overall=({NUM})",
                           line):
            out.memory_init_mb, out.memory_overall_mb = float(m.group(1)), float(m.group(2))
        elif m := re.match(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUM})", line):
            out.peak_memory_mb = float(m.group(1))
        elif "delegate" in line.lower() and line.startswith(("Created", "Applied")):
            out.delegates.append(line)
        elif raw.strip().startswith(("ERROR", "E:")) or line.startswith(("Failed", "Aborted", "Segmentation fault")) \
                or "error:" in line.lower():
            out.errors.append(line)
    if phase_stats:
        if len(phase_stats) >= 2:
            out.warmup, out.run = phase_stats[0], phase_stats[1]
        else:
            out.warmup = phase_stats[0]
    return out


def _timings(text: str) -> dict[str, float]:
    """``Init: 7003, First inference: 56903, Warmup (avg): 5.6e+04`` -> dict (only clean numbers)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        value = value.strip()
        if sep and re.fullmatch(NUM, value):
            out[key.strip()] = float(value)
    return out
