"""Host side of the MLPerf Tiny / EEMBC EnergyRunner protocol over any byte stream.

Why our own host instead of the MLCommons runner: the runner finds devices by USB VID:PID and
drives them through an interface board, so it cannot talk to a pty, a TCP serial port or a board
wired straight to a USB-UART. This module speaks the DUT protocol (docs/mlperf-tiny-protocol.md
§1-§5) over any pyserial-like stream (``serial_for_url`` handles ``/dev/tty...``,
``socket://host:port``, ``rfc2217://`` and ``loop://``) and computes the figures the runner
would: per-window latency, median throughput over windows, top-1 accuracy and energy between
the device's timestamp edges.

Robustness rules: every reply is read through ``m-ready``; a boot banner in the middle of a reply
means the device reset; non-protocol bytes are logged and skipped; a stall ends in a timeout
that names the command and the last line seen. Only idempotent steps are retried: ``name%``,
and a whole *window* (download + ``infer``), which starts from scratch on each attempt.
"""

from __future__ import annotations

import collections
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from devices import DeviceError
from devices.protocol import transcript as tr

__all__ = [
    "ProtocolError",
    "DeviceTimeout",
    "DeviceReset",
    "TransferError",
    "Reply",
    "Identity",
    "InferResult",
    "PerformanceResult",
    "AccuracyResult",
    "EnergyResult",
    "EembcHost",
    "open_stream",
    "measure_performance",
    "measure_accuracy",
    "measure_energy",
    "MAX_INPUT_BYTES",
    "CHUNK_BYTES",
    "CHUNK_BYTES_ENERGY",
]

MAX_INPUT_BYTES = 96 * 96 * 3  # MAX_DB_INPUT_SIZE of the upstream DUT library
CHUNK_BYTES = 31  # data bytes per `db` line, as the upstream runner (80-char command buffer)
CHUNK_BYTES_ENERGY = 26  # through an interface board in energy mode
MIN_WINDOW_S = 10.0  # runner's "error 2": a window shorter than this is not a valid result


class ProtocolError(DeviceError):
    """The device answered, but not as the protocol says (an ``e-[...]`` line or a bad reply)."""


class DeviceTimeout(ProtocolError):
    """The device stopped sending before its reply ended with ``m-ready``."""


class DeviceReset(ProtocolError):
    """The device printed its boot banner in the middle of a reply."""


class TransferError(ProtocolError):
    """An input download or a result came back incomplete or corrupted (dropped bytes)."""


