"""The host target: the LiteRT interpreter on this machine (latency, peak memory, accuracy).

Each model is measured in a fresh worker process (``python -m devices.targets.host``) so that its
peak memory is its own (VmHWM is reset through ``/proc/self/clear_refs`` before the model is
loaded, and ``peak_memory`` = VmHWM at the end - VmRSS at the reset), a crashing delegate cannot
take the CLI down, and ``timeout_s`` is enforced. The same functions run in-process for tests.

LiteRT's Python API exposes no per-operator profiler, so per-operator time is not measured here:
with ``extra={"profile_ops": "1"}`` the record gets per-operator MAC counts and the measured mean
latency apportioned by MACs, both labelled ``estimated``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devices import DeviceError
from devices.environment import host_environment
from devices.records import BenchRecord, Figure, failed_record, latency_figures, model_sha256
from devices.settings import BenchSettings
from edge_lottery.errors import expected

INPUT_KEYS = ("x", "inputs", "x_test", "input")
LABEL_KEYS = ("y", "labels", "y_test", "label")


# ---------------------------------------------------------------- interpreter construction
def interpreter_module() -> Any:
    """LiteRT's interpreter module; falls back to ``tflite_runtime`` and then ``tf.lite``."""
    try:
        from ai_edge_litert import interpreter

        return interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter  # type: ignore[import-not-found]

        return interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite
    except ImportError:
        raise DeviceError("the host target needs a TFLite interpreter: pip install ai-edge-litert") from None


def _delegates(delegate: str, options: dict[str, str]) -> tuple[list[Any], bool]:
    """(experimental_delegates, use_builtin_default_delegates) for a delegate name or .so path."""
    module = interpreter_module()
    if delegate == "default":
        return [], True
    if delegate == "none":
        return [], False
    if delegate == "sparse":
        # The project's delegate claims sparse FULLY_CONNECTED / CONV_2D nodes; XNNPACK keeps the rest.
        try:
            from converters import ConverterError
            from converters import delegate as sparse_delegate

            loaded = sparse_delegate.load(options or None)
        except (ImportError, AttributeError, OSError, ConverterError) as exc:
            raise DeviceError(
                f"delegate 'sparse': the project's sparse delegate is not usable ({exc}); "
                "rebuild with `pip install -e .` or use --delegate default"
            ) from None
        return [loaded], True
    path = Path(delegate)
    if not path.is_file():
        raise DeviceError(expected("delegate", "default | none | sparse | path to a delegate .so", delegate))
    try:
        return [module.load_delegate(str(path), options or None)], True
    except (ValueError, OSError, RuntimeError) as exc:
        raise DeviceError(f"delegate {delegate}: could not be loaded ({exc}); check the library path") from None


def make_interpreter(model: str | os.PathLike[str] | bytes, threads: int = 1, delegate: str = "default",
                     delegate_options: dict[str, str] | None = None) -> Any:
    """An allocated LiteRT interpreter with the threads and delegate asked for."""
    module = interpreter_module()
    delegates, builtin_defaults = _delegates(delegate, dict(delegate_options or {}))
    kwargs: dict[str, Any] = {"num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if not builtin_defaults:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": os.fspath(model)}
    try:
        interp = module.Interpreter(**source, **kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split()).split(".")[0]
        raise DeviceError(f"the host interpreter cannot run this model ({message[:200]}); "
                          "check the operators with `edge-lottery inspect`") from None
    return interp


# ---------------------------------------------------------------- inputs
def _pick(arrays: dict[str, Any], names: Sequence[str], what: str, path: str) -> Any:
    for name in names:
        if name in arrays:
            return arrays[name]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise DeviceError(expected(f"{what} in {path}", "an array named " + " / ".join(names), sorted(arrays)))


