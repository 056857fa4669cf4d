"""``edge-lottery export``: a thin command over :func:`converters.export.export`."""

from __future__ import annotations

from pathlib import Path

import click

from edge_lottery.cli.options import data_dir_option, force_option, seed_option
from edge_lottery.errors import ConfigError, expected

FORMATS = ("tflite", "tflm", "c", "archive")
QUANTIZE = ("float32", "float16", "dynamic", "int8", "int16x8")
PACK = ("auto", "huffman", "prune", "lut", "none")


def parse_level(value: str) -> int | str:
    if value == "best":
        return value
    try:
        return int(value)
    except ValueError:
        raise ConfigError(expected("--level", "'best' or a level number", value)) from None


@click.command(help="Quantize, pack and write SOURCE (a search work directory, .keras/.h5 file or SavedModel).")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="tflm", show_default=True,
              help="tflite flatbuffer, TFLite-Micro packed model, C++ source, or Deep Compression archive.")
@click.option("--quantize", type=click.Choice(QUANTIZE), default="int8", show_default=True)
@click.option("--pack", "pack_method", type=click.Choice(PACK), default="auto", show_default=True,
              help="TFLite-Micro DECODE encoding per weight (auto: smallest that pays off).")
@click.option("--representative", default=None,
              help="Dataset name (digits, mnist, fashion_mnist) or .npz file; default: the search's dataset.")
@click.option("--level", default="best", show_default=True, help="Search level to export: 'best' or a number.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output file.")
@click.option("--sparse", is_flag=True, help="TFLite sparse tensors for FC weights (--format tflite only).")
@click.option("--samples", default=100, show_default=True, type=int, help="Representative rows for calibration.")
@click.option("--no-arena", is_flag=True, help="Skip measuring the TFLite-Micro arena (faster).")
@force_option
@seed_option
@data_dir_option
def export(source: Path, fmt: str, quantize: str, pack_method: str, representative: str | None, level: str,
           out: Path, sparse: bool, samples: int, no_arena: bool, force: bool, seed: int,
           data_dir: Path | None) -> None:
    from rich.console import Console

    from converters.export import ExportOptions
    from converters.export import export as run_export
    from converters.report import print_table

    options = ExportOptions(format=fmt, quantize=quantize, pack=pack_method, representative=representative,
                            level=parse_level(level), sparse=sparse, force=force, num_samples=samples, seed=seed,
                            data_dir=str(data_dir) if data_dir else None, measure_arena=not no_arena)
    result = run_export(source, out, options)
    console = Console()
    if result.pack_report is not None:
        print_table(result.pack_report, console)
    for line in result.lines:
        console.print(line, highlight=False)
    for path in result.files:
        console.print(f"wrote {path}", highlight=False)
