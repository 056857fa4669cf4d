"""Run models on the stock TFLite-Micro interpreter and measure the exact arena they need.

The ``tflite_micro`` wheel has no numeric arena getter: ``print_allocations()`` writes the
RecordingMicroAllocator summary to file descriptor 2 from C++, and an arena that is too small
raises ``RuntimeError`` or, when it is very small, crashes the process. So every probe runs in
a forked child (a crash then only means "too small"), the summary is captured at fd 2 and
parsed, and the minimum arena is found by bisecting ``arena_size`` with the real interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from converters import ConverterError
from edge_lottery.errors import expected

_TOTAL_RE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def _runtime() -> Any:
    from tflite_micro import runtime

    return runtime


@contextlib.contextmanager
def capture_fd2() -> Iterator[list[str]]:
    """Capture what C++ writes to file descriptor 2 (``sys.stderr`` does not see it)."""
    out: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def interpreter(model_bytes: bytes, arena_size: int | None = None, alt_decompression_memory_size: int = 0) -> Any:
    """A TFLM interpreter, or a one-line ConverterError with the runtime's own message."""
    rt = _runtime()
    if arena_size is None:
        arena_size = max(1 << 16, 10 * len(model_bytes))
    with capture_fd2() as err:
        try:
            return rt.Interpreter.from_bytes(
                bytes(model_bytes), custom_op_registerers=[], arena_size=arena_size,
                alt_decompression_memory_size=int(alt_decompression_memory_size),
            )
        except RuntimeError as exc:
            failure = exc
        except (struct.error, ValueError, IndexError) as exc:  # its Python side parses the flatbuffer
            raise ConverterError(f"TFLite-Micro cannot read the model: not a .tflite flatbuffer it can parse "
                                 f"({len(model_bytes)} bytes, truncated or corrupted?): {exc}") from None
    detail = _first_error_line(err[0] if err else "")
    raise ConverterError(f"TFLite-Micro cannot prepare the model: {failure}" + (f" ({detail})" if detail else ""))


def _first_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "RecordingMicroAllocator" not in ln]
    return lines[0][:200] if lines else ""


def to_input(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """A row (or batch) of inputs as the TFLM input tensor wants it (quantized when integer)."""
    dtype = np.dtype(details["dtype"])
    shape = tuple(int(d) for d in details["shape"])
    arr = np.asarray(x)
    if arr.size != int(np.prod(shape)):
        raise ConverterError(expected("representative input size", f"{int(np.prod(shape))} values {list(shape)}",
                                      f"{arr.size} values {list(arr.shape)}"))
    arr = arr.reshape(shape)
    if np.issubdtype(dtype, np.integer) and np.issubdtype(arr.dtype, np.floating):
        q = details.get("quantization_parameters", {})
        scales = np.asarray(q.get("scales", []))
        zps = np.asarray(q.get("zero_points", []))
        if scales.size:
            info = np.iinfo(dtype)
            arr = np.clip(np.round(arr / float(scales[0]) + float(zps[0] if zps.size else 0)), info.min, info.max)
    return np.ascontiguousarray(arr, dtype=dtype)


def _io_counts(model_bytes: bytes) -> tuple[int, int]:
    from converters.inspect import read_flatbuffer

    sg = read_flatbuffer(model_bytes).subgraphs[0]
    return (len(sg.inputs) if sg.inputs is not None else 0, len(sg.outputs) if sg.outputs is not None else 0)


def run(
    model_bytes: bytes,
    inputs: np.ndarray | list[np.ndarray],
    *,
    arena_size: int | None = None,
    alt_decompression_memory_size: int = 0,
    all_outputs: bool = False,
) -> np.ndarray | list[np.ndarray]:
    """Invoke the model once per input row; returns output 0 for every row, stacked.

    ``inputs`` is one array of rows, or a list with one array of rows per model input.
    ``all_outputs=True`` returns a list with every model output stacked over the rows.
    """
    n_in, n_out = _io_counts(model_bytes)
    per_input = list(inputs) if isinstance(inputs, list) else [np.asarray(inputs)]
    if len(per_input) != n_in:
        raise ConverterError(expected("arrays of inputs (one per model input)", n_in, len(per_input)))
    rows = {len(a) for a in per_input}
    if len(rows) != 1:
        raise ConverterError(expected("rows per model input", "the same count for every input", sorted(rows)))
    interp = interpreter(model_bytes, arena_size, alt_decompression_memory_size)
    details = [interp.get_input_details(i) for i in range(n_in)]
    outs: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    for r in range(rows.pop()):
        for i in range(n_in):
            interp.set_input(to_input(per_input[i][r], details[i]), i)
        interp.invoke()
        for o in range(n_out):
            outs[o].append(np.array(interp.get_output(o)))
    stacked = [np.stack(o) for o in outs]
    return stacked if all_outputs else stacked[0]


def random_inputs(model_bytes: bytes, n: int = 8, seed: int = 0) -> np.ndarray | list[np.ndarray]:
    """Seeded inputs spanning each model input's dtype range (for verification without data).

    One array for a single-input model, else a list with one array per input.
    """
    n_in, _ = _io_counts(model_bytes)
    interp = interpreter(model_bytes)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(n_in):
        details = interp.get_input_details(i)
        dtype = np.dtype(details["dtype"])
        shape = (n, *(int(d) for d in details["shape"]))
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max + 1, size=shape).astype(dtype))
        else:
            arrays.append(rng.random(shape).astype(dtype))
    return arrays[0] if n_in == 1 else arrays


