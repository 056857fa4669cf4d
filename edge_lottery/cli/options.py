"""Options shared by several subcommands, defined once."""

from __future__ import annotations

from pathlib import Path

import click

seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed for everything.")
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="EDGE_LOTTERY_DATA_DIR",
    default=None,
    help="Directory with mnist / fashion_mnist files (.npz or IDX); env EDGE_LOTTERY_DATA_DIR.",
)
force_option = click.option("--force", is_flag=True, help="Overwrite an existing output.")
json_option = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write machine-readable results to this file.",
)