def _to_input(array: Any, detail: dict[str, Any], scale: float) -> Any:
    """One sample converted to an input tensor: quantized with the input's parameters if needed."""
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(s) for s in detail["shape"])
    if array.size != int(np.prod(shape)):
        raise DeviceError(expected(f"input sample size for {detail['name']}", f"{int(np.prod(shape))} values "
                                   f"(shape {list(shape)})", f"{array.size} values (shape {list(array.shape)})"))
    if array.dtype == dtype and scale == 1.0:
        return array.reshape(shape)
    real = array.astype(np.float64) * scale
    q_scale, zero = detail.get("quantization", (0.0, 0))
    if np.issubdtype(dtype, np.integer) and q_scale:
        info = np.iinfo(dtype)
        real = np.clip(np.round(real / q_scale + zero), info.min, info.max)
    return real.astype(dtype).reshape(shape)


def _load_npz(path: Path, option: str) -> dict[str, Any]:
    """The arrays of an .npz file, or a one-line DeviceError naming the option and the file."""
    import zipfile

    import numpy as np

    what = f"{option} {path}"
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise DeviceError(expected(what, "an .npz of named arrays (numpy.savez)", "a single .npy array"))
    if not magic.startswith(b"PK"):
        raise DeviceError(expected(what, "an .npz of named arrays (numpy.savez, a zip archive)", f"a file starting {magic!r}"))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DeviceError(f"{what}: expected an .npz of arrays (numpy.savez), cannot read it: {exc}") from None
    with loaded as npz:
        try:
            return {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DeviceError(f"{option} {path}: an array in it cannot be read ({exc})") from None


def make_inputs(input_details: list[dict[str, Any]], settings: BenchSettings, count: int,
                seed: int = 0) -> tuple[list[list[Any]], Any]:
    """(samples, labels or None): from ``settings.inputs`` (.npz) or seeded random values.

    Random integers cover the whole dtype range; random floats are uniform in [0, 1), the range
    of normalised images. An npz gives real-valued samples (times ``extra['input_scale']``), which
    are quantized with the input tensor's scale and zero point when the input is integer.
    """
    import numpy as np

    scale = float(settings.extra.get("input_scale", "1"))
    if settings.inputs is None:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(count):
            sample = []
            for d in input_details:
                dtype = np.dtype(d["dtype"])
                if np.issubdtype(dtype, np.integer):
                    info = np.iinfo(dtype)
                    sample.append(rng.integers(info.min, int(info.max) + 1, size=d["shape"], dtype=dtype))
                elif dtype == np.bool_:
                    sample.append(rng.integers(0, 2, size=d["shape"]).astype(np.bool_))
                else:
                    sample.append(rng.random(size=d["shape"]).astype(dtype))
            samples.append(sample)
        return samples, None
    path = Path(settings.inputs)
    if path.suffix != ".npz" or not path.is_file():
        raise DeviceError(expected("--inputs", "an existing .npz file", settings.inputs))
    arrays = _load_npz(path, "--inputs")
    per_input = []
    for d in input_details:
        array = arrays[d["name"]] if d["name"] in arrays else (
            _pick({k: v for k, v in arrays.items() if k not in LABEL_KEYS}, INPUT_KEYS, "inputs", str(path))
            if len(input_details) == 1 else None)
        if array is None:
            raise DeviceError(expected(f"inputs in {path}", f"arrays named {[x['name'] for x in input_details]}",
                                       sorted(arrays)))
        per_input.append(array)
    n = min(len(a) for a in per_input)
    limit = int(settings.extra.get("max_samples", "0")) or n
    n = min(n, limit)
    samples = [[_to_input(a[i], d, scale) for a, d in zip(per_input, input_details, strict=True)] for i in range(n)]
    labels = None
    if settings.labels is not None:
        lpath = Path(settings.labels)
        if not lpath.is_file():
            raise DeviceError(expected("--labels", "an existing .npz file", settings.labels))
        labels = _pick(_load_npz(lpath, "--labels"), LABEL_KEYS, "labels", str(lpath))
    elif any(k in arrays for k in LABEL_KEYS):
        labels = _pick({k: v for k, v in arrays.items() if k in LABEL_KEYS}, LABEL_KEYS, "labels", str(path))
    if labels is not None:
        labels = np.asarray(labels).reshape(len(labels), -1)
        labels = (labels.argmax(axis=1) if labels.shape[1] > 1 else labels[:, 0])[:n]
    return samples, labels


def invoke(interp: Any, sample: Sequence[Any]) -> list[Any]:
    """Set the inputs, invoke once, return copies of every output."""
    for detail, value in zip(interp.get_input_details(), sample, strict=True):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


# ---------------------------------------------------------------- measuring
def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(model_path: str | os.PathLike[str], settings: BenchSettings, seed: int = 0) -> dict[str, Any]:
    """Run one model and return raw numbers (seconds, kB); the worker's and tests' entry point."""
    import numpy as np

    samples_needed = max(1, min(settings.runs, 16))
    interpreter_module()  # shared libraries are loaded before the peak is reset: count the model only
    reset = _reset_peak_rss()
    rss_before = _proc_status_kb("VmRSS")
    t0 = time.perf_counter()
    interp = make_interpreter(model_path, settings.threads, settings.delegate,
                              {k[len("delegate."):]: v for k, v in settings.extra.items() if k.startswith("delegate.")})
    init_s = time.perf_counter() - t0
    samples, labels = make_inputs(interp.get_input_details(), settings, samples_needed, seed)
    if not samples:
        raise DeviceError(expected("inputs", "at least one sample", 0))
    result: dict[str, Any] = {"init_s": init_s}
    deadline = time.monotonic() + settings.timeout_s
    for i in range(settings.warmup):
        invoke(interp, samples[i % len(samples)])
    latencies: list[float] = []
    if settings.mode == "accuracy":
        if labels is None:
            raise DeviceError(expected("accuracy mode labels", "--labels NPZ or y/y_test in --inputs", None))
        correct = 0
        for i, sample in enumerate(samples):
            for detail, value in zip(interp.get_input_details(), sample, strict=True):
                interp.set_tensor(detail["index"], value)
            t = time.perf_counter()
            interp.invoke()
            latencies.append(time.perf_counter() - t)
            output = interp.get_tensor(interp.get_output_details()[0]["index"])
            correct += int(np.argmax(output.reshape(-1)) == int(labels[i]))
            if time.monotonic() > deadline:
                raise DeviceError(f"accuracy run exceeded timeout_s={settings.timeout_s} after {i + 1} samples; "
                                  "raise --timeout or limit max_samples")
        result["accuracy_top1"] = correct / len(samples)
        result["accuracy_samples"] = len(samples)
    else:
        for i in range(settings.runs):
            for detail, value in zip(interp.get_input_details(), samples[i % len(samples)], strict=True):
                interp.set_tensor(detail["index"], value)
            t = time.perf_counter()
            interp.invoke()
            latencies.append(time.perf_counter() - t)
            if time.monotonic() > deadline:
                raise DeviceError(f"benchmark exceeded timeout_s={settings.timeout_s} after {i + 1} runs; "
                                  "lower --runs or raise the timeout")
    result["latencies_s"] = latencies
    hwm = _proc_status_kb("VmHWM")
    if reset and hwm is not None and rss_before is not None:
        result["peak_memory_bytes"] = max(0, hwm - rss_before) * 1024
    return result


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this worker when the CLI that started it dies, even by SIGKILL (its
    Ctrl-C path kills the worker itself; a killed CLI would otherwise leave a worker timing
    millions of runs)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request was armed
        os._exit(1)


def _worker_main() -> int:
    """``python -m devices.targets.host``: JSON request on stdin, JSON result on stdout."""
    request = json.loads(sys.stdin.read())
    if "parent_pid" in request:
        _die_with_parent(int(request["parent_pid"]))
    try:
        out = measure(request["model"], BenchSettings.from_config(request["settings"]), int(request.get("seed", 0)))
    except DeviceError as exc:
        out = {"error": str(exc)}
    sys.stdout.write(json.dumps(out))
    return 0


# ---------------------------------------------------------------- the target
class HostTarget:
    """LiteRT on this machine; one measurement subprocess per model."""

    name = "host"

    def __init__(self, in_process: bool = False, seed: int = 0) -> None:
        self.in_process = in_process
        self.seed = seed

    def _measure(self, model_path: Path, settings: BenchSettings) -> dict[str, Any]:
        if self.in_process:
            return measure(model_path, settings, self.seed)
        request = json.dumps({"model": str(model_path), "settings": settings.to_json(), "seed": self.seed,
                              "parent_pid": os.getpid()})
        # Generous wall clock beyond timeout_s: interpreter start-up and input preparation.
        try:
            proc = subprocess.run([sys.executable, "-P", "-m", "devices.targets.host"], input=request,
                                  capture_output=True, text=True, timeout=settings.timeout_s + 60)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"host benchmark of {model_path} did not finish within timeout_s="
                              f"{settings.timeout_s} (+60 s start-up); lower --runs") from None
        if proc.returncode != 0 or not proc.stdout.strip():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise DeviceError(f"host benchmark worker failed (exit {proc.returncode}) on {model_path}: {tail[:300]}")
        out = json.loads(proc.stdout)
        if "error" in out:
            raise DeviceError(out["error"])
        return out

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DeviceError(expected("model", "an existing .tflite file", str(model_path)))
        if settings.mode == "energy":
            raise DeviceError("the host target cannot measure energy; use --target serial:PORT with an "
                              "instrument, or --target estimate:PROFILE for an estimate")
        from devices.targets.estimate import read_model

        if "TFLM_DECODE" in read_model(model_path.read_bytes()).custom_codes:
            raise DeviceError(f"{model_path} is packed for TFLite-Micro (TFLM_DECODE operators), which LiteRT "
                              "cannot run; use --target tflm or bench the unpacked .tflite")
        env = host_environment(device={"kind": "host", "interpreter": interpreter_module().__name__})
        out = self._measure(model_path, settings)
        note = f"{settings.delegate} delegate, {settings.threads} thread(s)"
        figures = latency_figures(out["latencies_s"], note=note)
        mean_s = sum(out["latencies_s"]) / len(out["latencies_s"])
        figures.append(Figure("throughput", 1.0 / mean_s if mean_s > 0 else float("nan"), "inferences/s",
                              "measured", "1 / mean latency, batch 1"))
        figures.append(Figure("init_time", out["init_s"] * 1e3, "ms", "measured",
                              "interpreter construction + allocate_tensors"))
        if "peak_memory_bytes" in out:
            figures.append(Figure("peak_memory", out["peak_memory_bytes"], "bytes", "measured",
                                  "VmHWM - VmRSS of a fresh worker process around model load and runs"))
        if "accuracy_top1" in out:
            figures.append(Figure("accuracy_top1", out["accuracy_top1"], "fraction", "measured",
                                  f"n={out['accuracy_samples']}"))
        figures.append(Figure("model_size", model_path.stat().st_size, "bytes", "measured", "file size"))
        if settings.extra.get("profile_ops", "0") not in ("0", "", "false"):
            figures.extend(op_profile_figures(model_path.read_bytes(), mean_s * 1e3))
        return [BenchRecord(model=str(model_path), model_sha256=model_sha256(model_path), target=self.name,
                            settings=settings.to_json(), environment=env, figures=tuple(figures))]


def op_profile_figures(model: bytes, mean_latency_ms: float) -> list[Figure]:
    """Per-operator MACs and the measured mean latency apportioned by MACs, both ``estimated``."""
    from devices.targets.estimate import count_operations

    ops = count_operations(model)
    total = sum(op.macs for op in ops) or 1
    figures = []
    for op in ops:
        label = f"op{op.index:03d}_{op.name}"
        figures.append(Figure(f"{label}_macs", op.macs, "MACs", "estimated", "counted from the .tflite"))
        figures.append(Figure(f"{label}_latency", mean_latency_ms * op.macs / total, "ms", "estimated",
                              "measured mean latency apportioned by MAC share; not a per-op measurement"))
    return figures


def make_target(arg: str | None) -> HostTarget:
    if arg not in (None, "", "subprocess", "inprocess"):
        raise DeviceError(expected("host target option", "host, host:inprocess", f"host:{arg}"))
    return HostTarget(in_process=arg == "inprocess")


def run_failed(model_path: Path, settings: BenchSettings, error: str) -> BenchRecord:
    return failed_record(model_path, "host", settings.to_json(), host_environment(), error)


if __name__ == "__main__":
    sys.exit(_worker_main())