# --- arena measurement ------------------------------------------------------------------------

def _probe(model_bytes: bytes, arena_size: int, alt: int, report: bool = False) -> tuple[bool, str]:
    """Does the model allocate and invoke in this arena? Runs in a forked child."""
    _runtime()  # import before forking, or every child pays for the import
    n_in, _ = _io_counts(model_bytes)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        status = 1
        try:
            os.close(r)
            with open(os.devnull, "wb") as null:
                os.dup2(w if report else null.fileno(), 2)
            interp = _runtime().Interpreter.from_bytes(
                bytes(model_bytes), custom_op_registerers=[], arena_size=int(arena_size),
                alt_decompression_memory_size=int(alt),
            )
            for i in range(n_in):
                details = interp.get_input_details(i)
                interp.set_input(np.zeros(tuple(int(d) for d in details["shape"]), dtype=details["dtype"]), i)
            interp.invoke()
            if report:
                interp.print_allocations()
            status = 0
        except BaseException:  # noqa: BLE001 - the exit code is the answer
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, b"".join(chunks).decode("utf-8", "replace")


def recorded_allocations(model_bytes: bytes, arena_size: int | None = None, alt: int = 0) -> dict[str, int]:
    """``print_allocations()`` totals (``total``, ``head``, ``tail`` bytes), parsed from fd 2."""
    size = int(arena_size) if arena_size else max(1 << 16, 10 * len(model_bytes))
    ok, text = _probe(model_bytes, size, alt, report=True)
    if not ok:
        raise ConverterError(f"TFLite-Micro cannot run the model in a {size}-byte arena"
                             + (f": {_first_error_line(text)}" if _first_error_line(text) else ""))
    return {k: int(v) for k, v in _TOTAL_RE.findall(text)}


def minimum_arena(model_bytes: bytes, alt_decompression_memory_size: int = 0) -> int:
    """Smallest ``arena_size`` (bytes) with which the model allocates and invokes."""
    alt = int(alt_decompression_memory_size)
    hi = max(4096, 4 * len(model_bytes))
    while not _probe(model_bytes, hi, alt)[0]:
        hi *= 2
        if hi > (1 << 30):
            raise ConverterError("TFLite-Micro cannot run the model with any arena up to 1 GiB")
    lo = 0  # fails (an arena of 0 bytes cannot hold anything)
    # The recorder's total is only a hint (it is not always a lower bound): it narrows the search
    # from whichever side it lands on, and the bisection below stays exact either way.
    with contextlib.suppress(ConverterError, KeyError):
        hint = recorded_allocations(model_bytes, hi, alt)["total"]
        if 0 < hint < hi:
            if _probe(model_bytes, hint, alt)[0]:
                hi = hint
            else:
                lo = hint
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _probe(model_bytes, mid, alt)[0]:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class ArenaInfo:
    """Arena bytes a model needs on TFLite-Micro, measured with the real interpreter.

    ``min_arena`` is the bisected minimum; ``recorded_total`` what the recording allocator
    reports; with ``alt_decompression_memory_size`` > 0 decoded tensors live outside the arena
    and ``min_arena_with_alt`` is the minimum then.
    """

    min_arena: int
    recorded_total: int
    alt_decompression_memory_size: int = 0
    min_arena_with_alt: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arena_info(model_bytes: bytes, alt_decompression_memory_size: int = 0) -> ArenaInfo:
    """Minimum arena with and (if ``alt_decompression_memory_size``) without decoded tensors in it.

    The bisection runs in a fresh worker process that never imports TensorFlow: forking a
    probe from there takes milliseconds, from a process holding TensorFlow hundreds.
    """
    alt = int(alt_decompression_memory_size)
    code = "import sys; from converters.tflm.arena import _worker; _worker(int(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_package_root(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(alt)], input=bytes(model_bytes),
                          capture_output=True, env=env, timeout=600)
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise ConverterError(f"arena measurement failed: {tail[:200]}")
    return ArenaInfo(**json.loads(lines[-1]))


