"""Power instruments: PowerTrace arithmetic, and each adapter driven by its real wire format
(LPM01A ASCII and PPK2 binary words over real pseudo-terminals, Joulescope JLS files)."""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import DeviceError
from devices.instruments import PowerTrace, open_instrument
from devices.instruments.lpm01a import Lpm01a, Lpm01aParser
from devices.instruments.ppk2 import ADC_MULT, DEFAULT_MODIFIERS, Ppk2, parse_metadata, voltage_command
from devices.virtual_board import Lpm01aEmulator, PowerSim, format_lpm_value


def test_energy_between_is_exact_for_piecewise_constant_power():
    tr = PowerTrace(np.array([1.0, 2.0, 3.0, 4.0]), dt=0.5, t0=10.0)
    assert tr.energy_between(10.0, 12.0) == pytest.approx(5.0)
    assert tr.energy_between(10.25, 11.25) == pytest.approx(0.25 * 1 + 0.5 * 2 + 0.25 * 3)
    assert tr.energy_between(11.25, 10.25) == tr.energy_between(10.25, 11.25)
    assert tr.energy_between(0.0, 100.0) == pytest.approx(tr.total_energy())
    assert tr.energy_between(10.6, 10.7) == pytest.approx(0.1 * 2)


# ---------------------------------------------------------------- LPM01A

def _lpm_stream(values, events_at):
    lines = []
    for i, v in enumerate(values):
        if i in events_at:
            lines.append(f"event {events_at.index(i) + 1} ris")
        lines.append(format_lpm_value(v))
    return ("PowerShield > ack start\r\nTimeStamp: 000s 001ms, buff 00%\r\n" + "\r\n".join(lines) +
            "\r\nPowerShield > ack stop\r\nAcquisition completed\r\n").encode()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_lpm01a_parser_is_independent_of_chunking(cuts):
    values = [1e-6] * 100 + [9e-6] * 400 + [1e-6] * 100
    blob = _lpm_stream(values, [100, 500])
    p = Lpm01aParser()
    pos = 0
    for c in cuts:
        p.feed(blob[pos:pos + c])
        pos += c
    p.feed(blob[pos:])
    assert p.events == [(1, 100), (2, 500)]
    assert len(p.values) == 600 and p.values[150] == pytest.approx(9e-6)
    assert "Acquisition completed" in p.messages and p.status


def test_lpm01a_corrupted_sample_keeps_time_and_is_counted():
    p = Lpm01aParser()
    p.feed(b"1000-06\r\n1000-06 10#0-0\r\n1000-06\r\n")
    assert len(p.values) == 4 and p.corrupted == 1


@pytest.fixture()
def lpm_pty():
    sim = PowerSim(seed=0, jitter=0.0, idle_a=1e-3, active_a=8e-3)
    emu = Lpm01aEmulator(sim)  # a pty
    path = emu.start()
    yield sim, emu, path
    emu.close()


def test_lpm01a_driver_over_a_pty(lpm_pty):
    sim, emu, path = lpm_pty
    mon = Lpm01a(path, voltage_mv=3300, freq="1k")
    try:
        mon.start()
        assert emu.freq_hz == 1000 and sim.voltage_v == pytest.approx(3.3)  # configured over the wire
        sim.advance(20_000, False)
        sim.edge()
        sim.advance(50_000, True)
        sim.edge()
        sim.advance(20_000, False)
        emu.pump()
        trace = mon.stop()
    finally:
        mon.close()
    assert trace.edges == pytest.approx((0.020, 0.070))
    assert trace.energy_between(*trace.edges) == pytest.approx(8e-3 * 3.3 * 0.05, rel=1e-3)
    assert trace.total_energy() == pytest.approx(3.3 * (1e-3 * 0.04 + 8e-3 * 0.05), rel=1e-3)


def test_lpm01a_rejected_command(lpm_pty):
    _, _, path = lpm_pty
    mon = Lpm01a(path)
    try:
        with pytest.raises(DeviceError, match="rejected 'bogus'"):
            mon.send("bogus")
    finally:
        mon.close()


def test_lpm01a_argument_checks():
    with pytest.raises(DeviceError, match="10k samples/s"):
        Lpm01a("loop://", freq="100k")
    with pytest.raises(DeviceError, match="1800..3300 mV"):
        Lpm01a("loop://", voltage_mv=5000)


# ---------------------------------------------------------------- PPK2

METADATA = ("Calibrated: 1\nR0: 1031.64\nR1: 101.65\nR2: 10.15\nR3: 0.94\nR4: 0.043\n"
            + "".join(f"GS{i}: 0\nGI{i}: 1\nO{i}: 0\nS{i}: 0\nI{i}: 0\nUG{i}: 1\n" for i in range(5))
            + "HW: 9173\nmode: 2\nIA: 56\nEND\n")


