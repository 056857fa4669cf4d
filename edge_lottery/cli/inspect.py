"""``edge-lottery inspect``: a thin command over :func:`converters.inspect.inspect_model`."""

from __future__ import annotations

from pathlib import Path

import click

from edge_lottery.cli.options import json_option
from edge_lottery.errors import expected


@click.command(help="Show operators, tensors, sparsity, DECODE encodings and MACs of MODEL (.tflite).")
@click.argument("model", type=click.Path(path_type=Path))
@json_option
def inspect(model: Path, json_path: Path | None) -> None:
    from converters import ConverterError
    from converters.inspect import format_text, inspect_model
    from edge_lottery.atomic import atomic_write_json

    if not model.is_file():
        raise ConverterError(expected("MODEL", "an existing .tflite file", str(model)))
    info = inspect_model(model.read_bytes())
    click.echo(format_text(info))
    if json_path is not None:
        atomic_write_json(json_path, {"file": str(model), **info.to_dict()})
        click.echo(f"wrote {json_path}")
