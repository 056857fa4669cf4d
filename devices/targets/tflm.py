"""The tflm target: the stock TFLite-Micro interpreter (``tflite_micro.runtime``) on the host.

It reports what a microcontroller build needs to know: the **exact** tensor-arena size a model
needs (the smallest ``arena_size`` that allocates, found by bisection with real allocations, and
checked so that the value allocates and the value minus one does not), and for packed models
(those with ``TFLM_DECODE`` operators) the arena with alternate decompression memory and the
smallest such memory. Latency here is TFLM's reference kernels on x86: useful to compare models
with each other, not as a prediction of a board's latency (use ``estimate:PROFILE`` or a board).

The arena search itself is :mod:`converters.tflm.arena` (shared with the packer): probes run in
forked children of a TensorFlow-free worker, because the wheel aborts the process for arenas
far too small.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from converters import ConverterError
from devices import DeviceError
from devices.environment import host_environment
from devices.records import BenchRecord, Figure, latency_figures, model_sha256
from devices.settings import BenchSettings
from edge_lottery.errors import expected

#: Arena used to check that a model runs at all (bytes).
CHECK_ARENA = 64 << 20


def _arena_module() -> Any:
    try:
        from converters.tflm import arena
    except ImportError as exc:
        raise DeviceError(f"the tflm target needs converters.tflm.arena and tflite-micro ({exc}); "
                          "pip install tflite-micro") from None
    return arena


def try_allocate(model: bytes, arena_size: int, alt_decompression_memory_size: int = 0) -> Any:
    """An interpreter allocated in exactly ``arena_size`` bytes, or None if it does not fit.

    In-process: only for sizes near the answer (the wheel aborts the process for arenas far too
    small; the bisection in :mod:`converters.tflm.arena` probes in forked children instead).
    """
    try:
        return _arena_module().interpreter(model, int(arena_size), int(alt_decompression_memory_size))
    except ConverterError:
        return None


def check_runnable(model: bytes) -> None:
    """Raise a one-line :class:`DeviceError` if TFLM cannot run the model at any arena size."""
    try:
        _arena_module().interpreter(model, CHECK_ARENA, 0)
    except ConverterError as exc:
        raise DeviceError(f"{exc}; only operators of the stock TFLite-Micro resolver run - check them "
                          "with `edge-lottery inspect`") from None


def decoded_bytes(model: bytes) -> int:
    """Bytes of all DECODE outputs (16-byte aligned each): the alternate memory that holds them."""
    from devices.targets.estimate import read_model

    graph = read_model(model)
    total = 0
    for name, _ins, outs, _opts in graph.ops:
        if name == "TFLM_DECODE":
            total += sum((graph.tensors[o].nbytes + 15) // 16 * 16 for o in outs)
    return total


def find_arena_size(model: bytes, alt_decompression_memory_size: int = 0) -> int:
    """The exact smallest ``arena_size`` with which the stock interpreter runs ``model``."""
    check_runnable(model)
    alt = int(alt_decompression_memory_size)
    info = measure_arena(model, alt)
    return int(info["min_arena_with_alt"] if alt else info["min_arena"])


def exact_minimum_arena(model: bytes, alt_decompression_memory_size: int = 0) -> int:
    """Smallest arena that allocates and invokes, verified: the answer runs and answer - 1 fails.

    :func:`converters.tflm.arena.minimum_arena` starts its bisection at the recorder's total,
    which is not always a lower bound (observed: total 2480 with a large arena, yet 2472 bytes
    run), so its answer is checked here and the search continues below it when needed.
    Probes run in forked children (``arena._probe``) because tiny arenas abort the process.
    """
    arena = _arena_module()
    alt = int(alt_decompression_memory_size)
    hi = int(arena.minimum_arena(model, alt))
    if not arena._probe(model, hi, alt)[0]:
        raise DeviceError(f"arena search is not monotone for this model (found {hi} bytes, which fails)")
    if arena._probe(model, hi - 1, alt)[0]:
        lo = 0
        hi -= 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if arena._probe(model, mid, alt)[0]:
                hi = mid
            else:
                lo = mid
        if arena._probe(model, hi - 1, alt)[0]:
            raise DeviceError(f"arena search did not converge near {hi} bytes (allocation is not monotone)")
    return hi


def _arena_worker() -> None:
    """``python -m devices.targets.tflm ALT``: model on stdin, arena sizes as JSON on stdout.

    A separate process that never imports TensorFlow: forking a probe from it takes
    milliseconds, from a process holding TensorFlow hundreds.
    """
    import json
    import sys

    model = sys.stdin.buffer.read()
    alt = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    try:
        minimum = exact_minimum_arena(model)
        total = _arena_module().recorded_allocations(model, minimum).get("total", 0)
        with_alt = exact_minimum_arena(model, alt) if alt else None
    except (ConverterError, DeviceError) as exc:
        print(json.dumps({"error": str(exc)}))
        return
    print(json.dumps({"min_arena": minimum, "recorded_total": total, "min_arena_with_alt": with_alt}))


def measure_arena(model: bytes, alt_decompression_memory_size: int = 0) -> dict[str, Any]:
    """Run :func:`_arena_worker` in a fresh process: min_arena, recorded_total, min_arena_with_alt."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-P", "-m", "devices.targets.tflm", str(int(alt_decompression_memory_size))],
                          input=bytes(model), capture_output=True, timeout=900)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"arena measurement failed: {tail[:200]}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise DeviceError(f"arena measurement failed: {out['error']}")
    return out


