"""``edge-lottery bench``: measuring by default, JSON lines, one-line errors, help."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_models import packed_model, tiny_model, unsupported_model
from click.testing import CliRunner

from devices.records import read_jsonl
from edge_lottery.cli import main


def _bench(*args: str):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_bench_host_writes_jsonl_and_prints_a_table(tmp_path):
    out = tmp_path / "r.jsonl"
    model = tiny_model("conv", True)
    result = _bench(str(model), "--target", "host", "--runs", "5", "--warmup", "1", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "edge-lottery bench" in result.output and "conv_int8.tflite" in result.output
    assert "measured" in result.output
    records = read_jsonl(out)
    assert len(records) == 1 and records[0].target == "host" and records[0].settings["runs"] == 5
    assert records[0].figure("latency_p50").note.startswith("n=5")
    # a second run appends
    assert _bench(str(model), "--runs", "3", "--json", str(out)).exit_code == 0
    assert len(read_jsonl(out)) == 2


def test_bench_estimate_marks_estimates(tmp_path):
    out = tmp_path / "r.jsonl"
    result = _bench(str(tiny_model("conv", True)), str(tiny_model("dense", False)),
                    "-t", "estimate:cortex-m7-480mhz", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "estimated" in result.output
    records = read_jsonl(out)
    assert [r.target for r in records] == ["estimate:cortex-m7-480mhz"] * 2
    assert all(f.kind == "estimated" for r in records for f in r.figures if f.name != "model_size")
    assert '"kind": "estimated"' in out.read_text()


def test_bench_several_targets_and_profile_ops(tmp_path):
    out = tmp_path / "r.jsonl"
    result = _bench(str(tiny_model("conv", True)), "-t", "tflm", "-t", "estimate:cortex-m4-80mhz",
                    "--runs", "3", "--profile-ops", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "per operator" in result.output and "CONV_2D" in result.output
    targets = [r.target for r in read_jsonl(out)]
    assert targets == ["tflm", "estimate:cortex-m4-80mhz"]


def test_missing_model_is_one_line_and_exit_1(tmp_path):
    result = _bench(str(tmp_path / "nope.tflite"), "--json", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: model") and "nope.tflite" in lines[0]
    assert not (tmp_path / "r.jsonl").exists()


def test_bad_target_is_one_line(tmp_path):
    result = _bench(str(tiny_model("conv")), "--target", "gpu")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "host, tflm, serial:PORT" in lines[0]
    result = _bench(str(tiny_model("conv")), "--target", "estimate:cortex-m99")
    assert result.exit_code == 1 and "cortex-m4-80mhz" in result.output


def test_model_the_target_cannot_run_keeps_the_others(tmp_path):
    out = tmp_path / "r.jsonl"
    models = [str(unsupported_model("topk")), str(tiny_model("conv", True))]
    result = _bench(*models, "-t", "tflm", "--runs", "2", "--json", str(out))
    assert result.exit_code == 1
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "TOPK_V2" in errors[0] and "edge-lottery inspect" in errors[0]
    records = read_jsonl(out)
    assert [r.status for r in records] == ["failed", "ok"]
    assert "TOPK_V2" in records[0].error
    packed = packed_model()
    if packed is not None:
        result = _bench(str(packed), "-t", "host")
        assert result.exit_code == 1 and "--target tflm" in result.output


@pytest.mark.parametrize("target", ["host", "tflm", "estimate:cortex-m4-80mhz"])
def test_truncated_model_is_one_line_on_every_target(tmp_path, target):
    good = tiny_model("conv").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(good[: len(good) // 3])  # identifier intact, tables cut off
    result = _bench(str(bad), "-t", target, "--runs", "2")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "cannot parse" in lines[0], result.output


def test_model_that_crashes_tflite_micro_is_one_line(tmp_path, oversized_weight_shape):
    """A weight shape far larger than its data (one corrupted field of a real model) makes the stock
    TFLite-Micro interpreter read past the buffer and crash; the tflm target runs models in its own
    process, so it checks each one in a child process first."""
    bad = tmp_path / "crash.tflite"
    bad.write_bytes(oversized_weight_shape(tiny_model("dense", int8=True).read_bytes()))
    result = _bench(str(bad), "-t", "tflm", "--runs", "2")
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "TFLite-Micro crashed (signal" in lines[0], result.output


def test_unreadable_inputs_file_is_one_line(tmp_path):
    import numpy as np

    model = str(tiny_model("conv"))
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    cut = tmp_path / "cut.npz"
    np.savez(cut, x=np.zeros((4, 100), np.float32))
    cut.write_bytes(cut.read_bytes()[:200])
    for path, needle in ((text, "zip archive"), (single, "single .npy array"), (cut, "cannot read it")):
        result = _bench(model, "--inputs", str(path), "--runs", "2")
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and needle in lines[0], result.output
        assert "--inputs" in lines[0] and "Traceback" not in result.output


def test_bad_option_values_are_one_line():
    result = _bench(str(tiny_model("conv")), "--runs", "0")
    assert result.exit_code == 1 and "runs: expected an integer >= 1" in result.output
    result = CliRunner().invoke(main, ["bench", str(tiny_model("conv")), "-o", "novalue"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_help_and_list_profiles():
    result = _bench("--help")
    assert result.exit_code == 0
    assert "compare" in result.output and "--target" in result.output and "--runs" in result.output
    result = _bench("compare", "--help")
    assert result.exit_code == 0 and "--summary" in result.output and "--out" in result.output
    result = _bench("--list-profiles")
    assert result.exit_code == 0
    assert "cortex-m4-80mhz" in result.output and "raspberry-pi-4" in result.output


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_killed_cli_takes_its_host_worker_with_it(tmp_path):
    """A CLI killed by SIGKILL (no chance to clean up) must not leave its measuring worker timing
    10^8 runs on a core; the worker asks the kernel to kill it when its parent dies."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "edge_lottery", "bench", str(tiny_model("conv", True)), "-t", "host",
           "--runs", "100000000", "--timeout", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (workers := _children(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
            time.sleep(0.1)
        time.sleep(2.0)  # past its start-up: reading the request and arming the parent-death signal
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "the host worker outlived the killed CLI"


def test_ctrl_c_keeps_records_already_measured(tmp_path):
    """SIGINT while the second target measures: the first record is on disk, exit code 130."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "edge_lottery", "bench", str(tiny_model("conv", True)),
           "-t", "estimate:cortex-m4-80mhz", "-t", "host", "--runs", "100000000", "--timeout", "600",
           "--json", str(out)]
    # SIG_DFL in the child: a test run started in the background by a shell ignores SIGINT, the
    # child would inherit that, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the estimate record never appeared"
            time.sleep(0.1)
        time.sleep(1.0)  # the host worker is now running its long loop
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Interrupted" in err
    records = read_jsonl(out)
    assert [r.target for r in records] == ["estimate:cortex-m4-80mhz"]
