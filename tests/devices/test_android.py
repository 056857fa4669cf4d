"""The android target end to end through unmodified adbutils and the loopback adb stand-in,
plus the benchmark_model output parser (recorded formats, fuzzed) and Perfetto rail parsing."""

from __future__ import annotations

import sys

import pytest
import remote_models as rm
from adb_standin import AdbStandin
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import DeviceError
from devices.android.benchmark_output import OutputError, parse_benchmark_output, parse_stats
from devices.android.power import TraceError, encode_power_rails, parse_power_rails
from devices.settings import BenchSettings
from devices.targets import get_target

MODERN = """INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [model.tflite]
INFO: Loaded model model.tflite
VERBOSE: Replacing 58 out of 58 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 4.27635
INFO: Initialized session in 7.003ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=56903 curr=56276 min=56251 max=56903 avg=56415.2 std=245 p5=56251 median=56300 p95=56903
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=56282 curr=56234 min=56227 max=56707 avg=56283.9 std=79 p5=56230 median=56270 p95=56500
INFO: Inference timings in us: Init: 7003, First inference: 56903, Warmup (avg): 56415.2, Inference (avg): 56283.9
INFO: Memory footprint delta from the start of the tool (MB): init=5 overall=11.2695
INFO: Overall peak memory footprint (MB) via periodic monitoring: 93.2383
Memory status at the end of exeution:
- VmRSS              : 95 MB
"""

LEGACY = """STARTING!
Num threads: [1]
Graph: [/data/local/tmp/m.tflite]
Initialized session in 38.467ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=7 curr=83235(all same)
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=1.24027e+06 curr=1.2e+06 min=1.1e+06 max=1.3e+06 avg=1.24027e+06 std=2000
Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 1.24027e+06
"""


def test_modern_format():
    out = parse_benchmark_output(MODERN, final=True)
    assert (out.threads, out.graph, out.init_ms) == (4, "model.tflite", 7.003)
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (7003, 56903, 56415.2, 56283.9)
    assert out.warmup.count == 9 and out.run.count == 50 and out.run.median == 56270 and out.run.p95 == 56500
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (5, 11.2695, 93.2383)
    assert out.delegates == ["Created TensorFlow Lite XNNPACK delegate for CPU."]
    assert out.errors == []


def test_legacy_format_and_scientific_notation():
    out = parse_benchmark_output(LEGACY, final=True)
    assert out.inference_avg_us == 1.24027e6 and out.init_us == 38467 and out.warmup_avg_us == 83235
    assert out.warmup == parse_stats("count=7 curr=83235(all same)") and out.warmup.all_same
    assert out.run.avg == 1.24027e6 and out.run.p95 is None
    assert parse_stats("count=0").count == 0


def test_op_profiling_tables_do_not_count_as_runs():
    text = MODERN.replace("INFO: Inference timings", "Timings (microseconds): count=3 first=1 curr=1 min=1 max=1 "
                          "avg=1 std=0\nMemory (bytes): count=0\nINFO: Inference timings")
    assert parse_benchmark_output(text, final=True).run.count == 50


def test_no_timing_is_an_error():
    with pytest.raises(OutputError, match="no inference timing"):
        parse_benchmark_output("INFO: STARTING!\nERROR: Could not open 'x.tflite'.\n", final=True).require_timing()


FIELDS = ("threads", "graph", "init_ms", "init_us", "first_us", "warmup_avg_us", "inference_avg_us", "warmup",
          "run", "memory_init_mb", "memory_overall_mb", "peak_memory_mb", "model_size_mb")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([MODERN, LEGACY]), st.data())
def test_truncated_transcripts_never_give_wrong_values(text, data):
    full = parse_benchmark_output(text, final=True)
    cut = data.draw(st.integers(0, len(text)))
    part = parse_benchmark_output(text[:cut])
    for name in FIELDS:
        got = getattr(part, name)
        assert got is None or got == getattr(full, name), name


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([MODERN, LEGACY]), st.data())
def test_corrupted_transcripts_do_not_crash(text, data):
    pos = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.text(max_size=5))
    out = parse_benchmark_output(text[:pos] + junk + text[pos + 1:], final=True)
    v = out.latency_avg_us
    assert v is None or isinstance(v, float)


def test_power_rails_roundtrip_and_integration():
    samples = [(i, t, 1000 + 2 * t * (i + 1)) for t in range(0, 1001, 100) for i in (0, 1)]  # 2 and 4 mW
    rails = parse_power_rails(encode_power_rails({0: "CPU", 1: "GPU"}, samples))
    assert rails.names == {0: "CPU", 1: "GPU"} and len(rails.samples[0]) == 11
    assert rails.energy_between(250, 750) == pytest.approx((2 + 4) * 500 * 1e-6)
    assert rails.energy_between(250, 750, rails=["GPU"]) == pytest.approx(4 * 500 * 1e-6)
    with pytest.raises(TraceError):
        parse_power_rails(encode_power_rails({0: "CPU"}, samples)[:-3])


# ---------------------------------------------------------------- adb end to end

@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return rm.write_model(tmp_path_factory.mktemp("android"))