def ppk2_words(current_a, logic):
    r = 2
    adc = np.round(np.asarray(current_a) * DEFAULT_MODIFIERS["R"][r] / ADC_MULT / 4).astype(np.int64)
    words = (adc & 0x3FFF) | (r << 14) | (np.asarray(logic, dtype=np.int64) << 24)
    return words.astype("<u4").tobytes()


class Ppk2Emulator:
    """The device side of a PPK2 on a pty: metadata on 0x19, sample words between 0x06 and 0x07."""

    def __init__(self, payload: bytes):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.payload = payload
        self.received = bytearray()
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        end = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < end:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                continue
            data = os.read(self.master, 256)
            self.received += data
            for b in data:
                if b == 0x19:
                    os.write(self.master, METADATA.encode())
                elif b == 0x06:
                    for i in range(0, len(self.payload), 4000):
                        os.write(self.master, self.payload[i:i + 4000])

    def close(self):
        self._stop.set()
        self.t.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)


def test_ppk2_over_a_pty_integrates_between_logic_edges():
    n = 4000
    current = np.full(n, 1e-3)
    current[1000:3000] = 10e-3
    logic = np.full(n, 0xFF)
    logic[1000:1005] = 0xFE  # D0 pulled low by th_timestamp()
    logic[3000:3005] = 0xFE
    emu = Ppk2Emulator(ppk2_words(current, logic))
    try:
        ppk = Ppk2(emu.path, voltage_mv=1800, pin=0)
        ppk.start()
        time.sleep(0.3)
        trace = ppk.stop()
        ppk.close()
    finally:
        emu.close()
    assert bytes(emu.received[:1]) == b"\x19"
    assert bytes([0x11, 0x02]) in emu.received and voltage_command(1800) in emu.received
    assert trace.meta["samples"] == n and trace.dt == 1e-5
    assert trace.edges == pytest.approx((1000e-5, 3000e-5))
    assert trace.energy_between(*trace.edges) == pytest.approx(10e-3 * 1.8 * 0.02, rel=1e-3)


def test_ppk2_metadata_and_voltage_command():
    mods = parse_metadata(METADATA.replace("R2: 10.15", "R2: 0"))
    assert mods["R"][2] == 10.15 and mods["GS"][0] == 0 and mods["GI"][4] == 1  # R=0 keeps the nominal
    assert voltage_command(800) == bytes([0x0D, 3, 32]) and voltage_command(3300) == bytes([0x0D, 12, 228])
    with pytest.raises(DeviceError, match="no END marker"):
        parse_metadata("R0: 1\n")


def test_ppk2_not_answering():
    with pytest.raises(DeviceError, match="did not answer the PPK2 metadata request"):
        Ppk2("loop://", timeout_s=0.3)  # echoes 0x19 back, never END


# ---------------------------------------------------------------- Joulescope

def test_joulescope_jls_replay(tmp_path):
    pyjls = pytest.importorskip("pyjls", reason="pyjls not installed (pip install pyjls)")
    fs, n = 100_000, 5000
    current = np.full(n, 2e-3, dtype=np.float32)
    current[1000:4000] = 20e-3
    voltage = np.full(n, 3.3, dtype=np.float32)
    gpi = np.ones(n, dtype=np.uint8)
    gpi[995:1000] = 0  # low pulse, rising edge at 1000
    gpi[3995:4000] = 0
    path = tmp_path / "capture.jls"
    with pyjls.Writer(str(path)) as w:
        w.source_def(source_id=1, name="js220", vendor="Jetperch", model="JS220", version="1", serial_number="X")
        for sid, name, dtype, units in ((1, "current", pyjls.DataType.F32, "A"),
                                        (2, "voltage", pyjls.DataType.F32, "V"),
                                        (3, "gpi[0]", pyjls.DataType.U1, "")):
            w.signal_def(signal_id=sid, source_id=1, data_type=dtype, sample_rate=fs, name=name, units=units)
        w.fsr(1, 0, current)
        w.fsr(2, 0, voltage)
        w.fsr(3, 0, np.packbits(gpi, bitorder="little"))
    from devices.instruments.joulescope import trace_from_jls

    trace = trace_from_jls(path)
    assert trace.edges == pytest.approx((1000 / fs, 4000 / fs))
    assert trace.energy_between(*trace.edges) == pytest.approx(20e-3 * 3.3 * 0.03, rel=1e-5)


def test_joulescope_without_vendor_package_is_one_line():
    try:
        import joulescope  # noqa: F401
        pytest.skip("joulescope is installed; the missing-package path cannot be exercised")
    except ImportError:
        pass
    with pytest.raises(DeviceError, match="pip install joulescope"):
        open_instrument("joulescope")


def test_open_instrument_specs():
    with pytest.raises(DeviceError, match="expected one of lpm01a"):
        open_instrument("fluke:COM3")
    with pytest.raises(DeviceError, match="needs a port"):
        open_instrument("lpm01a")
    with pytest.raises(DeviceError, match="expected key=value"):
        open_instrument("ppk2:/dev/x,volt")