class Stream(Protocol):
    """What the host needs from a transport (a pyserial ``Serial`` satisfies it)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    @property
    def in_waiting(self) -> int: ...

    def close(self) -> None: ...


def open_stream(url: str, baudrate: int = 115200, *, what: str = "device") -> Any:
    """Open ``url`` with pyserial (a device path or any pyserial URL); DeviceError on failure."""
    try:
        import serial
    except ImportError as exc:  # pragma: no cover - pyserial is a declared extra
        raise DeviceError(
            "the serial target needs pyserial; install it with `pip install edge-lottery[serial]`"
        ) from exc
    try:
        # A device path is locked (flock) so two benches never share a board; URLs cannot be.
        extra = {} if "://" in url else {"exclusive": True}
        stream = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, write_timeout=5.0, **extra)
    except serial.SerialException as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = msg.lower()
        if "busy" in low or "resource temporarily unavailable" in low or "could not exclusively lock" in low:
            hint = "close the program that holds it (a serial monitor, another bench) and retry"
        elif "no such file" in low or "could not open port" in low or "connection refused" in low:
            hint = "check the cable and the port name (`python -m serial.tools.list_ports`)"
        elif "permission" in low:
            hint = "add yourself to the 'dialout' group or run with access to the port"
        else:
            hint = "check the port name and that the device is powered"
        raise DeviceError(f"cannot open {what} port {url!r}: {msg}; {hint}") from exc
    except (ValueError, OSError) as exc:
        raise DeviceError(f"cannot open {what} port {url!r}: {exc}; check the port name or URL") from exc
    return stream


@dataclass(frozen=True)
class Reply:
    """Everything the device printed for one command, up to and excluding ``m-ready``."""

    command: str
    lines: tuple[tr.Line, ...]
    noise: tuple[str, ...] = ()

    def of(self, kind: str) -> list[tr.Line]:
        return [ln for ln in self.lines if ln.kind == kind]

    def first(self, kind: str) -> tr.Line | None:
        found = self.of(kind)
        return found[0] if found else None


@dataclass(frozen=True)
class Identity:
    """What ``name%`` and ``profile%`` say about the device."""

    device: str
    vendor: str
    profile: str = ""
    model: str = ""
    mode: str = "unknown"  # "performance" | "energy" | "unknown" (from the boot banner)

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "vendor": self.vendor, "profile": self.profile,
                "model": self.model, "timestamp_mode": self.mode}


@dataclass(frozen=True)
class InferResult:
    """One ``infer N W`` window: its two lap timestamps (absent in energy mode) and the scores."""

    n: int
    warmup: int
    lap_us: tuple[int, ...]
    results: tuple[float, ...]

    @property
    def elapsed_us(self) -> int | None:
        if len(self.lap_us) < 2:
            return None
        return self.lap_us[-1] - self.lap_us[-2]

    @property
    def latency_s(self) -> float | None:
        e = self.elapsed_us
        return None if e is None else e / 1e6 / self.n

    @property
    def throughput(self) -> float | None:
        e = self.elapsed_us
        return None if not e else self.n / (e / 1e6)


@dataclass(frozen=True)
class PerformanceResult:
    windows: tuple[InferResult, ...]
    median_throughput: float
    valid: bool
    notes: tuple[str, ...] = ()

    @property
    def latencies_s(self) -> list[float]:
        return [w.latency_s for w in self.windows if w.latency_s is not None]


@dataclass(frozen=True)
class AccuracyResult:
    correct: int
    total: int
    predictions: tuple[int, ...]

    @property
    def top1(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True)
class EnergyResult:
    per_inference_j: tuple[float, ...]  # one per window
    window_s: tuple[float, ...]
    median_per_inference_j: float
    average_power_w: float
    valid: bool
    notes: tuple[str, ...] = ()


@dataclass
class EembcHost:
    """A session with one device under test over ``stream``.

    ``timeout_s`` is an *inactivity* timeout: a reply may take as long as it likes as long as
    bytes keep arriving within ``timeout_s`` of each other (an ``infer`` with a large N is silent
    between its two lap lines, so give it a timeout above one window).
    """

    stream: Any
    port: str = "device"
    timeout_s: float = 30.0
    retries: int = 2
    log: Callable[[str], None] | None = None
    chunk_bytes: int | None = None
    mode: str = "unknown"
    transcript: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    _buf: bytes = b""
    resets: int = 0

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, **kwargs: Any) -> EembcHost:
        return cls(open_stream(url, baudrate), port=url, **kwargs)

    def close(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - closing a dead port must not mask the real error
            pass

    def __enter__(self) -> EembcHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- low level -------------------------------------------------------------------------
    def _note(self, direction: str, text: str) -> None:
        self.transcript.append(f"{direction} {text}")
        if self.log is not None:
            self.log(f"{direction} {text}")

    def _write(self, text: str) -> None:
        self._note(">", text)
        try:
            self.stream.write(text.encode("ascii"))
            flush = getattr(self.stream, "flush", None)
            if flush is not None:
                flush()
        except Exception as exc:  # serial.SerialException, OSError, socket errors
            raise DeviceError(
                f"writing {text!r} to {self.port} failed: {exc}; check the cable and that the device is powered"
            ) from exc

    def _read_line(self, deadline_s: float, *, inactivity: bool = True) -> str | None:
        """Next complete line, or None when nothing arrived within the (inactivity) timeout."""
        last_activity = started = time.monotonic()
        while True:
            idx = self._buf.find(b"\n")
            if idx >= 0:
                raw = self._buf[:idx].rstrip(b"\r").decode("ascii", errors="replace")
                self._buf = self._buf[idx + 1:]
                self._note("<", raw)
                return raw
            now = time.monotonic()
            if now - last_activity > deadline_s or now - started > 4 * deadline_s + 1.0:
                return None  # silence, or bytes that never form a line
            try:
                waiting = self.stream.in_waiting
                chunk = self.stream.read(max(1, min(waiting, 65536)))
            except Exception as exc:
                raise DeviceError(
                    f"reading from {self.port} failed: {exc}; the device was unplugged or the port closed"
                ) from exc
            if chunk:
                self._buf += chunk
                if inactivity:
                    last_activity = time.monotonic()
                if len(self._buf) > 1 << 16 and b"\n" not in self._buf:
                    self._note("<", f"<{len(self._buf)} bytes without a newline dropped>")
                    self._buf = b""

    def drain(self, quiet_s: float = 0.2, max_s: float = 3.0) -> list[tr.Line]:
        """Read until the line is quiet for ``quiet_s``; note a boot banner's timestamp mode."""
        seen: list[tr.Line] = []
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            raw = self._read_line(quiet_s)
            if raw is None:
                break
            line = tr.classify(raw)
            seen.append(line)
            if line.kind == "timestamp_mode":
                self.mode = line.payload.strip()
        return seen

    def command(self, cmd: str, timeout_s: float | None = None) -> Reply:
        """Send ``cmd%`` and read through ``m-ready``.

        Raises :class:`ProtocolError` on an ``e-[...]`` reply (after reading through ``m-ready``
        so the session stays in step), :class:`DeviceReset` on a boot banner and
        :class:`DeviceTimeout` when the device goes quiet.
        """
        if not cmd or "%" in cmd:
            raise ValueError(f"a command must be non-empty and without '%': {cmd!r}")
        if len(cmd) + 1 > 80:
            raise ValueError(f"command is {len(cmd) + 1} characters; the DUT buffer holds 80")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self._write(cmd + "%")
        lines: list[tr.Line] = []
        noise: list[str] = []
        reset = False
        progress = time.monotonic()  # last protocol line; chatter that is not the protocol does not count
        while True:
            raw = self._read_line(max(0.0, timeout - (time.monotonic() - progress)) + 1e-3)
            if raw is None:
                last = lines[-1].text if lines else (noise[-1] if noise else "nothing")
                raise DeviceTimeout(
                    f"{self.port} did not finish replying to '{cmd}%' within {timeout:g} s of silence "
                    f"(last line: {last!r}); check that the board runs the MLPerf Tiny firmware at this "
                    f"baud rate, or raise --timeout"
                )
            line = tr.classify(raw)
            if line.kind in ("garbage", "empty", "text") and cmd != "help":
                if line.kind != "empty":
                    noise.append(raw)
                if time.monotonic() - progress > timeout:
                    raise DeviceTimeout(
                        f"{self.port} sent only non-protocol text for {timeout:g} s after '{_short(cmd)}%' "
                        f"(e.g. {raw[:40]!r}); check that the board runs the MLPerf Tiny firmware at this baud rate"
                    )
                continue
            progress = time.monotonic()
            if line.kind in ("init_done", "timestamp_mode"):
                reset = True
                if line.kind == "timestamp_mode":
                    self.mode = line.payload.strip()
                continue
            if line.kind == "ready":
                break
            lines.append(line)
        if reset:
            self.resets += 1
            raise DeviceReset(
                f"{self.port} rebooted while answering '{cmd}%' (boot banner seen); check its power "
                f"supply and watchdog"
            )
        reply = Reply(cmd, tuple(lines), tuple(noise))
        errors = reply.of("error")
        if errors:
            raise ProtocolError(f"{self.port} rejected '{_short(cmd)}%': {errors[0].payload}")
        return reply

    # ---- protocol steps --------------------------------------------------------------------
    def sync(self, attempts: int | None = None, timeout_s: float | None = None) -> tuple[str, str]:
        """Drain, then ``name%`` until the device answers with its name (idempotent, retried).

        A benchmark device answers ``name%`` at once, so each try waits at most 2 s (the
        runner's detection timeout), or the session's timeout when that is shorter.
        """
        attempts = self.retries + 1 if attempts is None else attempts
        timeout_s = min(2.0, self.timeout_s) if timeout_s is None else timeout_s
        problems: list[str] = []
        self.drain(quiet_s=0.1, max_s=1.0)
        for _ in range(max(1, attempts)):
            try:
                reply = self.command("name", timeout_s=timeout_s)
            except (DeviceReset, ProtocolError) as exc:  # includes a timeout
                problems.append(str(exc))
                self.drain(quiet_s=0.1, max_s=0.5)
                continue
            name = reply.first("name")
            if name is not None:
                try:
                    return tr.parse_name(name.payload)
                except tr.TranscriptError as exc:
                    problems.append(str(exc))
                    continue
            problems.append(f"reply without a name line: {[ln.text for ln in reply.lines][:3]}")
        raise DeviceError(
            f"{self.port} is not answering as an MLPerf Tiny benchmark device (no 'm-name-' reply to "
            f"'name%' after {max(1, attempts)} tries; last problem: {problems[-1] if problems else 'none'}); "
            f"check the port, the baud rate and that the board runs the benchmark firmware"
        )

    def identify(self) -> Identity:
        """``name%`` then ``profile%``."""
        device, vendor = self.sync()
        profile = model = ""
        try:
            reply = self.command("profile", timeout_s=min(self.timeout_s, 5.0))
            p = reply.first("profile")
            m = reply.first("model")
            profile = p.payload.strip("[]") if p else ""
            model = m.payload.strip("[]") if m else ""
        except ProtocolError:
            pass  # older firmware: profile is informative only
        if self.mode == "unknown":
            # The banner is usually lost (pyserial clears the input on open); `timestamp%` tells
            # the modes apart: a lap line in performance mode, only a GPIO pulse in energy mode.
            try:
                reply = self.command("timestamp", timeout_s=min(self.timeout_s, 5.0))
                self.mode = "performance" if reply.first("lap_us") else "energy"
            except ProtocolError:
                pass
        return Identity(device, vendor, profile, model, self.mode)

    def _chunk(self) -> int:
        if self.chunk_bytes is not None:
            return self.chunk_bytes
        return CHUNK_BYTES_ENERGY if self.mode == "energy" else CHUNK_BYTES

    def download(self, data: bytes) -> None:
        """``db load N`` then ``db HHHH...`` lines; checks ``m-load-done`` arrives exactly at the end."""
        n = len(data)
        if not 0 < n <= MAX_INPUT_BYTES:
            raise DeviceError(
                f"input tensor is {n} bytes; the MLPerf Tiny DUT accepts 1..{MAX_INPUT_BYTES} bytes per download"
            )
        reply = self.command(f"db load {n}")
        exp = reply.first("expecting")
        if exp is None:
            raise TransferError(f"{self.port} did not acknowledge 'db load {n}' with 'm-[Expecting {n} bytes]'")
        try:
            got = tr.parse_expecting(exp.payload)
        except tr.TranscriptError as exc:
            raise TransferError(f"{self.port}: {exc}") from exc
        if got != n:
            raise TransferError(f"{self.port} expects {got} bytes after 'db load {n}'")
        step = self._chunk()
        for start in range(0, n, step):
            part = data[start:start + step]
            reply = self.command("db " + part.hex())
            last = start + step >= n
            done = reply.first("load_done") is not None
            if done and not last:
                raise TransferError(
                    f"{self.port} reported 'm-load-done' after {start + len(part)} of {n} bytes (bytes were "
                    f"duplicated or the count was corrupted)"
                )
            if last and not done:
                raise TransferError(
                    f"{self.port} did not report 'm-load-done' after all {n} bytes (bytes were dropped on the "
                    f"line); lower the baud rate or check the UART wiring"
                )

    def read_buffer(self) -> bytes:
        """``db print``: the device's input buffer, for verifying a download."""
        reply = self.command("db print")
        out = b""
        for ln in reply.of("buffer"):
            out += tr.parse_buffer(ln.payload)
        return out

    def infer(self, n: int, warmup: int, *, expect_results: int | None = None) -> InferResult:
        """``infer N W`` (W always explicit) and parse the laps and the scores."""
        if n < 1 or warmup < 0:
            raise DeviceError(f"infer needs N >= 1 and W >= 0, received N={n}, W={warmup}")
        reply = self.command(f"infer {n} {warmup}")
        if reply.first("infer_done") is None:
            raise TransferError(f"{self.port} answered 'infer {n} {warmup}' without 'm-infer-done'")
        try:
            laps = tuple(tr.parse_lap_us(ln.payload) for ln in reply.of("lap_us"))
            res = reply.first("results")
            if res is None:
                raise tr.TranscriptError("no 'm-results-[...]' line")
            results = tr.parse_results(res.payload)
        except tr.TranscriptError as exc:
            raise TransferError(f"{self.port} sent a corrupted reply to 'infer {n} {warmup}': {exc}") from exc
        if self.mode != "energy" and len(laps) != 2:
            raise TransferError(f"{self.port} sent {len(laps)} 'm-lap-us-' lines for one infer; expected 2")
        if len(laps) == 2 and laps[1] < laps[0]:
            raise TransferError(f"{self.port} timestamps go backwards ({laps[0]} then {laps[1]} us)")
        if expect_results is not None and len(results) != expect_results:
            raise TransferError(
                f"{self.port} returned {len(results)} scores; the model has {expect_results} outputs"
            )
        return InferResult(n, warmup, laps, results)

    def run_window(self, data: bytes, n: int, warmup: int, *, expect_results: int | None = None,
                   before_infer: Callable[[], None] | None = None) -> InferResult:
        """Download + infer as one idempotent unit, retried after a reset, a stall or bad bytes."""
        problems: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                try:
                    self.sync()
                except DeviceError as exc:
                    raise DeviceError(
                        f"{self.port} stopped answering during a window ({problems[-1]}); resynchronising "
                        f"with 'name%' failed too; power-cycle or reflash the board and retry"
                    ) from exc
            try:
                self.download(data)
                if before_infer is not None:
                    before_infer()
                return self.infer(n, warmup, expect_results=expect_results)
            except (DeviceReset, TransferError, DeviceTimeout) as exc:
                problems.append(str(exc))
                self._note("!", f"attempt {attempt + 1} failed: {exc}")
            except ProtocolError as exc:  # an e-[...] reply: could be a corrupted line, retry
                problems.append(str(exc))
                self._note("!", f"attempt {attempt + 1} failed: {exc}")
        raise DeviceError(
            f"{self.port}: a window (download + infer {n} {warmup}) failed {self.retries + 1} times; "
            f"last error: {problems[-1]}"
        )


