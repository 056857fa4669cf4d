"""A virtual MLPerf Tiny device under test: the DUT protocol over a pty or a TCP port.

Why: the serial harness needs a device to talk to in tests and for users without a board. The
board runs the model on the TFLite-Micro interpreter (``tflite_micro.runtime.Interpreter``, real
inference on the downloaded bytes) and answers like the upstream DUT library
(docs/mlperf-tiny-protocol.md §1-§4): ``%``-terminated commands, an 80-character command buffer,
``m-ready`` after every reply, ``m-lap-us-`` from a monotonic clock.

Energy mode (``energy=True``) follows ``EE_CFG_ENERGY_MODE=1``: no lap lines, a timestamp edge
instead. Time is then *simulated* (UART characters at 9600 baud, a fixed time per inference) so
the power trace is deterministic for a seed. The trace can be read in process
(:meth:`VirtualBoard.power_trace`) or streamed by an emulated ST LPM01A PowerShield on a second
pty/TCP port, which the real :class:`devices.instruments.lpm01a.Lpm01a` adapter drives.

Fault injection (:class:`Faults`) makes the board reset, print garbage, stall or lose received
bytes, once each, for the robustness tests.

Run ``python -m devices.virtual_board MODEL.tflite --tcp 0`` (or ``--pty``); it prints the
address to give ``edge-lottery bench --target serial:ADDRESS``.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import select
import socket
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["VIRTUAL_VENDOR", "Faults", "PowerSim", "VirtualBoard", "Lpm01aEmulator", "ModelRunner", "main"]

CMD_SIZE = 80
#: The vendor string the board reports in ``m-name-dut-[...]``: records can tell it from hardware.
VIRTUAL_VENDOR = "edge-lottery-virtual-board"
MAX_DB = 96 * 96 * 3
PROFILE = "ULPMark for tinyML Firmware V0.0.1"


# ---- transports ------------------------------------------------------------------------------

class _Transport:
    """A byte pipe to one host: a TCP listener on 127.0.0.1 or a pseudo-terminal."""

    def __init__(self, on_bytes: Callable[[bytes], None], on_connect: Callable[[], None]):
        self.on_bytes = on_bytes
        self.on_connect = on_connect
        self._stop = threading.Event()
        self._wlock = threading.Lock()
        self.address = ""
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"vb-{self.address}")
        self._thread.start()
        return self.address

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError


class _TcpTransport(_Transport):
    def __init__(self, port: int, *args):
        super().__init__(*args)
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", port))
        self._srv.listen(1)
        self._srv.settimeout(0.1)
        self.port = self._srv.getsockname()[1]
        self.address = f"socket://127.0.0.1:{self.port}"
        self._conn: socket.socket | None = None

    def send(self, data: bytes) -> None:
        with self._wlock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.sendall(data)
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.1)
            self._conn = conn
            self.on_connect()
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.on_bytes(data)
            with self._wlock:
                self._conn = None
            conn.close()
        self._srv.close()


class _PtyTransport(_Transport):
    def __init__(self, *args):
        import pty

        super().__init__(*args)
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.address = os.ttyname(self._slave)

    def start(self) -> str:
        addr = super().start()
        self.on_connect()
        return addr

    def send(self, data: bytes) -> None:
        with self._wlock:
            view = memoryview(data)
            end = time.monotonic() + 5.0
            while view and not self._stop.is_set() and time.monotonic() < end:
                try:
                    n = os.write(self._master, view)
                    view = view[n:]
                except BlockingIOError:
                    select.select([], [self._master], [], 0.05)
                except OSError:
                    return

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # EIO: no process has the slave open right now
                time.sleep(0.05)
                continue
            if data:
                self.on_bytes(data)

    def close(self) -> None:
        super().close()
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


def _make_transport(tcp: int | None, on_bytes, on_connect) -> _Transport:
    if tcp is not None:
        return _TcpTransport(tcp, on_bytes, on_connect)
    return _PtyTransport(on_bytes, on_connect)


# ---- model -----------------------------------------------------------------------------------

class ModelRunner:
    """The model on the TFLite-Micro interpreter: raw input bytes in, dequantized scores out."""

    def __init__(self, model: bytes):
        from tflite_micro import runtime

        self.interpreter = runtime.Interpreter.from_bytes(bytes(model))
        d = self.interpreter.get_input_details(0)
        self.input_dtype = np.dtype(d["dtype"])
        self.input_shape = tuple(int(s) for s in d["shape"])
        self.input_bytes = int(np.prod(self.input_shape)) * self.input_dtype.itemsize
        o = self.interpreter.get_output_details(0)
        q = o["quantization_parameters"]
        self._out_scale = float(q["scales"][0]) if len(q["scales"]) else 0.0
        self._out_zp = int(q["zero_points"][0]) if len(q["zero_points"]) else 0
        self._input = np.zeros(self.input_shape, dtype=self.input_dtype)

    def load(self, data: bytes) -> None:
        buf = bytes(data[: self.input_bytes]).ljust(self.input_bytes, b"\0")
        self._input = np.frombuffer(buf, dtype=self.input_dtype).reshape(self.input_shape)

    def infer(self) -> None:
        # TFLM's memory planner may reuse the input tensor's arena bytes for intermediate tensors,
        # so a second invoke() without set_input() computes on clobbered input. Like a port whose
        # th_infer() copies the db buffer in, the input is set before every inference.
        self.interpreter.set_input(self._input, 0)
        self.interpreter.invoke()

    def scores(self) -> list[float]:
        out = np.asarray(self.interpreter.get_output(0)).reshape(-1)
        if out.dtype.kind in "iu" and self._out_scale:
            return [float((int(v) - self._out_zp) * self._out_scale) for v in out]
        return [float(v) for v in out]


# ---- simulated power ---------------------------------------------------------------------------

@dataclass
class PowerSim:
    """Simulated time (µs) and supply current of the DUT; energy is exact for its segments."""

    seed: int = 0
    voltage_v: float = 1.8
    idle_a: float = 0.5e-3
    active_a: float = 5.0e-3
    jitter: float = 0.02
    now_us: float = 0.0
    starts: list = field(default_factory=list)
    ends: list = field(default_factory=list)
    currents: list = field(default_factory=list)
    edges_us: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def advance(self, dt_us: float, active: bool) -> None:
        if dt_us <= 0:
            return
        a = self.active_a * (1.0 + self.jitter * (2 * self._rng.random() - 1)) if active else self.idle_a
        self.starts.append(self.now_us)
        self.ends.append(self.now_us + dt_us)
        self.currents.append(a)
        self.now_us += dt_us

    def edge(self) -> None:
        self.edges_us.append(self.now_us)

    def energy_between_us(self, t0: float, t1: float) -> float:
        """Exact energy (J) between two simulated times."""
        total = 0.0
        i = max(0, bisect.bisect_right(self.starts, t0) - 1)
        while i < len(self.starts) and self.starts[i] < t1:
            lo, hi = max(t0, self.starts[i]), min(t1, self.ends[i])
            if hi > lo:
                total += self.currents[i] * self.voltage_v * (hi - lo) * 1e-6
            i += 1
        return total

    def trace(self, dt_s: float = 1e-4):
        """The whole simulated run as a :class:`~devices.instruments.base.PowerTrace`."""
        from devices.instruments.base import PowerTrace

        n = int(math.ceil(self.now_us * 1e-6 / dt_s))
        e = [self.energy_between_us(i * dt_s * 1e6, (i + 1) * dt_s * 1e6) for i in range(n)]
        return PowerTrace.from_energy(np.array(e), dt_s, edges=tuple(t * 1e-6 for t in self.edges_us),
                                      voltage_v=self.voltage_v, source="virtual-board")


def format_lpm_value(v: float) -> str:
    """``dddd±ee``: four-digit mantissa times a power of ten (LPM01A ``ascii_dec``)."""
    if v <= 0 or not math.isfinite(v):
        return "0000+00"
    e = math.floor(math.log10(v)) - 3
    m = round(v / 10.0**e)
    if m >= 10000:
        m //= 10
        e += 1
    return f"{m:04d}{'-' if e < 0 else '+'}{abs(e):02d}"


class Lpm01aEmulator:
    """An ST LPM01A (PowerShield) in ``output energy`` / ``ascii_dec`` mode fed by a PowerSim.

    Replies ``PowerShield > ack <cmd>`` to the configuration commands of the MLCommons runner,
    streams one energy sample per period after ``start`` and reports each timestamp edge as
    ``event N ris`` before the sample that contains it; ``stop`` flushes and prints
    ``Acquisition completed``.
    """

    PROMPT = "PowerShield > "
    KNOWN = ("htc", "hrc", "lcd", "pwr", "acqtime", "trigdelay", "trigsrc", "eventsrc", "output", "format",
             "freq", "volt", "start", "stop", "powershield", "version", "status", "acqmode", "funcmode")

    def __init__(self, sim: PowerSim, *, tcp: int | None = None):
        self.sim = sim
        self.freq_hz = 1000.0
        self.acquiring = False
        self._acq_start = 0.0
        self._emitted = 0
        self._next_edge = 0
        self._event_no = 0
        self._buf = b""
        self._lock = threading.RLock()
        self.transport = _make_transport(tcp, self._on_bytes, lambda: None)

    def start(self) -> str:
        return self.transport.start()

    def close(self) -> None:
        self.transport.close()

    def _send(self, text: str) -> None:
        self.transport.send(text.encode("ascii"))

    def _on_bytes(self, data: bytes) -> None:
        self._buf += data
        while True:
            idx = min((i for i in (self._buf.find(b"\n"), self._buf.find(b"\r")) if i >= 0), default=-1)
            if idx < 0:
                return
            line = self._buf[:idx].decode("ascii", "replace").strip()
            self._buf = self._buf[idx + 1:]
            if line:
                self._command(line)

    def _command(self, line: str) -> None:
        with self._lock:
            word, _, arg = line.partition(" ")
            if word not in self.KNOWN:
                self._send(f"{self.PROMPT}error {line}\r\nError detail: unknown command\r\n")
                return
            if word == "freq":
                try:
                    self.freq_hz = _si(arg)
                except ValueError:
                    self._send(f"{self.PROMPT}error {line}\r\nError detail: bad frequency\r\n")
                    return
            elif word == "volt" and arg != "get":
                try:
                    self.sim.voltage_v = _si(arg)
                except ValueError:
                    self._send(f"{self.PROMPT}error {line}\r\nError detail: bad voltage\r\n")
                    return
            if word == "stop":
                self.pump()
                self.acquiring = False
                self._send(f"{self.PROMPT}ack stop\r\nAcquisition completed\r\n")
                return
            self._send(f"{self.PROMPT}ack {line}\r\n")
            if word == "powershield":
                self._send("PowerShield present 0000-EMULATED\r\n")
            if word == "start":
                self.acquiring = True
                self._acq_start = self.sim.now_us
                self._emitted = 0
                self._event_no = 0
                self._next_edge = bisect.bisect_left(self.sim.edges_us, self._acq_start)

    def pump(self) -> None:
        """Stream every complete sample (and event) up to the simulated present."""
        with self._lock:
            if not self.acquiring:
                return
            dt_us = 1e6 / self.freq_hz
            out = []
            while self._acq_start + (self._emitted + 1) * dt_us <= self.sim.now_us + 1e-9:
                t0 = self._acq_start + self._emitted * dt_us
                while self._next_edge < len(self.sim.edges_us) and self.sim.edges_us[self._next_edge] < t0 + dt_us:
                    self._event_no += 1
                    out.append(f"event {self._event_no} ris\r\n")
                    self._next_edge += 1
                out.append(format_lpm_value(self.sim.energy_between_us(t0, t0 + dt_us)) + "\r\n")
                self._emitted += 1
            if out:
                self._send("".join(out))


def _si(text: str) -> float:
    text = text.strip()
    mult = {"k": 1e3, "m": 1e-3, "u": 1e-6}
    if text and text[-1] in mult:
        return float(text[:-1]) * mult[text[-1]]
    return float(text)


# ---- the board -------------------------------------------------------------------------------

@dataclass
class Faults:
    """Faults to inject, each at most once (1-based counters; None = never).

    - ``reset_at_infer``: the k-th ``infer`` reboots the board after ``m-warmup-start``.
    - ``garbage_at_command``: a line of seeded random bytes before the k-th command's reply.
    - ``stall_at_command``: from the k-th command on, say nothing for ``stall_s`` seconds
      (``None`` = until the board is closed).
    - ``drop_db_bytes``: positions of received bytes to drop inside the first ``db`` hex line
      (0 = the first hex digit); one drop gives an odd digit count, two lose a byte.
    """

    reset_at_infer: int | None = None
    garbage_at_command: int | None = None
    stall_at_command: int | None = None
    stall_s: float | None = None
    drop_db_bytes: tuple[int, ...] = ()


class VirtualBoard:
    """The DUT. ``serve(tcp=PORT)`` or ``serve()`` (pty) returns the address to connect to."""

    def __init__(self, model: bytes | str | os.PathLike, *, energy: bool = False, vendor: str = VIRTUAL_VENDOR,
                 benchmark: str = "ic01", seed: int = 0, faults: Faults | None = None,
                 sim_inference_us: float = 1000.0, baud_sim: int = 9600):
        if not isinstance(model, bytes | bytearray):
            model = Path(model).read_bytes()
        self.runner = ModelRunner(bytes(model))
        self.energy = energy
        self.vendor = vendor
        self.benchmark = benchmark
        self.faults = faults or Faults()
        self.sim = PowerSim(seed=seed)
        self.sim_inference_us = sim_inference_us
        self.baud_sim = baud_sim
        self.lpm: Lpm01aEmulator | None = None
        self._rng = random.Random(seed + 1)
        self._cmd = bytearray()
        self._db = bytearray()
        self._db_expected = 0
        self._boot_ns = time.monotonic_ns()
        self._commands = 0
        self._infers = 0
        self._stalled_until: float | None = None
        self._db_lines_seen = 0
        self._drop_state: list[int] | None = None
        self._lock = threading.RLock()
        self.transport: _Transport | None = None
        self.log: list[str] = []
        self.energy_windows: list[tuple[float, float, float]] = []  # (t0_s, t1_s, exact J) per infer

    # -- lifecycle
    def serve(self, tcp: int | None = None) -> str:
        self.transport = _make_transport(tcp, self._on_bytes, self._boot)
        return self.transport.start()

    def serve_power_monitor(self, tcp: int | None = None) -> str:
        """Start the emulated LPM01A on its own port; requires ``energy=True``."""
        if not self.energy:
            raise ValueError("the power monitor emulation needs energy=True")
        self.lpm = Lpm01aEmulator(self.sim, tcp=tcp)
        return self.lpm.start()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.lpm is not None:
            self.lpm.close()

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def power_trace(self, dt_s: float = 1e-4):
        return self.sim.trace(dt_s)

    # -- output
    def _print(self, line: str) -> None:
        if self.energy:
            self.sim.advance((len(line) + 2) * 10 / self.baud_sim * 1e6, False)
        if self.transport is not None:
            self.transport.send((line + "\r\n").encode("ascii"))
        if self.lpm is not None:
            self.lpm.pump()

    def _timestamp(self) -> None:
        if self.energy:
            self.sim.advance(1.0, False)  # the pulse itself: >= 1 µs low
            self.sim.edge()
        else:
            self._print(f"m-lap-us-{(time.monotonic_ns() - self._boot_ns) // 1000}")

    def _boot(self) -> None:
        with self._lock:
            self._cmd.clear()
            self._db.clear()
            self._db_expected = 0
            self._print(f"m-timestamp-mode-{'energy' if self.energy else 'performance'}")
            self._timestamp()
            self._print("m-init-done")
            self._print("m-ready")

    # -- input
    def _on_bytes(self, data: bytes) -> None:
        with self._lock:
            for b in data:
                if self._stalled():
                    continue
                if self._drop_byte(b):
                    continue
                if b == ord("%"):
                    cmd = self._cmd.decode("ascii", "replace").strip()
                    self._cmd.clear()
                    self._drop_state = None
                    self._execute(cmd)
                elif len(self._cmd) < CMD_SIZE:
                    self._cmd.append(b)
                else:
                    self._cmd[-1] = b  # the upstream write position saturates at the last slot

    def _stalled(self) -> bool:
        if self._stalled_until is None:
            return False
        if time.monotonic() < self._stalled_until:
            return True
        self._stalled_until = None
        return False

    def _drop_byte(self, b: int) -> bool:
        drops = self.faults.drop_db_bytes
        if not drops or self._db_lines_seen > 1:
            return False
        # Count positions from the first hex digit of the first `db <hex>` line.
        if self._drop_state is None and bytes(self._cmd) == b"db " and b != ord("l") and b != ord("p"):
            self._db_lines_seen += 1
            if self._db_lines_seen == 1:
                self._drop_state = [0]
        if self._drop_state is not None:
            pos = self._drop_state[0]
            self._drop_state[0] += 1
            if pos in drops:
                self.log.append(f"dropped byte {chr(b)!r} at position {pos}")
                return True
        return False

    def _execute(self, cmd: str) -> None:
        self._commands += 1
        f = self.faults
        if f.stall_at_command is not None and self._commands == f.stall_at_command:
            self.log.append(f"stall at command {self._commands}: {cmd[:20]}")
            self._stalled_until = time.monotonic() + (f.stall_s if f.stall_s is not None else 1e9)
            return
        if self.energy:
            self.sim.advance((len(cmd) + 1) * 10 / self.baud_sim * 1e6, False)
        if f.garbage_at_command is not None and self._commands == f.garbage_at_command:
            junk = bytes(self._rng.randrange(128, 256) for _ in range(12))
            if self.transport is not None:
                self.transport.send(b"\x00" + junk + b"#?~\r\n")
        tokens = cmd.split()
        word = tokens[0] if tokens else ""
        handler = {
            "name": self._cmd_name, "profile": self._cmd_profile, "timestamp": self._cmd_timestamp,
            "help": self._cmd_help, "db": self._cmd_db, "infer": self._cmd_infer, "results": self._cmd_results,
        }.get(word)
        if handler is None:
            self._print(f"e-[Unknown command: {word}]")
        elif handler(tokens[1:]) is False:  # the board rebooted: the banner already ended in m-ready
            return
        self._print("m-ready")

    def _cmd_name(self, _args: list[str]) -> None:
        self._print(f"m-name-dut-[{self.vendor}]")

    def _cmd_profile(self, _args: list[str]) -> None:
        self._print(f"m-profile-[{PROFILE}]")
        self._print(f"m-model-[{self.benchmark}]")

    def _cmd_timestamp(self, _args: list[str]) -> None:
        self._timestamp()

    def _cmd_help(self, _args: list[str]) -> None:
        for text in ("name        - print name of the device", "timestamp   - print a timestamp",
                     "db          - manipulate a generic byte buffer", "infer N [W] - run N inferences, W warmups",
                     "results     - print the result vector"):
            self._print(text)

    def _cmd_db(self, args: list[str]) -> None:
        if not args:
            self._print("e-[Command 'db' requires a subcommand]")
            return
        if args[0] == "load":
            try:
                n = int(args[1]) if len(args) > 1 else 0
            except ValueError:
                n = 0
            if n <= 0:
                self._print("e-[Command 'db load' must be >0 bytes]")
                return
            self._db_expected = n
            self._db.clear()
            if n > MAX_DB:
                self.transport and self.transport.send(
                    f"Supplied buffer size {n} exceeds maximum of {MAX_DB}\n".encode())
                return
            self._print(f"m-[Expecting {n} bytes]")
        elif args[0] == "print":
            data = bytes(self._db)
            for i in range(0, len(data), 8):
                self._print("m-buffer-" + "-".join(f"{b:02x}" for b in data[i:i + 8]))
            self._print("")
        else:
            hexs = args[0]
            if len(hexs) % 2:
                self._print("e-[Insufficent number of hex digits]")
                return
            for i in range(0, len(hexs), 2):
                pair = hexs[i:i + 2]
                try:
                    v = int(pair, 16)
                except ValueError:
                    self._print(f"e-[Invalid hex digit '{pair}']")
                    return
                if len(self._db) < self._db_expected:
                    self._db.append(v)
                    if len(self._db) == self._db_expected:
                        self._print("m-load-done")
                        return

    def _cmd_infer(self, args: list[str]) -> bool | None:
        try:
            n = int(args[0]) if args else 1
            w = int(args[1]) if len(args) > 1 else 10
        except ValueError:
            self._print("e-[Inference iterations must be >0]")
            return None
        if n <= 0:
            self._print("e-[Inference iterations must be >0]")
            return None
        if w < 0:
            self._print("e-[Inference warmup must be >=0]")
            return None
        self._infers += 1
        self._print(f"m-warmup-start-{w}")
        if self.faults.reset_at_infer is not None and self._infers == self.faults.reset_at_infer:
            self.log.append(f"reset during infer {self._infers}")
            self._boot()
            return False
        self.runner.load(bytes(self._db))
        if self.energy:
            self.runner.infer()
            self.sim.advance(w * self.sim_inference_us, True)
        else:
            for _ in range(w):
                self.runner.infer()
        self._print("m-warmup-done")
        self._print(f"m-infer-start-{n}")
        self._timestamp()
        if self.energy:
            t0 = self.sim.now_us
            for _ in range(n):
                self.sim.advance(self.sim_inference_us, True)
        else:
            for _ in range(n):
                self.runner.infer()
        self._timestamp()
        if self.energy:
            t1 = self.sim.edges_us[-1]
            self.energy_windows.append((t0 * 1e-6, t1 * 1e-6, self.sim.energy_between_us(t0, t1)))
        self._print("m-infer-done")
        self._cmd_results([])
        return None

    def _cmd_results(self, _args: list[str]) -> None:
        self._print("m-results-[" + ",".join(f"{v:0.3f}" for v in self.runner.scores()) + "]")


def main(argv: list[str] | None = None) -> int:
    """``python -m devices.virtual_board MODEL.tflite --tcp 0 | --pty [--energy --power-tcp 0]``."""
    p = argparse.ArgumentParser(prog="python -m devices.virtual_board", description=__doc__.split("\n")[0])
    p.add_argument("model", help=".tflite model to run on the TFLite-Micro interpreter")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT (0 = any free port)")
    g.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal (prints /dev/pts/N)")
    p.add_argument("--energy", action="store_true", help="energy timestamp mode with a simulated power trace")
    p.add_argument("--power-tcp", type=int, metavar="PORT", default=None,
                   help="with --energy: emulate an LPM01A power monitor on 127.0.0.1:PORT (default: a pty)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sim-inference-us", type=float, default=1000.0, help="simulated time per inference")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    a = p.parse_args(argv)
    if not Path(a.model).is_file():
        print(f"Error: model file not found: {a.model}", file=sys.stderr)
        return 1
    board = VirtualBoard(a.model, energy=a.energy, seed=a.seed, sim_inference_us=a.sim_inference_us)
    addr = board.serve(tcp=a.tcp if not a.pty else None)
    print(f"dut: {addr}", flush=True)
    if a.energy:
        print(f"power monitor (LPM01A emulation): {board.serve_power_monitor(a.power_tcp)}", flush=True)
    end = time.monotonic() + a.duration if a.duration else None
    try:
        while end is None or time.monotonic() < end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
