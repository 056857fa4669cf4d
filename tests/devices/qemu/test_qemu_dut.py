"""The EEMBC host against firmware of our own running on an emulated Cortex-M3 (QEMU mps2-an385).

Needs the Debian packages ``qemu-system-arm`` and ``gcc-arm-none-eabi`` (skipped without them).
With ``-icount shift=0`` one instruction is one virtual nanosecond, so the device's lap
timestamps are deterministic: two identical windows must report the same elapsed time (±2 µs
for the timer phase), which is what makes QEMU useful for regression checks of the harness.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from devices import DeviceError
from devices.protocol import eembc

HERE = Path(__file__).parent
QEMU = shutil.which("qemu-system-arm")
GCC = shutil.which("arm-none-eabi-gcc")
pytestmark = pytest.mark.skipif(not (QEMU and GCC),
                                reason="needs apt packages qemu-system-arm and gcc-arm-none-eabi")


def expected_scores(data: bytes) -> list[float]:
    """The firmware's dense layer: w[o][i] = ((31 o + 17 i) mod 23) - 11 on int8 inputs, / 1000."""
    x = [b - 256 if b > 127 else b for b in data[:64]]
    return [sum(xi * (((o * 31 + i * 17) % 23) - 11) for i, xi in enumerate(x)) / 1000 for o in range(10)]


@pytest.fixture(scope="module")
def qemu_dut(tmp_path_factory):
    out = tmp_path_factory.mktemp("qemu")
    elf = out / "dut.elf"
    subprocess.run([GCC, "-mcpu=cortex-m3", "-mthumb", "-O2", "-ffreestanding", "-nostdlib",
                    "-fno-tree-loop-distribute-patterns", "-Wall", "-T", str(HERE / "mps2.ld"),
                    str(HERE / "dut.c"), "-lgcc", "-o", str(elf)], check=True, capture_output=True, timeout=120)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([QEMU, "-M", "mps2-an385", "-display", "none", "-monitor", "none",
                             "-icount", "shift=0", "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
                             "-kernel", str(elf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = None
    end = time.monotonic() + 15
    while host is None and time.monotonic() < end:
        try:
            host = eembc.EembcHost.open(f"socket://127.0.0.1:{port}", timeout_s=5.0)
        except DeviceError:
            time.sleep(0.1)
    if host is None:
        proc.terminate()
        pytest.fail("QEMU did not open its TCP serial port within 15 s")
    yield host
    host.close()
    proc.terminate()
    proc.wait(timeout=10)


def test_identify(qemu_dut):
    ident = qemu_dut.identify()
    assert (ident.device, ident.vendor, ident.model, ident.mode) == ("dut", "edge-lottery-qemu", "ic01", "performance")


def test_results_and_deterministic_timing(qemu_dut):
    data = bytes((i * 37 + 11) % 256 for i in range(64))
    r1 = qemu_dut.run_window(data, 20, 2, expect_results=10)
    r2 = qemu_dut.run_window(data, 20, 2, expect_results=10)
    assert r1.results == pytest.approx(expected_scores(data), abs=1e-9)
    assert qemu_dut.read_buffer() == data
    assert r1.elapsed_us > 0 and abs(r1.elapsed_us - r2.elapsed_us) <= 2
    r3 = qemu_dut.run_window(data, 40, 0, expect_results=10)
    assert r3.elapsed_us == pytest.approx(2 * r1.elapsed_us, rel=0.05)  # twice the work, twice the count


def test_performance_loop_over_qemu(qemu_dut):
    data = bytes(range(64))
    perf = eembc.measure_performance(qemu_dut, data, 50, 1, windows=5, expect_results=10)
    lat = perf.latencies_s
    assert max(lat) - min(lat) <= 2e-6 / 50 * 2  # deterministic under -icount
    assert not perf.valid  # far below the 10 s window rule
