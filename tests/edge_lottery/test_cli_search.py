"""``edge-lottery search`` / ``demo``: one-line errors for bad input, and a real small search."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edge_lottery import masks as masks_lib
from edge_lottery.cli import main

BASE = ["search", "--model", "lenet_300_100", "--dataset", "digits", "--levels", "1"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--prune-fraction", "1.5"], "prune_fraction: expected a number in (0, 1), received 1.5"),
        (["--prune-fraction", "lots"], "--prune-fraction: expected a number, received 'lots'"),
        (["--rewind", "back"], "rewind: expected one of weights, lr, finetune, received 'back'"),
        (["--pattern", "4:8"], "pattern: expected one of unstructured"),
        (["--scope", "local"], "scope: expected one of global, layerwise"),
        (["--controls", "reinit,bogus"], "controls: expected one of reinit, random_prune, received 'bogus'"),
        (["--rewind-step", "-3"], "rewind_step"),
        (["--target-sparsity", "0.5"], "not both"),
        (["--epochs", "2", "--iterations", "10"], "not both"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, args, fragment):
    result = CliRunner().invoke(main, [*BASE, "--out", str(tmp_path / "w"), *args])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "w").exists()


def test_unknown_names_and_stopping_rule_in_a_real_process(tmp_path):
    cases = [
        (["search", "--model", "resnet9000", "--dataset", "digits", "--levels", "1"], "one of lenet_300_100"),
        (["search", "--model", "lenet_300_100", "--dataset", "cifar", "--levels", "1"], "one of digits"),
        (["search", "--model", "lenet_300_100", "--dataset", "digits"], "--levels N or --target-sparsity S"),
        (["search", "--model", "lenet_300_100", "--dataset", "digits", "--levels", "1", "--pattern", "block16x1",
          "--prune-output"], "at least one full block"),
    ]
    for args, fragment in cases:
        proc = subprocess.run([sys.executable, "-m", "edge_lottery", *args, "--out", str(tmp_path / "w")],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert not (tmp_path / "w").exists()


def test_search_command_runs_and_prints_the_table(tmp_path):
    out = tmp_path / "cli"
    summary_copy = tmp_path / "summary.json"
    args = [*BASE, "--epochs", "1", "--pattern", "block16x1", "--keep-output", "--no-jit", "--prune-fraction", "0.25",
            "--controls", "reinit", "--seed", "3", "--out", str(out), "--json", str(summary_copy)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "best ticket: level" in result.output and "accuracy_vs_density.png" in result.output
    assert "reinit" in result.output
    summary = json.loads(summary_copy.read_text())
    assert summary["config"]["seed"] == 3 and summary["config"]["pattern"] == "block16x1"
    assert [(r["level"], r["branch"]) for r in summary["levels"]] == [(0, "ticket"), (1, "ticket"), (1, "reinit")]
    with np.load(out / "level_1" / "masks.npz") as z:
        masks = {k: z[k] for k in z.files}
    assert set(masks) == {"fc1/kernel", "fc2/kernel"}
    assert all(masks_lib.is_block_pattern(m, "block16x1") for m in masks.values())
    assert masks_lib.density(masks) == pytest.approx(0.75, abs=0.01)
    # the same command again is a no-op that prints the same table
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "best ticket: level" in again.output


def test_demo_end_to_end(tmp_path):
    """The Quick start's `edge-lottery demo`: search, export, bench, as a user runs it."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "edge_lottery", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "best ticket: level" in proc.stdout
    summary = json.loads((out / "search" / "summary.json").read_text())
    dense = next(r for r in summary["levels"] if r["level"] == 0)
    assert dense["test_accuracy"] > 0.95
    assert {r["branch"] for r in summary["levels"]} == {"ticket", "reinit"}
    assert (out / "search" / "accuracy_vs_density.png").is_file()
    # export: the packed ticket is smaller than the packed dense model, C sources are there
    best = max(int(p.name.split("_")[1]) for p in (out / "export").glob("level_*_tflm.tflite"))
    assert best > 0
    assert (out / "export" / f"level_{best}_tflm.tflite").stat().st_size < \
        (out / "export" / "level_0_tflm.tflite").stat().st_size
    assert (out / "export" / "model_data.h").is_file()
    # bench: every target answered for the ticket, estimates are labelled as such
    records = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" for r in records)
    targets = {r["target"] for r in records}
    assert {"host", "tflm", "estimate:cortex-m4-80mhz", "serial:virtual-board"} <= targets
    for r in records:
        kinds = {f["kind"] for f in r["figures"] if f["name"].startswith("latency")}
        assert kinds == ({"estimated"} if r["target"].startswith("estimate") else {"measured"}), r["target"]
    assert list((out / "plots").glob("*.png"))


def test_constant_lr_flag_replaces_the_published_schedule(tmp_path):
    """lenet5's registry schedule is Caffe 'inv'; --constant-lr trains (and records) a constant rate,
    and the work directory then refuses the published schedule as a different search."""
    out = tmp_path / "lenet5"
    args = ["search", "--model", "lenet5", "--dataset", "digits", "--levels", "0", "--iterations", "20",
            "--no-jit", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--constant-lr"])
    assert result.exit_code == 0, result.output
    train = json.loads((out / "search.json").read_text())["config"]["train"]
    assert train["lr_schedule"] == "constant" and train["learning_rate"] == 0.01
    other = CliRunner().invoke(main, args)
    assert other.exit_code == 1
    assert "config_hash differs: train.lr_gamma: recorded 0.1, given 0.0001" in other.output
    assert len(other.output.strip().splitlines()) == 1