@pytest.fixture()
def fake_binary(tmp_path):
    src = (__import__("pathlib").Path(__file__).parent / "fake_benchmark_model.py").read_text()
    path = tmp_path / "benchmark_model"
    path.write_text(f"#!{sys.executable}\n" + src.split("\n", 1)[1])
    path.chmod(0o755)
    return path


def bench(port, model_path, binary, serial=None, **kw):
    extra = {"benchmark_model": str(binary), "adb_port": str(port), **kw.pop("extra", {})}
    target = get_target(f"android:{serial}" if serial else "android")
    return target.run(model_path, BenchSettings(runs=kw.pop("runs", 20), warmup=2, extra=extra, **kw))


def test_push_run_parse_pull_with_power_rails(tmp_path, model_path, fake_binary):
    with AdbStandin(tmp_path / "device", {"EMU01": "device"}, perfetto_power_w=1.5,
                    props={"ro.product.cpu.abi": "arm64-v8a"}) as adbd:
        (rec,) = bench(adbd.port, model_path, fake_binary, threads=2, delegate="none")
        pushed = (tmp_path / "device" / "data/local/tmp/edge_lottery").iterdir()
        names = {p.name for p in pushed}
    assert {"benchmark_model", "run.log"} <= names and any(n.startswith("model_") for n in names)
    assert any(r.startswith("host:tport:serial:EMU01") for r in adbd.requests)
    assert any(r.startswith("shell,v2:") and "--num_threads=2" in r and "--use_xnnpack=false" in r
               for r in adbd.requests)
    assert rec.target == "android:EMU01" and rec.environment["device"]["abi"] == "arm64-v8a"
    mean, p50 = rec.figure("latency_mean"), rec.figure("latency_p50")
    assert mean.kind == "measured" and mean.value > 0 and "count=20" in mean.note
    assert 0 <= p50.value <= rec.figure("latency_max").value and rec.figure("throughput").value == pytest.approx(1e3 / mean.value)
    energy = rec.figure("energy_per_inference")
    assert energy is not None and "ODPM power rails" in energy.note and "whole benchmark_model process" in energy.note
    total_s = energy.value * 1e-6 * 22 / 1.5  # 22 invocations at the fake rails' 1.5 W
    assert mean.value * 1e-3 * 20 <= total_s < 60
    assert rec.environment["device"]["power"].startswith("perfetto power rails")


def test_without_rails_energy_is_absent_and_labelled(tmp_path, model_path, fake_binary):
    with AdbStandin(tmp_path / "device", {"EMU01": "device"}, env={"FAKE_BM_FORMAT": "legacy"}) as adbd:
        (rec,) = bench(adbd.port, model_path, fake_binary, serial="EMU01")
    assert rec.figure("energy_per_inference") is None
    assert rec.environment["device"]["power"].startswith("unavailable: perfetto failed")
    assert rec.figure("latency_mean").value > 0  # legacy "Average inference timings" parsed


def test_v1_shell_protocol(tmp_path, model_path, fake_binary):
    with AdbStandin(tmp_path / "device", {"EMU01": "device"}, features="cmd") as adbd:
        (rec,) = bench(adbd.port, model_path, fake_binary, extra={"power": "off"})
    assert any(r.startswith("shell:") and "X4EXIT" in r for r in adbd.requests)
    assert rec.figure("latency_mean").value > 0


@pytest.mark.parametrize("devices, serial, needle", [
    ({}, None, "no Android device attached"),
    ({"A1": "offline"}, None, "is offline; replug the cable or run `adb reconnect`"),
    ({"A1": "unauthorized"}, None, "accept the 'Allow USB debugging' prompt"),
    ({"A1": "device", "B2": "device"}, None, "choose one with --target android:SERIAL"),
    ({"A1": "device"}, "Z9", "'Z9' is not attached"),
])
def test_device_state_errors(tmp_path, model_path, fake_binary, devices, serial, needle):
    with AdbStandin(tmp_path / "device", devices) as adbd:
        with pytest.raises(DeviceError) as err:
            bench(adbd.port, model_path, fake_binary, serial=serial)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_binary_crash(tmp_path, model_path, fake_binary):
    with AdbStandin(tmp_path / "device", {"EMU01": "device"}, env={"FAKE_BM_FORMAT": "crash"}) as adbd:
        with pytest.raises(DeviceError, match=r"exited with code 139 \(killed by signal 11\) on EMU01"):
            bench(adbd.port, model_path, fake_binary, extra={"power": "off"})


def test_delegate_failure_and_argument_errors(tmp_path, model_path, fake_binary):
    with AdbStandin(tmp_path / "device", {"EMU01": "device"}) as adbd:
        with pytest.raises(DeviceError, match="Failed to apply GPU delegate"):
            bench(adbd.port, model_path, fake_binary, delegate="gpu", extra={"power": "off"})
        with pytest.raises(DeviceError, match="--option benchmark_model=PATH"):
            get_target("android").run(model_path, BenchSettings(extra={"adb_port": str(adbd.port)}))
        with pytest.raises(DeviceError, match="delegate for android"):
            bench(adbd.port, model_path, fake_binary, delegate="sparse")


def test_no_adb_server(model_path, fake_binary):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DeviceError, match="no adb server at 127.0.0.1:.*adb start-server"):
        bench(port, model_path, fake_binary)
