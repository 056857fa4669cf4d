"""``edge-lottery bench``: measure models on a target; ``bench compare``: tables and plots.

``bench`` is a click group whose default command measures: ``edge-lottery bench m.tflite
--target host`` runs the hidden ``run`` command, and ``edge-lottery bench compare r.jsonl``
the comparison. Records are appended to the ``--json`` file as each model finishes, so Ctrl-C
keeps what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edge_lottery.cli.options import json_option, seed_option
from edge_lottery.errors import EdgeLotteryError

DEFAULT_COMMAND = "run"


class BenchGroup(click.Group):
    """A group that treats anything that is not a subcommand as arguments of ``run``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # No arguments: click shows the group's help (which lists the measuring options too).
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help(ctx, formatter)
        run_cmd = self.commands[DEFAULT_COMMAND]
        with ctx.scope(cleanup=False):
            sub_ctx = click.Context(run_cmd, info_name="bench", parent=ctx.parent)
            records = [p.get_help_record(sub_ctx) for p in run_cmd.get_params(sub_ctx)]
        with formatter.section("Measuring options (edge-lottery bench MODEL... [OPTIONS])"):
            formatter.write_dl([r for r in records if r is not None])


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Measure latency, memory and energy of .tflite models on a target.

    \b
    edge-lottery bench MODEL... --target host|tflm|serial:PORT|android[:SERIAL]|estimate:PROFILE
    edge-lottery bench compare RESULTS.jsonl... [--out DIR] [--summary WORK_DIR]
    edge-lottery bench --list-profiles
    """


def _parse_options(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, received {pair!r}", param_hint="--option")
        out[key.strip()] = value.strip()
    return out


@bench.command(name=DEFAULT_COMMAND, hidden=True)
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "-t", "targets", multiple=True, default=("host",), show_default=True,
              help="host | tflm | serial:PORT | android[:SERIAL] | estimate:PROFILE[@MHZ]; repeatable.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed inferences per model.")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed inferences first.")
@click.option("--threads", type=int, default=1, show_default=True, help="Interpreter threads (host, android).")
@click.option("--delegate", default="default", show_default=True,
              help="default (XNNPACK) | none | sparse (project delegate) | path to a delegate .so.")
@click.option("--mode", type=click.Choice(["performance", "accuracy", "energy"]), default="performance",
              show_default=True, help="What to measure.")
@click.option("--inputs", type=click.Path(dir_okay=False), default=None,
              help="An .npz of inputs (x / x_test / input names); random seeded inputs otherwise.")
@click.option("--labels", type=click.Path(dir_okay=False), default=None,
              help="An .npz of labels (y / y_test) for --mode accuracy.")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True,
              help="Seconds allowed for the timed runs of one model.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Target-specific option, e.g. input_scale=0.00392, arena=4096, baud=115200.")
@click.option("--profile-ops", is_flag=True, help="Add per-operator MACs and (estimated) latency shares.")
@click.option("--list-profiles", is_flag=True, help="List the estimate profiles and exit.")
@json_option
@seed_option
def run_command(models: tuple[Path, ...], targets: tuple[str, ...], runs: int, warmup: int, threads: int,
                delegate: str, mode: str, inputs: str | None, labels: str | None, timeout_s: float,
                options: tuple[str, ...], profile_ops: bool, list_profiles: bool, json_path: Path | None,
                seed: int) -> None:
    """Measure MODEL... on each --target; print a table and append JSON lines to --json."""
    from rich.console import Console

    console = Console()
    if list_profiles:
        _print_profiles(console)
        return
    if not models:
        raise click.UsageError("give at least one MODEL (.tflite), or --list-profiles")
    from devices import DeviceError
    from devices.environment import host_environment
    from devices.records import append_jsonl, failed_record
    from devices.settings import BenchSettings
    from devices.targets import get_target

    missing = [m for m in models if not m.is_file()]
    if missing:
        for m in missing:
            click.echo(f"Error: model {m} does not exist; give the path of a .tflite file "
                       "(edge-lottery export writes them)", err=True)
        raise SystemExit(1)
    extra = _parse_options(options)
    if profile_ops:
        extra["profile_ops"] = "1"
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads, delegate=delegate, inputs=inputs,
                             labels=labels, mode=mode, timeout_s=timeout_s, extra=extra)
    resolved = [(spec, get_target(spec)) for spec in targets]
    for _, target in resolved:
        if hasattr(target, "seed"):
            target.seed = seed
    done = []
    failures = 0
    for model in models:
        for spec, target in resolved:
            try:
                records = target.run(model, settings)
            except DeviceError as exc:
                failures += 1
                click.echo(f"Error: {model} on {spec}: {exc}", err=True)
                records = [failed_record(model, getattr(target, "name", spec), settings.to_json(),
                                         host_environment(), str(exc))]
            if json_path is not None:
                append_jsonl(json_path, records)
            done.extend(records)
    _print_records(console, done)
    if json_path is not None:
        console.print(f"appended {len(done)} record(s) to {json_path}")
    if failures:
        raise SystemExit(1)


def _print_records(console: Any, records: list[Any]) -> None:
    from devices.compare import op_table, records_table

    ok = [r for r in records if r.status == "ok"]
    if ok:
        console.print(records_table(ok))
        for record in ok:
            table = op_table(record)
            if table is not None:
                console.print(table)


def _print_profiles(console: Any) -> None:
    from rich.table import Table

    from devices.profiles import list_profiles, load_profile

    table = Table(title="estimate profiles (use --target estimate:NAME or estimate:NAME@MHZ)")
    table.add_column("name", no_wrap=True)
    for column in ("core", "clock", "int8 conv cycles/MAC", "active power", "description"):
        table.add_column(column)
    for name in list_profiles():
        p = load_profile(name)
        power = p.energy.get("active_power_mw") or 0
        table.add_row(name, p.core, f"{p.clock_mhz:g} MHz", f"{p.cpm('CONV_2D', 'int8'):g}",
                      f"{power:g} mW" if power else "-", p.description)
    console.print(table)


@bench.command(name="compare")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write PNG plots (latency / energy vs model size and accuracy) here.")
@click.option("--summary", type=click.Path(path_type=Path), default=None,
              help="A search summary.json or work dir, to join accuracy per ticket level.")
@click.option("--metric", "metrics", multiple=True,
              help="Figures to tabulate (default: latency_p50, energy, memory, accuracy, size).")
def compare(results: tuple[Path, ...], out_dir: Path | None, summary: Path | None, metrics: tuple[str, ...]) -> None:
    """Side-by-side tables of RESULTS (.jsonl from `bench --json`) and, with --out, plots."""
    from rich.console import Console

    from devices.compare import comparison_tables, plot
    from devices.records import read_jsonl

    console = Console()
    records = []
    for path in results:
        records.extend(read_jsonl(path))
    if not records:
        raise EdgeLotteryError(f"no records in {', '.join(map(str, results))}; run `edge-lottery bench MODEL "
                               "--json FILE` first")
    for table in comparison_tables(records, metrics or None):
        console.print(table)
    failed = [r for r in records if r.status != "ok"]
    for r in failed:
        console.print(f"[red]failed[/red] {r.model} on {r.target}: {r.error}")
    if out_dir is not None:
        for path in plot(records, out_dir, summary):
            console.print(f"wrote {path}")


__all__ = ["bench"]
