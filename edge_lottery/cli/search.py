"""``edge-lottery search``: a thin command over :class:`edge_lottery.search.LotteryTicketSearch`.

Numbers are parsed here rather than by click types so that a bad value is one ``Error:`` line
with exit code 1 (the house rule for user errors), like every error the library raises.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from edge_lottery.cli.options import data_dir_option, json_option, seed_option
from edge_lottery.errors import ConfigError, expected


def parse_number(name: str, value: str | None, kind: type) -> Any:
    """``value`` as ``kind`` (int or float), or a one-line ConfigError naming the option."""
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise ConfigError(expected(name, what, value)) from None


def parse_list(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


def setup_logging(verbose: bool) -> None:
    """Library logs (``edge_lottery.*``) to stderr through rich; TensorFlow's own logs stay quiet."""
    from rich.logging import RichHandler

    root = logging.getLogger("edge_lottery")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(show_path=False, show_time=False, markup=False))
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def print_result(result: Any, *, title: str) -> None:
    from rich.console import Console

    from edge_lottery import report

    console = Console()
    summary = result.summary
    console.print(report.level_table(summary["levels"], best_level=summary["best_level"], title=title))
    best = result.best
    console.print(
        f"best ticket: level {best.level}, {100 * best.density:.2f} % of weights left, "
        f"test accuracy {_fmt(best.test_accuracy)} (dense {_fmt(result.levels[0].test_accuracy)})",
        soft_wrap=True,
    )
    console.print(f"work directory: {result.work_dir}", soft_wrap=True, highlight=False)
    console.print(f"plot: {Path(result.work_dir) / 'accuracy_vs_density.png'}", soft_wrap=True, highlight=False)


def _fmt(acc: float | None) -> str:
    return "-" if acc is None else f"{100 * acc:.2f} %"


@click.command(name="search")
@click.option("--model", "model", metavar="NAME", required=True, help="Registry model name (e.g. lenet_300_100).")
@click.option("--dataset", "dataset", metavar="NAME", required=True, help="Dataset name: digits, mnist, fashion_mnist.")
@data_dir_option
@click.option("--levels", metavar="N", default=None, help="Number of pruning levels after the dense one.")
@click.option("--target-sparsity", metavar="S", default=None, help="Stop at the first level with this sparsity (0-1).")
@click.option("--prune-fraction", metavar="F", default=None, help="Fraction of remaining weights pruned per level [model default].")
@click.option("--rewind", metavar="weights|lr|finetune", default="weights", show_default=True, help="What each level starts from (docs/search.md).")
@click.option("--rewind-step", metavar="K", default="0", show_default=True, help="Optimizer step k of the rewind point.")
@click.option("--scope", metavar="global|layerwise", default="global", show_default=True, help="One ranking across layers, or per layer.")
@click.option("--pattern", metavar="PATTERN", default="unstructured", show_default=True,
              help="unstructured | block16x1 | block16x4 | block1x16 | 2:4 | neuron.")
@click.option("--controls", metavar="reinit,random_prune", default="", help="Comma-separated control branches: reinit,random_prune.")
@click.option("--keep-output/--prune-output", default=None,
              help="Keep the output layer dense, or prune it at its own rate [model default].")
@click.option("--first-layer-density", metavar="D", default=None, help="Never prune the first layer below this density.")
@click.option("--exclude", metavar="LAYER,...", default="", help="Comma-separated layer names never pruned.")
@click.option("--epochs", metavar="E", default=None, help="Training epochs per level [model default].")
@click.option("--iterations", metavar="N", default=None, help="Training steps per level, instead of --epochs.")
@click.option("--batch-size", metavar="B", default=None, help="Batch size [model default].")
@click.option("--learning-rate", metavar="LR", default=None, help="Learning rate [model default].")
@click.option("--optimizer", metavar="sgd|momentum|adam", default=None, help="sgd | momentum | adam [model default].")
@click.option("--constant-lr", is_flag=True, help="Train at a constant learning rate, not the model's published schedule.")
@click.option("--jit/--no-jit", default=None,
              help="XLA-compile the train step, or not [automatic: only for models without convolutions].")
@seed_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Work directory (created; an existing one of the same search is resumed).")
@json_option
@click.option("--verbose", is_flag=True, help="Log every validation point.")
def search(model: str, dataset: str, data_dir: Path | None, levels: str | None, target_sparsity: str | None,
           prune_fraction: str | None, rewind: str, rewind_step: str, scope: str, pattern: str, controls: str,
           keep_output: bool | None, first_layer_density: str | None, exclude: str, epochs: str | None,
           iterations: str | None, batch_size: str | None, learning_rate: str | None, optimizer: str | None,
           constant_lr: bool, jit: bool | None, seed: int, out: Path, json_path: Path | None, verbose: bool) -> None:
    """Find a winning ticket by iterative magnitude pruning with rewinding.

    Resumable: run the same command again after an interruption and it continues from the last
    finished level; a finished search is not redone.
    """
    from edge_lottery.config import SearchConfig

    if levels is None and target_sparsity is None:
        raise ConfigError(expected("stopping rule", "--levels N or --target-sparsity S", "neither"))
    if levels is not None and target_sparsity is not None:
        raise ConfigError(expected("stopping rule", "--levels or --target-sparsity, not both", "both"))
    config = SearchConfig(
        model=model, dataset=dataset, levels=parse_number("--levels", levels, int),
        target_sparsity=parse_number("--target-sparsity", target_sparsity, float),
        prune_fraction=parse_number("--prune-fraction", prune_fraction, float), keep_output=keep_output,
        first_layer_density=parse_number("--first-layer-density", first_layer_density, float),
        exclude=parse_list(exclude), rewind=rewind, rewind_step=parse_number("--rewind-step", rewind_step, int),
        scope=scope, pattern=pattern, controls=parse_list(controls), seed=seed,
    )
    train = {
        "epochs": parse_number("--epochs", epochs, int), "iterations": parse_number("--iterations", iterations, int),
        "batch_size": parse_number("--batch-size", batch_size, int),
        "learning_rate": parse_number("--learning-rate", learning_rate, float), "optimizer": optimizer,
        "lr_schedule": "constant" if constant_lr else None,
    }
    if epochs is not None and iterations is not None:
        raise ConfigError(expected("training length", "--epochs or --iterations, not both", "both"))
    config.validate()  # fail fast, before TensorFlow loads
    setup_logging(verbose)
    from edge_lottery.search import LotteryTicketSearch

    overrides = {k: v for k, v in train.items() if v is not None}
    lts = LotteryTicketSearch(model, dataset, work_dir=out, config=config, data_dir=data_dir, progress=True,
                              jit_compile=jit, **overrides)
    result = lts.run()
    print_result(result, title=f"{lts.config.model} on {lts.config.dataset}")
    if json_path is not None:
        from edge_lottery.atomic import atomic_write_json

        atomic_write_json(json_path, result.summary)
