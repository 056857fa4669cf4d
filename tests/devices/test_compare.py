"""``edge-lottery bench compare`` and devices.compare: tables, summary join, plots."""

from __future__ import annotations

import json
import shutil

import pytest
from bench_models import tiny_model
from click.testing import CliRunner

from devices.compare import accuracy_of, comparison_tables, format_value, latest, load_summary, model_level
from devices.records import BenchRecord, Figure, append_jsonl, read_jsonl
from devices.settings import BenchSettings
from devices.targets.estimate import make_target
from devices.targets.host import HostTarget
from edge_lottery.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def level_models(tmp_path_factory):
    """A fake search work dir: level_0 (float conv), level_1 (int8 conv), level_2 (int8 dense)."""
    root = tmp_path_factory.mktemp("search")
    for level, (kind, int8) in enumerate([("conv", False), ("conv", True), ("dense", True)]):
        (root / f"level_{level}").mkdir()
        shutil.copy(tiny_model(kind, int8), root / f"level_{level}" / "model.tflite")
    summary = {"best_level": 2, "levels": [
        {"level": 0, "branch": "ticket", "density": 1.0, "test_accuracy": 0.95},
        {"level": 1, "branch": "ticket", "density": 0.8, "test_accuracy": 0.94},
        {"level": 2, "branch": "ticket", "density": 0.64, "test_accuracy": 0.90},
        {"level": 1, "branch": "reinit", "density": 0.8, "test_accuracy": 0.5},
    ]}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="module")
def results(level_models, tmp_path_factory):
    path = tmp_path_factory.mktemp("results") / "r.jsonl"
    settings = BenchSettings(runs=5, warmup=1)
    for level in range(3):
        model = level_models / f"level_{level}" / "model.tflite"
        append_jsonl(path, HostTarget(in_process=True).run(model, settings))
        append_jsonl(path, make_target("cortex-m4-80mhz").run(model, settings))
    return path


def test_summary_join_by_level(level_models, results):
    rows = load_summary(level_models)
    assert sorted(rows) == [0, 1, 2] and rows[1]["test_accuracy"] == 0.94  # reinit branch ignored
    assert model_level(str(level_models / "level_2" / "model.tflite")) == 2
    assert model_level("lenet_level13.tflite") == 13 and model_level("model.tflite") is None
    record = read_jsonl(results)[2]
    assert accuracy_of(record, rows) == (0.94, "search")


def test_compare_writes_plots_and_tables(results, level_models, tmp_path):
    out = tmp_path / "plots"
    result = CliRunner().invoke(main, ["bench", "compare", str(results), "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "latency_p50" in result.output and "estimated" in result.output
    assert "estimate:cortex-m4-80mhz" in result.output and "host" in result.output
    names = sorted(p.name for p in out.glob("*.png"))
    # the summary.json next to the models is found: accuracy plots too
    assert names == ["energy_per_inference_vs_accuracy.png", "energy_per_inference_vs_model_size.png",
                     "latency_p50_vs_accuracy.png", "latency_p50_vs_model_size.png"]
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000


def test_compare_accepts_explicit_summary(results, level_models, tmp_path):
    out = tmp_path / "plots"
    result = CliRunner().invoke(main, ["bench", "compare", str(results), "--out", str(out), "--summary",
                                       str(level_models / "summary.json"), "--metric", "macs"])
    assert result.exit_code == 0, result.output
    assert "2,736 MACs (estimated)" in result.output
    assert (out / "latency_p50_vs_accuracy.png").read_bytes().startswith(PNG)


def test_compare_bad_inputs_are_one_line(tmp_path):
    corrupt = tmp_path / "bad.jsonl"
    corrupt.write_text("{not json\n")
    for args in (["bench", "compare", str(corrupt)], ["bench", "compare", str(tmp_path / "none.jsonl")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "bad.jsonl:1" in CliRunner().invoke(main, ["bench", "compare", str(corrupt)]).output


def test_latest_keeps_newest_per_model_and_target():
    def rec(ts: str, value: float) -> BenchRecord:
        return BenchRecord("m", "h", "host", {}, {}, (Figure("latency_p50", value, "ms", "measured"),),
                           timestamp=ts)
    chosen = latest([rec("2026-01-01T00:00:00Z", 1.0), rec("2026-01-02T00:00:00Z", 2.0)])
    assert len(chosen) == 1 and chosen[0].value("latency_p50") == 2.0
    tables = comparison_tables(chosen)
    assert [t.title for t in tables] == ["latency_p50"]


def test_format_value_units_and_kind():
    assert format_value(Figure("latency_p50", 0.0123, "ms", "measured")) == "12.3 µs"
    assert format_value(Figure("latency_p50", 12.3, "ms", "estimated")) == "12.3 ms (estimated)"
    assert format_value(Figure("arena_bytes", 2072, "bytes", "measured")) == "2072 B"
    assert format_value(Figure("energy_per_inference", 1590, "uJ", "estimated")) == "1.59 mJ (estimated)"
    assert format_value(Figure("accuracy_top1", 0.9, "fraction", "measured")) == "90.00 %"
    assert format_value(None) == "-"
