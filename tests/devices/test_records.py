"""BenchRecord / Figure JSON lines, settings validation and the target registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from devices import DeviceError
from devices.records import (
    BenchRecord,
    Figure,
    append_jsonl,
    failed_record,
    latency_figures,
    model_sha256,
    read_jsonl,
)
from devices.settings import BenchSettings
from devices.targets import TARGET_KINDS, get_target, parse_target


def _record(i: int = 0) -> BenchRecord:
    return BenchRecord(
        model=f"m{i}.tflite", model_sha256="ab" * 32, target="host", settings=BenchSettings().to_json(),
        environment={"hostname": "x", "packages": {"numpy": np.__version__}},
        figures=(Figure("latency_p50", 1.5 + i, "ms", "measured", "n=5"),
                 Figure("energy_per_inference", 2.0, "uJ", "estimated")),
    )


def test_round_trip_keeps_every_field():
    record = _record()
    again = BenchRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record
    assert again.figure("latency_p50").kind == "measured"
    assert again.figure("energy_per_inference").kind == "estimated"
    assert again.figure("missing") is None
    assert record.timestamp.endswith("Z")


def test_append_then_read_keeps_order_and_appends(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [_record(0), _record(1)])
    append_jsonl(path, [_record(2)])
    records = read_jsonl(path)
    assert [r.model for r in records] == ["m0.tflite", "m1.tflite", "m2.tflite"]
    assert len(path.read_text().splitlines()) == 3


def test_corrupt_line_is_reported_by_number(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [_record(0)])
    with open(path, "a") as handle:
        handle.write('{"model": "half-writ')
    with pytest.raises(DeviceError, match=r"r\.jsonl:2: corrupt"):
        read_jsonl(path)


def test_record_with_wrong_kind_is_rejected(tmp_path):
    path = tmp_path / "r.jsonl"
    bad = _record().to_json()
    bad["figures"][0]["kind"] = "guessed"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(DeviceError, match=":1:.*kind"):
        read_jsonl(path)
    with pytest.raises(DeviceError, match="measured or estimated"):
        Figure("x", 1.0, "ms", "guessed")


def test_nan_values_survive_as_null(tmp_path):
    path = tmp_path / "r.jsonl"
    rec = _record().replace(figures=(Figure("accuracy_top1", math.nan, "fraction", "measured"),))
    append_jsonl(path, [rec])
    assert '"value": null' in path.read_text()
    assert math.isnan(read_jsonl(path)[0].figure("accuracy_top1").value)


def test_failed_record_keeps_the_error(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"abc")
    rec = failed_record(model, "tflm", {}, {}, "arena too small")
    assert rec.status == "failed" and rec.error == "arena too small" and rec.figures == ()
    assert rec.model_sha256 == model_sha256(b"abc") == model_sha256(model)


def test_latency_figures_are_ordered_percentiles():
    rng = np.random.default_rng(0)
    samples = rng.exponential(1e-3, size=200)
    figs = {f.name: f for f in latency_figures(samples)}
    assert figs["latency_min"].value <= figs["latency_p50"].value <= figs["latency_p90"].value \
        <= figs["latency_p99"].value
    assert figs["latency_min"].value <= figs["latency_mean"].value
    assert figs["latency_p50"].value == pytest.approx(np.median(samples) * 1e3)
    assert all(f.unit == "ms" and f.kind == "measured" for f in figs.values())
    us = {f.name: f for f in latency_figures(samples, kind="estimated", unit="us")}
    assert us["latency_p50"].value == pytest.approx(figs["latency_p50"].value * 1e3)
    assert us["latency_p50"].kind == "estimated"
    with pytest.raises(DeviceError, match="at least one"):
        latency_figures([])


@pytest.mark.parametrize("kwargs, match", [
    ({"runs": 0}, "runs"), ({"warmup": -1}, "warmup"), ({"threads": 0}, "threads"),
    ({"mode": "fast"}, "mode"), ({"timeout_s": 0}, "timeout"),
])
def test_settings_reject_bad_values(kwargs, match):
    with pytest.raises(DeviceError, match=match):
        BenchSettings(**kwargs)


def test_settings_round_trip_through_config():
    s = BenchSettings(runs=3, delegate="none", extra={"arena": 4096})
    assert s.extra["arena"] == "4096"
    assert BenchSettings.from_config(s.to_json()) == s
    with pytest.raises(DeviceError, match="keys"):
        BenchSettings.from_config({"runz": 3})


def test_parse_target_specs():
    assert parse_target("host") == ("host", None)
    assert parse_target("serial:/dev/ttyUSB0") == ("serial", "/dev/ttyUSB0")
    assert parse_target("android") == ("android", None)
    assert parse_target("estimate:cortex-m4-80mhz@120") == ("estimate", "cortex-m4-80mhz@120")
    with pytest.raises(DeviceError, match="host, tflm, serial:PORT"):
        parse_target("gpu")
    with pytest.raises(DeviceError, match="serial:PORT"):
        parse_target("serial:")


def test_get_target_builds_and_reports_missing_modules(monkeypatch):
    assert get_target("host").name == "host"
    assert get_target("estimate:cortex-m4-80mhz").name == "estimate:cortex-m4-80mhz"
    monkeypatch.setitem(TARGET_KINDS, "ghost", "devices.targets.ghost_that_does_not_exist")
    with pytest.raises(DeviceError, match="not available in this installation"):
        get_target("ghost")
