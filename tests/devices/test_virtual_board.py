"""The virtual board on its own: protocol quirks it must share with the upstream DUT, the
simulated power trace, and the ``python -m devices.virtual_board`` entry point."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import numpy as np
import pytest
import remote_models as rm

from devices.protocol import eembc
from devices.virtual_board import PowerSim, VirtualBoard, format_lpm_value


@pytest.fixture(scope="module")
def model() -> bytes:
    return rm.tiny_int8_model()


def raw_session(addr: str):
    import serial

    s = serial.serial_for_url(addr, timeout=0.05)
    return s


def read_until_ready(s, timeout=3.0) -> list[str]:
    buf = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        buf += s.read(max(1, s.in_waiting))
        if buf.endswith(b"m-ready\r\n"):
            break
    return re.split(r"\r?\n", buf.decode("ascii", "replace"))[:-1]


def test_upstream_reply_formats(model):
    with VirtualBoard(model) as board:
        s = raw_session(board.serve(tcp=0))
        time.sleep(0.1)
        s.reset_input_buffer()
        s.write(b"name%")
        assert read_until_ready(s) == ["m-name-dut-[edge-lottery-virtual-board]", "m-ready"]
        s.write(b"timestamp%")
        lines = read_until_ready(s)
        assert re.fullmatch(r"m-lap-us-\d+", lines[0]) and lines[-1] == "m-ready"
        s.write(b"db load 99999%")
        # no e- prefix and a bare \n, as upstream
        assert read_until_ready(s)[0] == "Supplied buffer size 99999 exceeds maximum of 27648"
        s.write(b"db load 3%")
        assert read_until_ready(s) == ["m-[Expecting 3 bytes]", "m-ready"]
        s.write(b"db 0a0%")
        assert read_until_ready(s) == ["e-[Insufficent number of hex digits]", "m-ready"]
        s.write(b"db 0a0bzz%")
        assert read_until_ready(s) == ["e-[Invalid hex digit 'zz']", "m-ready"]
        s.write(b"db 0c0d%")  # 0a 0b kept before the bad digit, 0c completes, 0d ignored
        assert read_until_ready(s) == ["m-load-done", "m-ready"]
        s.write(b"db print%")
        assert read_until_ready(s)[0] == "m-buffer-0a-0b-0c"
        s.write(b"infer 0%")
        assert read_until_ready(s)[0] == "e-[Inference iterations must be >0]"
        s.write(b"x" * 200 + b"%")  # the 80-character buffer saturates instead of overflowing
        assert read_until_ready(s)[0] == "e-[Unknown command: " + "x" * 80 + "]"
        s.write(b"infer 2%")  # W defaults to 10 as in the upstream code
        lines = read_until_ready(s)
        assert lines[0] == "m-warmup-start-10" and lines[2] == "m-infer-start-2"
        assert lines[-2].startswith("m-results-[") and len(lines) == 8
        s.close()


def test_energy_mode_has_no_lap_lines_and_a_deterministic_trace(model):
    data = rm.quantize_input(model, rm.digits_split()[2][0])
    totals = []
    for _ in range(2):
        with VirtualBoard(model, energy=True, seed=11) as board:
            host = eembc.EembcHost.open(board.serve(tcp=0), timeout_s=3.0)
            assert host.identify().mode == "energy"
            r = host.run_window(data, 10, 1)
            assert r.lap_us == () and len(r.results) == 10
            host.close()
            trace = board.power_trace(dt_s=1e-4)
            t0, t1, exact = board.energy_windows[-1]
            assert trace.edges[-2:] == pytest.approx((t0, t1))
            # a 100 us sample straddling each edge mixes idle and active power
            assert trace.energy_between(t0, t1) == pytest.approx(exact, abs=2 * 1e-4 * 5.1e-3 * 1.8)
            assert exact == pytest.approx(10 * 1e-3 * 5e-3 * 1.8, rel=0.02)
            totals.append(exact)
    assert totals[0] == totals[1]  # same seed -> same simulated inference energy


def test_power_sim_and_lpm_format():
    sim = PowerSim(seed=0, jitter=0.0)
    sim.advance(500, False)
    sim.advance(1000, True)
    assert sim.energy_between_us(0, 1500) == pytest.approx(1.8 * (0.5e-3 * 500e-6 + 5e-3 * 1000e-6))
    assert sim.energy_between_us(250, 750) == pytest.approx(1.8 * (0.5e-3 * 250e-6 + 5e-3 * 250e-6))
    assert format_lpm_value(6409e-7) == "6409-07"
    assert format_lpm_value(0.0) == "0000+00"
    for v in np.geomspace(1e-9, 1e3, 50):
        from devices.instruments.lpm01a import parse_value

        assert parse_value(format_lpm_value(v)) == pytest.approx(v, rel=6e-4)


def test_module_entry_point_prints_address(tmp_path, model):
    path = rm.write_model(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "devices.virtual_board", str(path), "--tcp", "0",
                             "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        m = re.fullmatch(r"dut: (socket://127\.0\.0\.1:\d+)", line)
        assert m, line
        host = eembc.EembcHost.open(m.group(1), timeout_s=5.0)
        assert host.sync() == ("dut", "edge-lottery-virtual-board")
        host.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
