"""The android target: LiteRT's ``benchmark_model`` on a phone over adb.

``android`` (the one attached device) or ``android:SERIAL``. The user provides the
``benchmark_model`` binary for the phone's ABI with ``--option benchmark_model=PATH`` (no wheel
ships it; docs/devices-remote.md says where to get one). The binary and the model are pushed to
``/data/local/tmp/edge_lottery``, run with the thread and delegate flags, and the run's log is
pulled back and parsed (:mod:`devices.android.benchmark_output`).

Delegates: ``default`` (XNNPACK, benchmark_model's default), ``none`` (``--use_xnnpack=false``),
``xnnpack``, ``gpu``, ``nnapi``. Extras: ``taskset`` (CPU mask, e.g. ``f0`` for the big cores),
``power`` (``auto``: Perfetto power rails when the phone has them; ``off``), ``adb_host``,
``adb_port``. Energy is reported only from ODPM power rails and is labelled as covering the whole
``benchmark_model`` process; without rails no energy figure is produced and the record says why.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

from devices import DeviceError
from devices.android import adb
from devices.android.benchmark_output import OutputError, parse_benchmark_output
from devices.android.power import PERFETTO_CONFIG, TraceError, parse_power_rails
from devices.environment import host_environment
from devices.records import BenchRecord, Figure, model_sha256
from devices.settings import BenchSettings
from edge_lottery.errors import expected

__all__ = ["AndroidTarget", "make_target", "benchmark_flags"]

DELEGATE_FLAGS = {
    "default": [],
    "none": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}
TRACE_PATH = "/data/misc/perfetto-traces/edge_lottery.pftrace"


def benchmark_flags(settings: BenchSettings, remote_model: str) -> list[str]:
    """The ``benchmark_model`` command-line flags for ``settings``."""
    if settings.delegate not in DELEGATE_FLAGS:
        raise DeviceError(expected("delegate for android", " | ".join(DELEGATE_FLAGS), settings.delegate))
    if settings.mode == "accuracy":
        raise DeviceError("the android target measures latency and energy; benchmark_model has no accuracy "
                          "mode (use --target host or tflm for accuracy)")
    return [f"--graph={remote_model}", f"--num_threads={settings.threads}", f"--num_runs={settings.runs}",
            f"--warmup_runs={settings.warmup}", *DELEGATE_FLAGS[settings.delegate]]


def _uptime_ms(device: Any) -> float | None:
    r = adb.shell(device, "cat /proc/uptime", timeout=10)
    try:
        return float(r.output.split()[0]) * 1000.0
    except (IndexError, ValueError):
        return None


class AndroidTarget:
    def __init__(self, serial: str | None) -> None:
        self.serial = serial
        self.name = f"android:{serial}" if serial else "android"

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DeviceError(expected("model", "an existing .tflite file", str(model_path)))
        binary = settings.extra.get("benchmark_model")
        if not binary:
            raise DeviceError("the android target needs a benchmark_model binary for the phone: add "
                              "--option benchmark_model=PATH (see docs/devices-remote.md)")
        if not Path(binary).is_file():
            raise DeviceError(expected("--option benchmark_model", "an existing binary file", binary))
        power_mode = settings.extra.get("power", "auto")
        if power_mode not in ("auto", "off"):
            raise DeviceError(expected("--option power", "auto | off", power_mode))
        digest = model_sha256(model_path)
        remote_model = f"{adb.REMOTE_DIR}/model_{digest[:12]}.tflite"
        flags = benchmark_flags(settings, remote_model)

        client = adb.connect(settings.extra.get("adb_host"), int(settings.extra.get("adb_port", "0")) or None)
        device = adb.select_device(client, self.serial)
        props = {}
        for key in ("ro.product.cpu.abi", "ro.product.model", "ro.build.version.release", "ro.soc.model"):
            props[key] = adb.shell(device, f"getprop {key}", timeout=10).output.strip()
        adb.shell(device, f"mkdir -p {adb.REMOTE_DIR}", timeout=10)
        adb.push(device, Path(binary), f"{adb.REMOTE_DIR}/benchmark_model", mode=0o755)
        adb.push(device, model_path, remote_model)

        power_note, perfetto_pid = "off (--option power=off)", None
        if power_mode == "auto":
            adb.push(device, PERFETTO_CONFIG.encode(), f"{adb.REMOTE_DIR}/power.cfg")
            r = adb.shell(device, f"perfetto --background --txt -c {adb.REMOTE_DIR}/power.cfg -o {TRACE_PATH}",
                          timeout=20)
            pid = r.output.strip().splitlines()[-1].strip() if r.output.strip() else ""
            if r.returncode == 0 and pid.isdigit():
                perfetto_pid = pid
                time.sleep(0.5)  # let the first rail sample land before the run starts
            else:
                power_note = f"unavailable: perfetto failed ({_last_line(r.output) or f'exit {r.returncode}'})"
        t0 = _uptime_ms(device)
        taskset = settings.extra.get("taskset")
        prefix = f"taskset {shlex.quote(taskset)} " if taskset else ""
        cmd = (f"cd {adb.REMOTE_DIR} && {prefix}./benchmark_model {' '.join(shlex.quote(f) for f in flags)} "
               f"> run.log 2>&1")
        r = adb.shell(device, cmd, timeout=settings.timeout_s * 4 + 60)
        t1 = _uptime_ms(device)
        log = adb.pull(device, f"{adb.REMOTE_DIR}/run.log").decode("utf-8", "replace")
        parsed = parse_benchmark_output(log, final=True)
        if r.returncode != 0:
            sig = f" (killed by signal {r.returncode - 128})" if r.returncode > 128 else ""
            last = parsed.errors[-1] if parsed.errors else _last_line(log) or "no output"
            raise DeviceError(f"benchmark_model exited with code {r.returncode}{sig} on {device.serial}: {last[:160]}; "
                              f"check the binary matches the phone's ABI ({props['ro.product.cpu.abi'] or '?'}) "
                              f"and the delegate is supported")
        try:
            avg_us = parsed.require_timing()
        except OutputError as exc:
            raise DeviceError(f"{exc} on {device.serial}; is --option benchmark_model really LiteRT's "
                              f"benchmark_model?") from None

        figures = self._figures(parsed, avg_us, settings)
        if perfetto_pid is not None:
            power_note, energy = self._power(device, perfetto_pid, t0, t1, parsed)
            if energy is not None:
                figures.append(energy)
        env = host_environment(device={
            "kind": "android", "serial": device.serial, "abi": props["ro.product.cpu.abi"],
            "model": props["ro.product.model"], "android": props["ro.build.version.release"],
            "soc": props["ro.soc.model"], "benchmark_model": Path(binary).name,
            "benchmark_model_sha256": model_sha256(binary), "power": power_note,
            "delegates_reported": parsed.delegates,
        })
        return [BenchRecord(model=str(model_path), model_sha256=digest, target=f"android:{device.serial}",
                            settings=settings.to_json(), environment=env, figures=tuple(figures))]

    @staticmethod
    def _figures(parsed: Any, avg_us: float, settings: BenchSettings) -> list[Figure]:
        run = parsed.run
        n = run.count if run is not None else settings.runs
        note = f"benchmark_model, count={n}, {settings.threads} thread(s), delegate {settings.delegate}"
        figs = [Figure("latency_mean", avg_us / 1e3, "ms", "measured", note)]
        if run is not None:
            for name, value in (("latency_p50", run.median), ("latency_min", run.min), ("latency_max", run.max),
                                ("latency_std", run.std), ("latency_p95", run.p95)):
                if value is not None:
                    figs.append(Figure(name, value / 1e3, "ms", "measured", note))
        figs.append(Figure("throughput", 1e6 / avg_us if avg_us > 0 else float("nan"), "inferences/s", "measured",
                           "1 / mean latency, batch 1"))
        if parsed.first_us is not None:
            figs.append(Figure("first_inference", parsed.first_us / 1e3, "ms", "measured", "benchmark_model"))
        init_ms = parsed.init_us / 1e3 if parsed.init_us is not None else parsed.init_ms
        if init_ms is not None:
            figs.append(Figure("init_time", init_ms, "ms", "measured", "benchmark_model session init"))
        if parsed.peak_memory_mb is not None:
            figs.append(Figure("peak_memory", parsed.peak_memory_mb * 2**20, "bytes", "measured",
                               "benchmark_model periodic monitoring"))
        return figs

    @staticmethod
    def _power(device: Any, pid: str, t0: float | None, t1: float | None, parsed: Any) -> tuple[str, Figure | None]:
        adb.shell(device, f"kill -TERM {pid}", timeout=10)
        time.sleep(1.0)
        try:
            rails = parse_power_rails(adb.pull(device, TRACE_PATH))
        except (DeviceError, TraceError) as exc:
            return f"unavailable: no trace ({exc})", None
        if not rails.samples or t0 is None or t1 is None:
            return "unavailable: this phone's Perfetto trace has no power rails (ODPM needs Pixel 6 or later)", None
        energy_j = rails.energy_between(t0, t1)
        runs = (parsed.run.count if parsed.run else 0) + (parsed.warmup.count if parsed.warmup else 0)
        if runs <= 0 or energy_j <= 0:
            return "unavailable: rails did not advance during the run", None
        names = ", ".join(sorted(rails.names.values())) or "unnamed rails"
        fig = Figure("energy_per_inference", energy_j / runs * 1e6, "uJ", "measured",
                     f"ODPM power rails ({names}) via Perfetto over the whole benchmark_model process "
                     f"(init + warmup + runs) divided by {runs} invocations; includes idle SoC power")
        return f"perfetto power rails: {names}", fig


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def make_target(arg: str | None) -> AndroidTarget:
    return AndroidTarget(arg)