def _short(cmd: str) -> str:
    return cmd if len(cmd) <= 24 else cmd[:21] + "..."


# ---- measurements --------------------------------------------------------------------------

def measure_performance(host: EembcHost, data: bytes, n: int, warmup: int, windows: int = 5, *,
                        expect_results: int | None = None,
                        min_window_s: float = MIN_WINDOW_S) -> PerformanceResult:
    """The runner's performance test: ``windows`` × (download + ``infer N W``), median throughput.

    A result is ``valid`` (MLPerf Tiny rules) only with exactly 5 windows of at least 10 s each;
    shorter runs are still measured and the reasons are listed in ``notes``.
    """
    results = [host.run_window(data, n, warmup, expect_results=expect_results) for _ in range(windows)]
    throughputs = [r.throughput for r in results if r.throughput]
    if not throughputs:
        raise DeviceError(f"{host.port} reported no usable timestamps (zero elapsed time in every window)")
    notes = []
    if windows != 5:
        notes.append(f"{windows} windows, MLPerf Tiny requires 5 (runner error 1)")
    short = [r.elapsed_us / 1e6 for r in results if r.elapsed_us is not None and r.elapsed_us / 1e6 < min_window_s]
    if short:
        notes.append(f"{len(short)} window(s) shorter than {min_window_s:g} s (runner error 2); raise N")
    return PerformanceResult(tuple(results), statistics.median(throughputs), not notes, tuple(notes))