_CRASH_CHECKED: set[bytes] = set()
#: Seconds check_no_crash gives its child process for one allocation and one invoke.
CRASH_CHECK_TIMEOUT_S = 600.0


def check_no_crash(model_bytes: bytes, arena_size: int | None = None) -> None:
    """Allocate and invoke the model once (zero inputs) in a fresh process; a one-line
    ConverterError if TFLite-Micro crashes doing so.

    TFLite-Micro trusts the flatbuffer (a weight shape larger than its buffer is read past the
    end), so a corrupted model can take down the process that runs it.  Callers that run a
    user's model in-process check it here first; each model is checked once per process.
    """
    import hashlib

    model_bytes = bytes(model_bytes)
    digest = hashlib.sha256(model_bytes).digest()
    if digest in _CRASH_CHECKED:
        return
    # generous by default: TFLite-Micro may also crash when an arena is far too small
    size = int(arena_size) if arena_size else max(16 << 20, 10 * len(model_bytes))
    code = "import sys; from converters.tflm.arena import _crash_worker; _crash_worker(int(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_package_root(), os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run([sys.executable, "-P", "-c", code, str(size)], input=model_bytes, capture_output=True,
                              env=env, timeout=CRASH_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConverterError(f"TFLite-Micro did not finish allocating and running the model once within "
                             f"{CRASH_CHECK_TIMEOUT_S:g} s (a {size}-byte arena): the .tflite is corrupted, or it "
                             "hits a TFLite-Micro bug") from None
    if proc.returncode < 0:
        raise ConverterError(f"TFLite-Micro crashed (signal {-proc.returncode}) allocating and running the model "
                             f"with a {size}-byte arena: the .tflite is corrupted (for example a weight shape "
                             "larger than its data), or it hits a TFLite-Micro bug")
    _CRASH_CHECKED.add(digest)  # errors other than a crash are left to the caller's own run


def _crash_worker(arena_size: int) -> None:
    """Entry point of check_no_crash's process: model bytes on stdin; dies by a signal on a crash."""
    model_bytes = sys.stdin.buffer.read()
    try:
        interp = interpreter(model_bytes, arena_size)
        n_in, _ = _io_counts(model_bytes)
        for i in range(n_in):
            details = interp.get_input_details(i)
            interp.set_input(np.zeros(tuple(int(d) for d in details["shape"]), dtype=details["dtype"]), i)
        interp.invoke()
    except Exception as exc:  # noqa: BLE001 - not a crash: the caller's own run reports it
        print(str(exc)[:300], file=sys.stderr)
        sys.exit(1)


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _worker(alt: int) -> None:
    """Entry point of the measuring process: model bytes on stdin, ArenaInfo JSON on stdout."""
    model_bytes = sys.stdin.buffer.read()
    try:
        minimum = minimum_arena(model_bytes)
        total = recorded_allocations(model_bytes, max(minimum, 4096) * 2).get("total", 0)
        with_alt = minimum_arena(model_bytes, alt) if alt else None
    except ConverterError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(1)
    print(json.dumps(ArenaInfo(minimum, total, alt, with_alt).to_dict()))


__all__ = [
    "ArenaInfo",
    "arena_info",
    "capture_fd2",
    "check_no_crash",
    "interpreter",
    "minimum_arena",
    "random_inputs",
    "recorded_allocations",
    "run",
    "to_input",
]
