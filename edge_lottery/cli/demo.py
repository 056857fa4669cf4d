"""``edge-lottery demo``: the whole pipeline on the bundled digits data, in a few minutes.

The demo is a list of steps (:data:`STEPS`), each a function of a shared :class:`DemoContext`,
so later stages (export, bench) are added by appending a step, not by editing the search step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edge_lottery.cli.options import seed_option
from edge_lottery.errors import ModelError

#: The demo search: LeNet-300-100 on digits; 40 % per level so 5 levels reach ~8 % of the weights.
DEMO_SEARCH: dict[str, Any] = {
    "levels": 5, "prune_fraction": 0.4, "controls": ("reinit",), "epochs": 30,
    "jit_compile": False, "steps_per_execution": 20,
}
#: The dense LeNet must clear this on digits, or the demo is not showing a working search.
DENSE_ACCURACY_FLOOR = 0.95


@dataclass
class DemoContext:
    """What the steps share: the output folder, the seed, and each step's results."""

    out: Path
    seed: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    echo: Callable[[str], None] = click.echo


def step_search(ctx: DemoContext) -> None:
    """Find tickets of LeNet-300-100 on digits, with the random re-initialisation control."""
    from edge_lottery.cli.search import print_result
    from edge_lottery.search import LotteryTicketSearch

    lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=ctx.out / "search", seed=ctx.seed,
                              progress=True, **DEMO_SEARCH)
    result = lts.run()
    print_result(result, title="lenet_300_100 on digits (demo)")
    dense = result.levels[0].test_accuracy or 0.0
    if dense <= DENSE_ACCURACY_FLOOR:
        raise ModelError(f"demo dense accuracy: expected > {DENSE_ACCURACY_FLOOR}, received {dense:.4f}")
    ctx.results["search"] = result


#: The levels the demo exports and measures: the dense network and the chosen ticket.
def _demo_levels(ctx: DemoContext) -> list[int]:
    return sorted({0, ctx.results["search"].best.level})


def step_export(ctx: DemoContext) -> None:
    """Quantize the dense model and the ticket to int8: packed for TFLite-Micro, plain for LiteRT, C."""
    from converters.export import ExportOptions, export

    out = ctx.out / "export"
    exported: dict[int, dict[str, Path]] = {}
    for level in _demo_levels(ctx):
        paths: dict[str, Path] = {}
        for fmt, name in (("tflm", f"level_{level}_tflm.tflite"), ("tflite", f"level_{level}_litert.tflite")):
            result = export(ctx.out / "search", out / name,
                            ExportOptions(format=fmt, quantize="int8", pack="auto", level=level, force=True,
                                          seed=ctx.seed, measure_arena=False))
            for line in result.lines:
                ctx.echo(f"  level {level} {fmt}: {line}")
            paths[fmt] = result.out
        exported[level] = paths
    best = max(exported)
    c_result = export(ctx.out / "search", out / "model_data.cc",
                      ExportOptions(format="c", quantize="int8", pack="auto", level=best, force=True, seed=ctx.seed))
    ctx.echo(f"  firmware sources: {', '.join(str(p) for p in c_result.files[:2])}")
    ctx.results["export"] = exported


def step_bench(ctx: DemoContext) -> None:
    """Measure on the host (LiteRT), TFLite-Micro, a virtual MLPerf Tiny board, and a Cortex-M4 estimate."""
    from devices.compare import comparison_tables, plot
    from devices.records import append_jsonl
    from devices.settings import BenchSettings
    from devices.targets import get_target
    from devices.virtual_board import VirtualBoard

    settings = BenchSettings(runs=20, warmup=3)
    jsonl = ctx.out / "bench.jsonl"
    jsonl.unlink(missing_ok=True)  # the demo's records describe this run only
    records = []
    for level, paths in ctx.results["export"].items():
        packed = paths["tflm"]
        plan = [("host", paths["tflite"]), ("tflm", packed), ("estimate:cortex-m4-80mhz", packed)]
        for spec, model in plan:
            records.extend(get_target(spec).run(model, settings))
        # The virtual board speaks the MLPerf Tiny serial protocol over TCP and runs TFLite-Micro.
        with VirtualBoard(packed, seed=ctx.seed) as board:
            address = board.serve(tcp=0)
            measured = get_target(f"serial:{address}").run(packed, BenchSettings(runs=10, warmup=2))
        # one column for the board whatever port it got this time
        records.extend(dataclasses.replace(r, target="serial:virtual-board") for r in measured)
        ctx.echo(f"  measured level {level}")
    append_jsonl(jsonl, records)
    from rich.console import Console

    console = Console()
    for table in comparison_tables(records):
        console.print(table)
    for path in plot(records, ctx.out / "plots", ctx.out / "search"):
        ctx.echo(f"  wrote {path}")
    ctx.echo(f"  records: {jsonl} (edge-lottery bench compare {jsonl})")
    ctx.results["bench"] = records


#: (name, function) in order; later pipeline stages append here.
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("search", step_search), ("export", step_export), ("bench", step_bench),
]


def run_demo(out: Path, *, seed: int = 0, steps: list[tuple[str, Callable[[DemoContext], None]]] | None = None
             ) -> DemoContext:
    """Run the demo steps in order into ``out``; returns the context with every step's results."""
    ctx = DemoContext(out=Path(out), seed=seed)
    for name, fn in steps or STEPS:
        ctx.echo(f"== demo step: {name}")
        fn(ctx)
    return ctx


@click.command(name="demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("edge-lottery-demo"),
              show_default=True, help="Output folder (a re-run resumes / reuses finished work).")
@seed_option
def demo(out: Path, seed: int) -> None:
    """Run the whole pipeline on the embedded digits dataset: search, export, bench (a few minutes)."""
    from edge_lottery.cli.search import setup_logging

    setup_logging(False)
    run_demo(out, seed=seed)