def measure_accuracy(host: EembcHost, samples: Sequence[bytes], labels: Sequence[int], *,
                     expect_results: int | None = None) -> AccuracyResult:
    """Top-1 over a dataset slice: per sample a download and ``infer 1 0`` on the device."""
    if len(samples) != len(labels):
        raise DeviceError(f"accuracy mode: {len(samples)} inputs but {len(labels)} labels")
    preds = []
    correct = 0
    for data, label in zip(samples, labels, strict=True):
        r = host.run_window(data, 1, 0, expect_results=expect_results)
        pred = max(range(len(r.results)), key=lambda i: r.results[i])
        preds.append(pred)
        correct += int(pred == int(label))
    return AccuracyResult(correct, len(samples), tuple(preds))


def measure_energy(host: EembcHost, instrument: Any, data: bytes, n: int, warmup: int, windows: int = 5, *,
                   expect_results: int | None = None, min_window_s: float = MIN_WINDOW_S) -> EnergyResult:
    """The runner's energy test: energy between the last two timestamp edges of each window / N.

    ``instrument`` has ``start()`` and ``stop() -> PowerTrace`` (see :mod:`devices.instruments`).
    Acquisition starts before the ``infer`` command so its two edges (before and after the timed
    loop) are both inside the trace.
    """
    per_inf: list[float] = []
    spans: list[float] = []
    energies: list[float] = []
    for _ in range(windows):
        started = False

        def _start() -> None:
            nonlocal started
            if started:
                instrument.stop()
            instrument.start()
            started = True

        host.run_window(data, n, warmup, expect_results=expect_results, before_infer=_start)
        trace = instrument.stop()
        edges = list(trace.edges)
        if len(edges) < 2:
            raise DeviceError(
                f"the power monitor saw {len(edges)} timestamp edge(s) during 'infer {n} {warmup}'; expected 2. "
                f"Check the wire from the DUT's timestamp GPIO to the monitor's event/logic input"
            )
        t0, t1 = edges[-2], edges[-1]
        e = trace.energy_between(t0, t1)
        energies.append(e)
        spans.append(t1 - t0)
        per_inf.append(e / n)
    notes = []
    if windows != 5:
        notes.append(f"{windows} windows, MLPerf Tiny requires 5")
    if any(s < min_window_s for s in spans):
        notes.append(f"window(s) shorter than {min_window_s:g} s; raise N for a valid MLPerf Tiny result")
    power = sum(energies) / sum(spans) if sum(spans) > 0 else 0.0
    return EnergyResult(tuple(per_inf), tuple(spans), statistics.median(per_inf), power, not notes, tuple(notes))
