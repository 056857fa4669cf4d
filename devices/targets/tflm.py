"""The tflm target: the stock TFLite-Micro interpreter (``tflite_micro.runtime``) on the host.

It reports what a microcontroller build needs to know: the **exact** tensor-arena size a model
needs (the smallest ``arena_size`` that allocates, found by bisection with real allocations, and
checked so that the value allocates and the value minus one does not), and for packed models
(those with ``TFLM_DECODE`` operators) the arena with alternate decompression memory and the
smallest such memory. Latency here is TFLM's reference kernels on x86: useful to compare models
with each other, not as a prediction of a board's latency (use ``estimate:PROFILE`` or a board).

``converters/tflm/arena.py`` did not exist when this was written, so the arena search lives here
(:func:`find_arena_size`); it is public so the packer can reuse it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices import DeviceError
from devices.environment import host_environment
from devices.records import BenchRecord, Figure, latency_figures, model_sha256
from devices.settings import BenchSettings
from edge_lottery.errors import expected

#: Largest arena tried before giving up (bytes).
MAX_ARENA = 256 << 20
_RECORDED = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class _Captured:
    text = ""


@contextlib.contextmanager
def capture_fd2() -> Iterator[_Captured]:
    """Capture what C++ writes to file descriptor 2 (TFLM logs there, not to ``sys.stderr``)."""
    captured = _Captured()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode("utf-8", errors="replace")


def _runtime() -> Any:
    try:
        from tflite_micro import runtime
    except ImportError:
        raise DeviceError("the tflm target needs the tflite-micro wheel: pip install tflite-micro") from None
    return runtime


def try_allocate(model: bytes, arena_size: int, alt_decompression_memory_size: int = 0) -> tuple[Any, str]:
    """(interpreter or None, captured stderr) for one real allocation attempt."""
    runtime = _runtime()
    with capture_fd2() as err:
        try:
            interp = runtime.Interpreter.from_bytes(
                model, custom_op_registerers=[], arena_size=int(arena_size),
                alt_decompression_memory_size=int(alt_decompression_memory_size))
        except RuntimeError:
            interp = None
    return interp, err.text


def _failure_reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "find op" in line or "not supported" in line.lower() or "unsupported" in line.lower():
            return line
    return lines[0] if lines else "TFLM failed to allocate tensors"


def _bisect(ok: Any, start: int, what: str) -> int:
    """Smallest n with ok(n), given ok is monotone; ok(n) is True and ok(n - 1) False on return."""
    lo, hi = 0, max(64, start)
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_ARENA:
            raise DeviceError(f"{what}: no size up to {MAX_ARENA} bytes allocates")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def check_runnable(model: bytes) -> None:
    """Raise a one-line :class:`DeviceError` if TFLM cannot run the model at any arena size."""
    interp, stderr = try_allocate(model, MAX_ARENA // 4, 0)
    if interp is None:
        reason = _failure_reason(stderr)
        raise DeviceError(f"TFLite-Micro cannot run this model ({reason}); only operators in the stock "
                          "resolver are supported - check them with `edge-lottery inspect`")


def find_arena_size(model: bytes, alt_decompression_memory_size: int = 0) -> int:
    """The exact smallest ``arena_size`` with which the stock interpreter allocates ``model``."""
    if alt_decompression_memory_size == 0:
        check_runnable(model)
    found = _bisect(lambda n: try_allocate(model, n, alt_decompression_memory_size)[0] is not None,
                    2 * len(model), "arena size")
    # Verify the answer with fresh allocations: found allocates, found - 1 fails.
    if try_allocate(model, found, alt_decompression_memory_size)[0] is None or \
            try_allocate(model, found - 1, alt_decompression_memory_size)[0] is not None:
        raise DeviceError(f"arena size search did not converge (found {found}); allocation is not monotone")
    return found


def find_alt_decompression_size(model: bytes, arena_size: int) -> int:
    """The smallest alternate decompression memory with which ``model`` allocates in ``arena_size``."""
    return _bisect(lambda n: try_allocate(model, arena_size, n)[0] is not None, 1024,
                   "alternate decompression memory")


def recorded_allocations(model: bytes, arena_size: int, alt: int = 0) -> dict[str, int]:
    """The RecordingMicroAllocator's total/head/tail, parsed from ``print_allocations()``."""
    interp, _ = try_allocate(model, arena_size, alt)
    if interp is None:
        return {}
    with capture_fd2() as err:
        interp.print_allocations()
    return {m.group(1): int(m.group(2)) for m in _RECORDED.finditer(err.text)}


def model_has_decode(model: bytes) -> bool:
    """True when the model contains a ``TFLM_DECODE`` custom operator (a packed model)."""
    from devices.targets.estimate import read_model

    return any(code == "TFLM_DECODE" for code in read_model(model).custom_codes)


def _input_details(interp: Any, count: int) -> list[dict[str, Any]]:
    details = []
    for i in range(count):
        d = interp.get_input_details(i)
        q = d.get("quantization_parameters", {})
        scales, zeros = q.get("scales", []), q.get("zero_points", [])
        details.append({"name": f"input{i}", "index": i, "dtype": d["dtype"], "shape": list(d["shape"]),
                        "quantization": (float(scales[0]) if len(scales) else 0.0,
                                         int(zeros[0]) if len(zeros) else 0)})
    return details


def _count_inputs(model: bytes) -> int:
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
        figures: list[Figure] = []
        packed = model_has_decode(model)
        arena = find_arena_size(model)
        figures.append(Figure("arena_bytes", arena, "bytes", "measured",
                              "smallest arena_size that allocates (verified: -1 byte fails)"))
        recorded = recorded_allocations(model, arena)
        if "total" in recorded:
            figures.append(Figure("arena_recorded_total", recorded["total"], "bytes", "measured",
                                  "RecordingMicroAllocator total (excludes alignment slack)"))
        alt = 0
        if packed:
            alt = find_alt_decompression_size(model, MAX_ARENA // 4)
            arena_alt = find_arena_size(model, alt)
            figures.append(Figure("alt_decompression_bytes", alt, "bytes", "measured",
                                  "smallest alternate decompression memory for the DECODE outputs"))
            figures.append(Figure("arena_bytes_with_alt", arena_alt, "bytes", "measured",
                                  f"smallest arena with {alt} bytes of alternate decompression memory"))
        requested = settings.extra.get("arena")
        run_arena = int(requested) if requested else arena
        interp, stderr = try_allocate(model, run_arena, 0)
        if interp is None:
            raise DeviceError(f"arena of {run_arena} bytes is too small for {model_path} "
                              f"({_failure_reason(stderr)}); it needs at least {arena} bytes")
        details = _input_details(interp, _count_inputs(model))
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
                                       "packed": packed})
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

    interp, stderr = try_allocate(model, arena_size or find_arena_size(model, alt), alt)
    if interp is None:
        raise DeviceError(f"TFLite-Micro could not allocate the model ({_failure_reason(stderr)})")
    TflmTarget._invoke(interp, sample)
    from devices.targets.estimate import read_model

    return [np.array(interp.get_output(i)) for i in range(len(read_model(model).outputs))]


def make_target(arg: str | None) -> TflmTarget:
    if arg:
        raise DeviceError(expected("tflm target", "tflm (no argument)", f"tflm:{arg}"))
    return TflmTarget()