def arena_figures(model: bytes) -> list[Figure]:
    """Exact arena bytes (and with alternate decompression memory for packed models)."""
    check_runnable(model)
    packed = model_has_decode(model)
    alt = decoded_bytes(model) if packed else 0
    info = measure_arena(model, alt)
    figures = [
        Figure("arena_bytes", info["min_arena"], "bytes", "measured",
               "smallest arena_size that allocates and invokes (bisected; -1 byte fails)"),
        Figure("arena_recorded_total", info["recorded_total"], "bytes", "measured",
               "RecordingMicroAllocator total at that arena"),
    ]
    if packed and info.get("min_arena_with_alt") is not None:
        figures.append(Figure("alt_decompression_bytes", alt, "bytes", "measured",
                              "alternate decompression memory given: all DECODE outputs, 16-byte aligned"))
        figures.append(Figure("arena_bytes_with_alt", info["min_arena_with_alt"], "bytes", "measured",
                              f"smallest arena with {alt} bytes of alternate decompression memory"))
    return figures


def model_has_decode(model: bytes) -> bool:
    """True when the model contains a ``TFLM_DECODE`` custom operator (a packed model)."""
    from devices.targets.estimate import read_model

    return any(code == "TFLM_DECODE" for code in read_model(model).custom_codes)


def input_details(interp: Any, count: int) -> list[dict[str, Any]]:
    details = []
    for i in range(count):
        d = interp.get_input_details(i)
        q = d.get("quantization_parameters", {})
        scales, zeros = q.get("scales", []), q.get("zero_points", [])
        details.append({"name": f"input{i}", "index": i, "dtype": d["dtype"], "shape": list(d["shape"]),
                        "quantization": (float(scales[0]) if len(scales) else 0.0,
                                         int(zeros[0]) if len(zeros) else 0)})
    return details


def count_inputs(model: bytes) -> int:
    from devices.targets.estimate import read_model

    return len(read_model(model).inputs)


