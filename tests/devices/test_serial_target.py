"""``serial:PORT`` end to end: BenchSettings in, BenchRecords out, against the virtual board."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import remote_models as rm

from devices import DeviceError
from devices.settings import BenchSettings
from devices.targets import get_target
from devices.virtual_board import VirtualBoard


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return rm.write_model(tmp_path_factory.mktemp("serial"))


def test_performance_record(model_path):
    with VirtualBoard(model_path.read_bytes()) as board:
        addr = board.serve()  # pty
        target = get_target(f"serial:{addr}")
        settings = BenchSettings(runs=20, warmup=2, timeout_s=5.0, extra={"windows": "3"})
        (rec,) = target.run(model_path, settings)
    assert rec.status == "ok" and rec.target == f"serial:{addr}"
    assert rec.settings["runs"] == 20 and rec.settings["extra"]["windows"] == "3"
    dev = rec.environment["device"]
    assert (dev["kind"], dev["device"], dev["timestamp_mode"]) == ("serial", "dut", "performance")
    p50, thr = rec.figure("latency_p50"), rec.figure("throughput")
    assert p50.kind == thr.kind == "measured" and p50.value > 0 and thr.value > 0
    assert "not a valid MLPerf Tiny result" in thr.note  # 3 windows, each far below 10 s
    assert rec.figure("energy_per_inference") is None  # never without an instrument


def test_accuracy_record_matches_direct_interpreter(model_path, tmp_path):
    from devices.virtual_board import ModelRunner

    _, _, x_test, y_test = rm.digits_split()
    inputs = tmp_path / "digits.npz"
    np.savez(inputs, x=x_test[:25], y=y_test[:25])
    with VirtualBoard(model_path.read_bytes()) as board:
        target = get_target(f"serial:{board.serve(tcp=0)}")
        (rec,) = target.run(model_path, BenchSettings(mode="accuracy", inputs=str(inputs), timeout_s=5.0))
    runner = ModelRunner(model_path.read_bytes())
    model = model_path.read_bytes()
    correct = 0
    for x, y in zip(x_test[:25], y_test[:25], strict=True):
        runner.load(rm.quantize_input(model, x))
        runner.infer()
        correct += int(np.argmax(runner.scores()) == y)
    acc = rec.figure("accuracy_top1")
    assert acc.kind == "measured" and acc.value == correct / 25 and "n=25" in acc.note


def test_energy_record_with_lpm01a(model_path):
    with VirtualBoard(model_path.read_bytes(), energy=True, seed=1) as board:
        addr = board.serve(tcp=0)
        monitor = board.serve_power_monitor()  # pty
        settings = BenchSettings(mode="energy", runs=40, warmup=1, timeout_s=5.0,
                                 extra={"windows": "3", "instrument": f"lpm01a:{monitor},freq=10k"})
        (rec,) = get_target(f"serial:{addr}").run(model_path, settings)
    e = rec.figure("energy_per_inference")
    assert e.kind == "estimated" and e.unit == "uJ"  # the virtual board's trace is simulated, never "measured"
    assert e.note.startswith("simulated by the virtual board")
    assert e.value == pytest.approx(9.0, rel=0.03)  # 5 mA x 1.8 V x 1 ms, +-2 % jitter
    assert "lpm01a" in e.note and rec.environment["device"]["instrument"].startswith("lpm01a:")
    assert rec.figure("latency_p50").value == pytest.approx(1.0, rel=0.01)  # edges / N, in ms


def test_energy_mode_needs_an_instrument(model_path):
    with pytest.raises(DeviceError, match="--option instrument=lpm01a:PORT"):
        get_target("serial:/dev/null").run(model_path, BenchSettings(mode="energy"))


def test_missing_port(model_path):
    with pytest.raises(DeviceError) as err:
        get_target("serial:/dev/ttyNOPE9").run(model_path, BenchSettings())
    assert "cannot open benchmark device port '/dev/ttyNOPE9'" in str(err.value) and "\n" not in str(err.value)


def test_refused_tcp_port(model_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(DeviceError, match="cannot open benchmark device port"):
        get_target(f"serial:socket://127.0.0.1:{port}").run(model_path, BenchSettings())


def test_busy_port(model_path):
    import serial

    with VirtualBoard(model_path.read_bytes()) as board:
        addr = board.serve()
        holder = serial.Serial(addr, exclusive=True)
        try:
            with pytest.raises(DeviceError) as err:
                get_target(f"serial:{addr}").run(model_path, BenchSettings())
        finally:
            holder.close()
    assert "close the program that holds it" in str(err.value)


def test_port_that_is_not_a_benchmark_device(model_path):
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    stop = threading.Event()

    def chatter():  # a device that prints NMEA-like sentences and ignores commands
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(0.05)
        while not stop.is_set():
            try:
                conn.sendall(b"$GPGGA,123519,4807.038,N\r\n")
                conn.recv(100)
            except (TimeoutError, OSError):
                pass
            stop.wait(0.05)
        conn.close()

    t = threading.Thread(target=chatter, daemon=True)
    t.start()
    try:
        with pytest.raises(DeviceError, match="not answering as an MLPerf Tiny benchmark device"):
            get_target(f"serial:socket://127.0.0.1:{srv.getsockname()[1]}").run(
                model_path, BenchSettings(timeout_s=0.5, extra={"retries": "1"}))
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()


def test_cli_bench_against_the_virtual_board(model_path, tmp_path):
    import json

    from click.testing import CliRunner

    from edge_lottery.cli import main

    out = tmp_path / "r.jsonl"
    with VirtualBoard(model_path.read_bytes()) as board:
        addr = board.serve(tcp=0)
        res = CliRunner().invoke(main, ["bench", str(model_path), "--target", f"serial:{addr}", "--runs", "30",
                                        "-o", "windows=2", "--json", str(out)])
        assert res.exit_code == 0, res.output
        bad = CliRunner().invoke(main, ["bench", str(model_path), "--target", f"serial:{addr}", "--mode", "energy"])
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["target"] == f"serial:{addr}" and rec["environment"]["device"]["vendor"] == "edge-lottery-virtual-board"
    assert {f["name"] for f in rec["figures"]} >= {"latency_p50", "throughput"}
    assert bad.exit_code == 1 and "instrument=lpm01a:PORT" in bad.output
