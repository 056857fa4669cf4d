"""The serial target: a microcontroller running MLPerf Tiny / EEMBC benchmark firmware.

``serial:PORT`` where PORT is a device path (``/dev/ttyACM0``) or any pyserial URL
(``socket://127.0.0.1:PORT`` for the virtual board or QEMU, ``rfc2217://`` for a networked
port). Settings map onto the runner's vocabulary: ``runs`` = N inferences per window, ``warmup``
= W; ``extra``: ``baud`` (115200), ``windows`` (5), ``retries`` (2), ``chunk`` (bytes per ``db``
line), ``max_samples`` (accuracy slice), ``min_window_s`` (10) and ``instrument`` (energy mode,
e.g. ``lpm01a:/dev/ttyACM1``, ``ppk2:/dev/ttyACM2``, ``joulescope``; see
:mod:`devices.instruments`). Latency and throughput come from the device's own ``m-lap-us``
timestamps, so they are ``measured``; energy is reported only when an instrument measured it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from devices import DeviceError
from devices.environment import host_environment
from devices.protocol import eembc
from devices.records import BenchRecord, Figure, latency_figures, model_sha256
from devices.settings import BenchSettings
from devices.virtual_board import VIRTUAL_VENDOR
from edge_lottery.errors import expected

__all__ = ["SerialTarget", "make_target"]


def _int(settings: BenchSettings, key: str, default: int, minimum: int = 0) -> int:
    raw = settings.extra.get(key, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise DeviceError(expected(f"--option {key}", f"an integer >= {minimum}", raw)) from None
    if value < minimum:
        raise DeviceError(expected(f"--option {key}", f"an integer >= {minimum}", raw))
    return value


def _model_io(model_path: Path) -> tuple[list[dict[str, Any]], int]:
    """Input details (for quantizing inputs) and the number of output scores.

    Read with the TFLite-Micro interpreter, which is what a device runs, so that packed models
    (TFLM_DECODE operators, which LiteRT cannot load) work as well as plain ones.
    """
    from devices.targets.tflm import count_inputs, input_details, try_allocate

    model = model_path.read_bytes()
    interp = try_allocate(model, max(10 * len(model), 1 << 20), 0)
    if interp is None:
        raise DeviceError(f"TFLite-Micro cannot load {model_path}; check it with `edge-lottery bench "
                          f"{model_path} --target tflm`")
    inputs = input_details(interp, count_inputs(model))
    if len(inputs) != 1:
        raise DeviceError(expected("model inputs for an MLPerf Tiny device", "exactly 1 input tensor", len(inputs)))
    n_out = int(np.prod(interp.get_output_details(0)["shape"]))
    return inputs, n_out


def _as_bytes(sample: list[Any]) -> bytes:
    return np.ascontiguousarray(sample[0]).tobytes()


class SerialTarget:
    """One MLPerf Tiny DUT behind a serial port or pyserial URL."""

    def __init__(self, port: str) -> None:
        self.port = port
        self.name = f"serial:{port}"

    def _open(self, settings: BenchSettings) -> eembc.EembcHost:
        baud = _int(settings, "baud", 115200, 1)
        chunk = settings.extra.get("chunk")
        host = eembc.EembcHost(eembc.open_stream(self.port, baud, what="benchmark device"), port=self.port,
                               timeout_s=settings.timeout_s, retries=_int(settings, "retries", 2),
                               chunk_bytes=_int(settings, "chunk", 31, 1) if chunk else None)
        if chunk and not 1 <= host.chunk_bytes <= 37:  # 3 + 2*37 + 1 = 78 characters < 80
            host.close()
            raise DeviceError(expected("--option chunk", "1..37 bytes per db line (80-character buffer)", chunk))
        return host

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]:
        from devices.targets.host import make_inputs

        model_path = Path(model_path)
        if not model_path.is_file():
            raise DeviceError(expected("model", "an existing .tflite file", str(model_path)))
        instrument = None
        if settings.mode == "energy":
            spec = settings.extra.get("instrument")
            if not spec:
                raise DeviceError("energy mode needs a power monitor: add --option instrument=lpm01a:PORT "
                                  "(or ppk2:PORT, joulescope); see docs/devices-remote.md")
            from devices.instruments import open_instrument

            instrument = open_instrument(spec)
        details, n_out = _model_io(model_path)
        samples, labels = make_inputs(details, settings, 1)
        windows = _int(settings, "windows", 5, 1)
        min_window = float(settings.extra.get("min_window_s", eembc.MIN_WINDOW_S))
        host = self._open(settings)
        try:
            identity = host.identify()
            if settings.mode == "energy":
                host.mode = "energy"
            env = host_environment(device={
                "kind": "serial", "port": self.port, "baud": _int(settings, "baud", 115200, 1),
                **identity.to_dict(),
                **({"instrument": instrument.name} if instrument is not None else {}),
            })
            figures: list[Figure] = []
            proto_note = "MLPerf Tiny protocol"
            if settings.mode == "accuracy":
                if labels is None:
                    raise DeviceError(expected("accuracy mode labels", "--labels NPZ or y/y_test in --inputs", None))
                acc = eembc.measure_accuracy(host, [_as_bytes(s) for s in samples], [int(v) for v in labels],
                                             expect_results=n_out)
                figures.append(Figure("accuracy_top1", acc.top1, "fraction", "measured",
                                      f"n={acc.total}, inference on the device ({proto_note}, infer 1 0)"))
            elif settings.mode == "performance":
                if identity.mode == "energy":
                    raise DeviceError(f"{self.port} runs energy-mode firmware (no timestamps over UART); use "
                                      "--mode energy with an instrument, or flash the performance build")
                perf = eembc.measure_performance(host, _as_bytes(samples[0]), settings.runs, settings.warmup,
                                                 windows, expect_results=n_out, min_window_s=min_window)
                note = f"per window: elapsed/N, N={settings.runs}, W={settings.warmup}, {windows} windows"
                if perf.notes:
                    note += "; " + "; ".join(perf.notes)
                figures.extend(latency_figures(perf.latencies_s, note=note))
                figures.append(Figure("throughput", perf.median_throughput, "inferences/s", "measured",
                                      "median over windows of N / (lap2 - lap1)" +
                                      ("" if perf.valid else "; not a valid MLPerf Tiny result: " +
                                       "; ".join(perf.notes))))
            else:
                assert instrument is not None
                try:
                    en = eembc.measure_energy(host, instrument, _as_bytes(samples[0]), settings.runs,
                                              settings.warmup, windows, expect_results=n_out,
                                              min_window_s=min_window)
                finally:
                    instrument.close()
                note = f"{instrument.name}: energy between the last two timestamp edges / N, median of {windows}"
                if en.notes:
                    note += "; " + "; ".join(en.notes)
                # The virtual board's power trace and clock are simulated: never pass them off as measured.
                kind = "estimated" if identity.vendor == VIRTUAL_VENDOR else "measured"
                if kind == "estimated":
                    note = "simulated by the virtual board; " + note
                figures.append(Figure("energy_per_inference", en.median_per_inference_j * 1e6, "uJ", kind, note))
                figures.append(Figure("power_mean", en.average_power_w * 1e3, "mW", kind,
                                      "energy / time between the timestamp edges"))
                lat = [s / settings.runs for s in en.window_s]
                figures.extend(latency_figures(lat, kind=kind, note="from the monitor's edge times / N"))
            if host.resets:
                env["device"]["resets_during_run"] = host.resets
        finally:
            host.close()
        return [BenchRecord(model=str(model_path), model_sha256=model_sha256(model_path), target=self.name,
                            settings=settings.to_json(), environment=env, figures=tuple(figures))]


def make_target(arg: str | None) -> SerialTarget:
    if not arg:
        raise DeviceError(expected("target", "serial:PORT (a device path or socket://HOST:PORT)", "serial"))
    return SerialTarget(arg)