class TflmTarget:
    """TFLite-Micro reference kernels on the host: exact arena size and relative latency."""

    name = "tflm"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]:
        import numpy as np

        from devices.targets.host import make_inputs

        model_path = Path(model_path)
        if not model_path.is_file():
            raise DeviceError(expected("model", "an existing .tflite file", str(model_path)))
        if settings.mode == "energy":
            raise DeviceError("the tflm target cannot measure energy; use --target serial:PORT with an "
                              "instrument, or --target estimate:PROFILE for an estimate")
        model = model_path.read_bytes()
        try:  # TFLite-Micro trusts the flatbuffer: a corrupted model could crash this process
            from converters.tflm.flatbuffer import check_structure

            check_structure(model)
            _arena_module().check_no_crash(model)
        except ConverterError as exc:
            raise DeviceError(str(exc)) from None
        figures: list[Figure] = []
        figures.extend(arena_figures(model))
        arena = int(figures[0].value)
        requested = settings.extra.get("arena")
        run_arena = int(requested) if requested else arena
        interp = try_allocate(model, run_arena, 0)
        if interp is None:
            raise DeviceError(f"arena of {run_arena} bytes is too small for {model_path}: it needs at "
                              f"least {arena} bytes; drop the arena option or raise it")
        details = input_details(interp, count_inputs(model))
        samples, labels = make_inputs(details, settings, max(1, min(settings.runs, 16)), self.seed)
        for i in range(settings.warmup):
            self._invoke(interp, samples[i % len(samples)])
        latencies: list[float] = []
        deadline = time.monotonic() + settings.timeout_s
        if settings.mode == "accuracy":
            if labels is None:
                raise DeviceError(expected("accuracy mode labels", "--labels NPZ or y/y_test in --inputs", None))
            correct = 0
            for i, sample in enumerate(samples):
                t = time.perf_counter()
                self._invoke(interp, sample)
                latencies.append(time.perf_counter() - t)
                correct += int(np.argmax(np.asarray(interp.get_output(0)).reshape(-1)) == int(labels[i]))
                if time.monotonic() > deadline:
                    raise DeviceError(f"accuracy run exceeded timeout_s={settings.timeout_s}; limit max_samples")
            figures.append(Figure("accuracy_top1", correct / len(samples), "fraction", "measured",
                                  f"n={len(samples)}"))
        else:
            for i in range(settings.runs):
                t = time.perf_counter()
                self._invoke(interp, samples[i % len(samples)])
                latencies.append(time.perf_counter() - t)
                if time.monotonic() > deadline:
                    raise DeviceError(f"benchmark exceeded timeout_s={settings.timeout_s} after {i + 1} runs; "
                                      "lower --runs")
        figures[:0] = latency_figures(latencies, note="TFLM reference kernels on the host x86 CPU")
        figures.append(Figure("model_size", len(model), "bytes", "measured", "file size"))
        env = host_environment(device={"kind": "tflm", "interpreter": "tflite_micro.runtime",
                                       "packed": model_has_decode(model)})
        return [BenchRecord(model=str(model_path), model_sha256=model_sha256(model), target=self.name,
                            settings=settings.to_json(), environment=env, figures=tuple(figures))]

    @staticmethod
    def _invoke(interp: Any, sample: list[Any]) -> None:
        for i, value in enumerate(sample):
            interp.set_input(value, i)
        interp.invoke()


def run_outputs(model: bytes, sample: list[Any], arena_size: int | None = None, alt: int = 0) -> list[Any]:
    """Run one sample and return output 0..n; used to check TFLM against LiteRT."""
    import numpy as np

    interp = try_allocate(model, arena_size or find_arena_size(model, alt), alt)
    if interp is None:
        raise DeviceError(f"TFLite-Micro could not allocate the model in {arena_size} bytes")
    TflmTarget._invoke(interp, sample)
    from devices.targets.estimate import read_model

    return [np.array(interp.get_output(i)) for i in range(len(read_model(model).outputs))]


def make_target(arg: str | None) -> TflmTarget:
    if arg:
        raise DeviceError(expected("tflm target", "tflm (no argument)", f"tflm:{arg}"))
    return TflmTarget()


if __name__ == "__main__":
    _arena_worker()
