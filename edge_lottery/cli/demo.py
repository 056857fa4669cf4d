"""``edge-lottery demo``: the whole pipeline on the bundled digits data, in a minute or two.

The demo is a list of steps (:data:`STEPS`), each a function of a shared :class:`DemoContext`,
so later stages (export, bench) are added by appending a step, not by editing the search step.
"""

from __future__ import annotations

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


#: (name, function) in order; later pipeline stages append here.
STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [("search", step_search)]


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
    """Run the whole pipeline on the embedded digits dataset (about 1-2 minutes on 2 cores)."""
    from edge_lottery.cli.search import setup_logging

    setup_logging(False)
    run_demo(out, seed=seed)
