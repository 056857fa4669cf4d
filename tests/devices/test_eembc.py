"""The EEMBC host against the virtual board over real pseudo-terminals and TCP sockets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import remote_models as rm

from devices import DeviceError
from devices.protocol import eembc
from devices.virtual_board import Faults, VirtualBoard


@pytest.fixture(scope="module")
def model() -> bytes:
    return rm.tiny_int8_model()


@pytest.fixture(scope="module")
def inputs(model):
    _, _, x_test, y_test = rm.digits_split()
    return [rm.quantize_input(model, x) for x in x_test[:12]], [int(y) for y in y_test[:12]]


def tflm_scores(model: bytes, data: bytes) -> np.ndarray:
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model)
    it.set_input(np.frombuffer(data, np.int8).reshape(1, 8, 8, 1), 0)
    it.invoke()
    d = it.get_output_details(0)["quantization_parameters"]
    q = it.get_output(0).reshape(-1).astype(np.float64)
    return (q - d["zero_points"][0]) * d["scales"][0]


def connect(board: VirtualBoard, transport: str, **kw) -> eembc.EembcHost:
    addr = board.serve(tcp=0 if transport == "tcp" else None)
    if transport == "pty":
        assert addr.startswith("/dev/pts/")
    kw.setdefault("timeout_s", 3.0)
    return eembc.EembcHost.open(addr, **kw)


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_identify_download_infer_matches_tflm(model, inputs, transport):
    with VirtualBoard(model, vendor="acme") as board, connect(board, transport) as host:
        ident = host.identify()
        assert (ident.device, ident.vendor, ident.model, ident.mode) == ("dut", "acme", "ic01", "performance")
        assert ident.profile.startswith("ULPMark")
        for data in inputs[0][:3]:
            r = host.run_window(data, 5, 1, expect_results=10)
            np.testing.assert_allclose(r.results, np.round(tflm_scores(model, data), 3), atol=1e-9)
            assert r.elapsed_us is not None and r.elapsed_us >= 0
            assert host.read_buffer() == data
        # every command fits the DUT's 80-character buffer and db lines carry <= 31 bytes
        sent = [t[2:] for t in host.transcript if t.startswith(">")]
        assert all(len(c) <= 80 for c in sent)
        assert max(len(c) - 4 for c in sent if c.startswith("db ") and not c.startswith("db load")) <= 62


def test_errors_keep_the_session_in_step(model):
    with VirtualBoard(model) as board, connect(board, "tcp") as host:
        host.sync()
        with pytest.raises(eembc.ProtocolError, match="Unknown command: bogus"):
            host.command("bogus")
        with pytest.raises(DeviceError, match="N >= 1"):
            host.infer(0, 0)
        with pytest.raises(eembc.ProtocolError, match="must be >0"):
            host.command("db load 0")
        assert host.sync() == ("dut", "edge-lottery-virtual-board")  # replies are not shifted
        with pytest.raises(DeviceError, match="1..27648"):
            host.download(b"")


def test_performance_windows_and_validity(model, inputs):
    with VirtualBoard(model) as board, connect(board, "pty") as host:
        host.identify()
        perf = eembc.measure_performance(host, inputs[0][0], 20, 2, windows=5, expect_results=10)
    assert len(perf.windows) == 5
    assert all(w.n == 20 and w.warmup == 2 for w in perf.windows)
    tps = sorted(w.throughput for w in perf.windows)
    assert perf.median_throughput == tps[2]
    assert not perf.valid and any("10 s" in n for n in perf.notes)  # sub-10 s windows are flagged


def test_accuracy_on_digits_equals_direct_tflm(model, inputs):
    samples, labels = inputs
    with VirtualBoard(model) as board, connect(board, "tcp") as host:
        host.identify()
        acc = eembc.measure_accuracy(host, samples, labels, expect_results=10)
    direct = [int(np.argmax(tflm_scores(model, s))) for s in samples]
    assert list(acc.predictions) == direct
    assert acc.top1 == sum(p == y for p, y in zip(direct, labels, strict=True)) / len(labels)
    assert acc.top1 > 0.5  # the tiny model did learn digits


@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_energy_mode_integrates_simulated_trace(model, inputs, transport):
    from devices.instruments.lpm01a import Lpm01a

    with VirtualBoard(model, energy=True, seed=7, sim_inference_us=1000.0) as board:
        host = connect(board, transport)
        monitor = Lpm01a(board.serve_power_monitor(tcp=0 if transport == "tcp" else None), freq="10k")
        try:
            ident = host.identify()
            assert ident.mode == "energy"
            assert host._chunk() == eembc.CHUNK_BYTES_ENERGY
            res = eembc.measure_energy(host, monitor, inputs[0][0], 50, 2, windows=3, expect_results=10)
        finally:
            monitor.close()
            host.close()
        exact = [e / 50 for _, _, e in board.energy_windows]
    assert len(res.per_inference_j) == 3
    for got, want in zip(res.per_inference_j, exact, strict=True):
        assert got == pytest.approx(want, rel=0.01)  # 10 kS/s edges quantised to 100 us of a 50 ms window
    # analytic: 5 mA x 1.8 V x 1 ms, with +-2 % seeded jitter per inference
    assert res.median_per_inference_j == pytest.approx(9e-6, rel=0.03)
    assert all(s == pytest.approx(0.05, abs=2e-4) for s in res.window_s)


def test_reset_mid_run_is_retried(model, inputs):
    data = inputs[0][0]
    with VirtualBoard(model, faults=Faults(reset_at_infer=1)) as board, connect(board, "pty") as host:
        host.identify()
        r = host.run_window(data, 3, 0, expect_results=10)
        assert host.resets == 1 and any("reset" in x for x in board.log)
        np.testing.assert_allclose(r.results, np.round(tflm_scores(model, data), 3), atol=1e-9)
        assert any("rebooted" in t for t in host.transcript)


def test_reset_without_retries_reports_it(model, inputs):
    with VirtualBoard(model, faults=Faults(reset_at_infer=1)) as board, connect(board, "tcp", retries=0) as host:
        host.identify()
        with pytest.raises(DeviceError, match="rebooted while answering 'infer 3 0%'"):
            host.run_window(inputs[0][0], 3, 0)


def test_garbage_line_is_skipped(model, inputs):
    data = inputs[0][1]
    with VirtualBoard(model, faults=Faults(garbage_at_command=4)) as board, connect(board, "tcp") as host:
        host.identify()
        r = host.run_window(data, 2, 0, expect_results=10)
        np.testing.assert_allclose(r.results, np.round(tflm_scores(model, data), 3), atol=1e-9)
    assert any("\ufffd" in t for t in host.transcript)  # the junk was seen and logged


def test_stall_times_out_with_a_clear_message(model, inputs):
    with VirtualBoard(model, faults=Faults(stall_at_command=5)) as board, \
            connect(board, "pty", timeout_s=0.5, retries=1) as host:
        host.identify()  # commands 1-3 (name, profile, timestamp)
        t0 = time.monotonic()
        with pytest.raises(DeviceError) as err:
            host.run_window(inputs[0][0], 2, 0)
        assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "\n" not in msg
    assert "did not finish replying" in msg and "stopped answering" in msg


@pytest.mark.parametrize("drops, needle", [((5,), "Insufficent number of hex digits"),
                                           ((4, 9), "did not report 'm-load-done'")])
def test_dropped_bytes_are_detected_and_retried(model, inputs, drops, needle):
    data = inputs[0][2]
    with VirtualBoard(model, faults=Faults(drop_db_bytes=drops)) as board, connect(board, "tcp") as host:
        host.identify()
        r = host.run_window(data, 2, 0, expect_results=10)
        assert any("dropped byte" in x for x in board.log)
        np.testing.assert_allclose(r.results, np.round(tflm_scores(model, data), 3), atol=1e-9)
    assert any(needle in t for t in host.transcript)


def test_dropped_byte_without_retries_fails_clearly(model, inputs):
    with VirtualBoard(model, faults=Faults(drop_db_bytes=(4, 9))) as board, \
            connect(board, "pty", retries=0) as host:
        host.identify()
        with pytest.raises(DeviceError, match="bytes were dropped on the line"):
            host.run_window(inputs[0][2], 2, 0)


def test_not_a_benchmark_device():
    # loop:// echoes what is written: a port with something on it that never says m-name-.
    host = eembc.EembcHost.open("loop://", timeout_s=0.3, retries=1)
    with pytest.raises(DeviceError, match="not answering as an MLPerf Tiny benchmark device"):
        host.sync(timeout_s=0.3)
    host.close()


def test_missing_port_is_one_line():
    with pytest.raises(DeviceError) as err:
        eembc.open_stream("/dev/ttyDOESNOTEXIST0")
    assert "\n" not in str(err.value) and "list_ports" in str(err.value)


# ---------------------------------------------------------------- the host against corrupted replies

INFER_REPLY = (b"m-warmup-start-1\r\nm-warmup-done\r\nm-infer-start-5\r\nm-lap-us-1000\r\nm-lap-us-1350\r\n"
               b"m-infer-done\r\nm-results-[0.000,0.969,0.000,0.000,0.004,0.000,0.000,0.000,0.020,0.004]\r\n"
               b"m-ready\r\n")


class _ScriptedPeer:
    """A TCP peer that answers each '%'-terminated command with the next scripted reply."""

    def __init__(self, replies):
        import socket
        import threading

        self.replies = list(replies)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.srv.settimeout(5)
        self.url = f"socket://127.0.0.1:{self.srv.getsockname()[1]}"
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        conn.settimeout(2)
        try:
            while self.replies:
                data = conn.recv(4096)
                if not data:
                    break
                for _ in range(data.count(b"%")):
                    if self.replies:
                        conn.sendall(self.replies.pop(0))
            conn.recv(1)  # until the host hangs up (bounded by the 2 s socket timeout)
        except OSError:
            pass
        finally:
            conn.close()
            self.srv.close()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_host_survives_corrupted_infer_replies(data):
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    blob = bytearray(INFER_REPLY)
    pos = data.draw(st.integers(0, len(blob) - 1))
    if kind == "truncate":
        blob = blob[:pos]
    elif kind == "flip":
        blob[pos] = data.draw(st.integers(0, 255))
    else:
        blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    peer = _ScriptedPeer([bytes(blob)])
    host = eembc.EembcHost.open(peer.url, timeout_s=0.15)
    try:
        r = host.infer(5, 1, expect_results=10)
    except DeviceError as exc:
        assert "\n" not in str(exc)
    else:
        assert len(r.results) == 10 and r.elapsed_us is not None and r.elapsed_us >= 0
    finally:
        host.close()
        peer.t.join(timeout=5)
