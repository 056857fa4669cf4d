"""The ``edge-lottery`` command line: a thin click group over the library.

Each subcommand lives in its own module and is imported only when it runs, so ``--help`` does
not pay for TensorFlow. User errors (:class:`~edge_lottery.errors.EdgeLotteryError`) become one
line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from edge_lottery import (
    __version__,
    _tf_env,  # noqa: F401
)
from edge_lottery.errors import EdgeLotteryError

# subcommand -> (module, attribute, one-line help shown by ``edge-lottery --help``)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "search": ("edge_lottery.cli.search", "search", "Find a winning ticket by iterative magnitude pruning."),
    "export": ("edge_lottery.cli.export", "export", "Quantize, pack and write a model for TFLite, TFLite-Micro or C."),
    "inspect": ("edge_lottery.cli.inspect", "inspect", "Show operators, tensors, sparsity and encodings of a .tflite file."),
    "bench": ("edge_lottery.cli.bench", "bench", "Measure latency, memory and energy on a target."),
    "demo": ("edge_lottery.cli.demo", "demo", "Run the whole pipeline on the embedded digits dataset."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = SUBCOMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, short_help = entry
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name, short_help)
        command = getattr(module, attribute)
        command.short_help = command.short_help or short_help
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if ctx.protected_args and not {"-h", "--help"} & set(ctx.args):
                _tf_env.import_tensorflow_quietly()
            return super().invoke(ctx)
        except EdgeLotteryError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; finished work is kept and a re-run resumes it.", err=True)
            sys.exit(130)


def _unavailable(name: str, short_help: str) -> click.Command:
    @click.command(name=name, short_help=short_help, help=short_help)
    def command() -> None:
        raise EdgeLotteryError(f"'{name}' is not available in this installation")

    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-lottery")
def main() -> None:
    """edge-lottery: find, compress and measure winning lottery tickets of Keras models."""


__all__ = ["main", "SUBCOMMANDS"]
