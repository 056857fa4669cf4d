import subprocess
import sys

from click.testing import CliRunner

from edge_lottery.cli import SUBCOMMANDS, main


def test_every_subcommand_has_help():
    runner = CliRunner()
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output
        sub = runner.invoke(main, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)


def test_console_script_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_lottery", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert "edge-lottery" in proc.stdout
