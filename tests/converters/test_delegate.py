"""The native sparse delegate against LiteRT's builtin reference kernels, on real converted models.

int8 must equal the builtin kernels bit for bit; float32 within 1e-5 relative. Models are tiny and
cached (test_delegate_models); hypothesis varies layouts, kernel ISA, threads, batch and inputs.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_delegate_models import convnet, mlp, op_names, pointwise_pair, trailing_block_mlp

import converters.delegate as cd
import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)
from converters import ConverterError

ai = pytest.importorskip("ai_edge_litert.interpreter")

CONVS = ((16, 3, 2, "same"), (32, 1, 1, "valid"), (20, 3, 1, "valid"), (24, 1, 1, "same"))

# name -> builder arguments; each is converted once per session (the slow part).
MODELS = {
    "f32_16x1": lambda: mlp((40, 32, 10), 0.8, "16x1", "float32"),
    "f32_csr_densify": lambda: mlp((40, 32, 10), 0.9, "unstructured", "float32", sparse_format=True),
    "f32_1x4_v8": lambda: mlp((64, 48, 10), 0.8, "1x4", "float32", activation="relu6", sparse_format=True),
    "i8_16x4": lambda: mlp((40, 33, 10), 0.8, "16x4", "int8"),
    "i8_1x16_v8_zp": lambda: mlp((64, 48, 10), 0.8, "1x16", "int8", sparse_format=True, rep_range=(0.0, 1.0)),
    "i8_csr_densify": lambda: mlp((30, 20, 7), 0.7, "unstructured", "int8", activation="relu6", sparse_format=True,
                                  rep_range=(-3.0, 1.0)),
    "i8_pertensor_n1to1": lambda: mlp((24, 20, 5), 0.6, "16x4", "int8", activation="relu_n1_to_1", use_bias=False,
                                      per_tensor=True, rep_range=(-0.5, 2.0)),
    "i8_flatten": lambda: mlp((48, 32, 10), 0.8, "16x4", "int8", image=(6, 8, 1)),
    "f32_flatten": lambda: mlp((48, 32, 10), 0.8, "16x1", "float32", image=(6, 8, 1)),
    "i8_wide": lambda: mlp((4200, 20, 8), 0.9, "16x4", "int8", rep_range=(-2.0, 1.0)),
    # enough work at batch 1 for the op chain to be tried as one pool job
    "i8_chain_b1": lambda: mlp((1024, 160, 32), 0.8, "16x4", "int8"),
    "f32_chain_b1": lambda: mlp((1024, 160, 32), 0.8, "16x1", "float32"),
    # 162 hidden units: the second layer's last 16x4 blocks are re-anchored and could span two
    # threads' columns, so no pair
    "i8_chain_b1_odd": lambda: mlp((1024, 162, 32), 0.8, "16x4", "int8"),
    # ~400 KB of float32 weights in the chain: more than the rows split's budget (each thread would read all)
    "f32_chain_big": lambda: mlp((2000, 100, 10), 0.5, "16x1", "float32"),
    # one layer each, fed random int8 (no ReLU zeros upstream to hide a lost block): 7, 6 and 5 output
    # panels, i.e. a full group of four in the batch-1 stream plus a last group of 3, 2 and 1 panels
    "i8_stream_4_3": lambda: mlp((96, 112), 0.75, "16x4", "int8", seed=3),
    "i8_stream_4_2": lambda: mlp((64, 96), 0.7, "16x4", "int8", seed=4),
    "i8_stream_4_1": lambda: mlp((72, 70), 0.8, "16x4", "int8", seed=5),
    "f32_conv_densify": lambda: convnet(9, 3, CONVS, 0.7, "16x1", "float32", sparse_format=True),
    "i8_conv": lambda: convnet(9, 3, CONVS, 0.7, "16x4", "int8", rep_range=(-1.0, 0.5)),
}
REF = ai.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _input(it, batch: int, seed: int) -> np.ndarray:
    d = it.get_input_details()[0]
    shape = (batch, *d["shape"][1:])
    rng = np.random.default_rng(seed)
    if d["dtype"] == np.int8:
        return rng.integers(-128, 128, shape).astype(np.int8)
    return rng.uniform(-1.5, 1.5, shape).astype(np.float32)


def _run(it, x: np.ndarray) -> np.ndarray:
    d = it.get_input_details()[0]
    if tuple(d["shape"]) != x.shape:
        it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def _assert_same(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.dtype == np.int8:
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def _reference(model: bytes, x: np.ndarray) -> np.ndarray:
    return _run(ai.Interpreter(model_content=model, experimental_op_resolver_type=REF), x)


def test_library_exports_only_the_plugin_symbols_and_abi_tag():
    path = cd.library_path()
    assert path.is_file() and path.parent.name == "delegate"
    lib = ctypes.CDLL(str(path))
    for sym in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate", "edge_sparse_delegate_abi"):
        assert hasattr(lib, sym)
    for internal in ("edge_pack", "edge_sparse_decode", "edge_kernels_scalar", "delegate_prepare"):
        assert not hasattr(lib, internal), f"{internal} leaked from the hidden-visibility build"
    assert cd.abi_tag() == cd.ABI_VERSION


@pytest.mark.parametrize("backend", ["litert", "tf"])
def test_loads_from_both_apis_and_matches_reference(backend):
    model = MODELS["i8_csr_densify"]()
    x = _input(ai.Interpreter(model_content=model), 1, 0)
    it = cd.interpreter(model, backend=backend)
    _assert_same(_run(it, x), _reference(model, x))


def test_int8_densify_model_that_xnnpack_rejects_runs_with_the_delegate():
    model = MODELS["i8_csr_densify"]()
    assert "DENSIFY" in op_names(model)
    plain = ai.Interpreter(model_content=model)  # default resolver: XNNPACK
    with pytest.raises(RuntimeError, match="XNNPack|FULLY_CONNECTED"):
        plain.allocate_tensors()
    x = _input(plain, 3, 1)
    it = cd.interpreter(model)  # the delegate takes FC + DENSIFY first; XNNPACK the rest
    _assert_same(_run(it, x), _reference(model, x))


@pytest.mark.parametrize(("mode", "in_f", "block"), [("int8", 60, 16), ("int8", 64, 16), ("float32", 62, 4),
                                                      ("float32", 30, 1)])
def test_the_projects_own_sparse_encoding_is_claimed_and_exact(mode, in_f, block, capfd):
    """Models from converters.sparse_tensor (the project's packing of TFLite's sparse format: int8
    1x16, float32 1x4 or CSR, PAD-widened inputs) run through the delegate, which claims the sparse
    FC and matches LiteRT's own sparse kernels; XNNPACK or the builtins take the PAD."""
    from converters.tflite import convert

    keras_model, xs = trailing_block_mlp(in_f, block)
    model = convert(keras_model, mode, xs, sparse="project")
    assert "FULLY_CONNECTED" in op_names(model)
    it = cd.interpreter(model, options={"verbose": True})
    plain = ai.Interpreter(model_content=model)
    x = _input(plain, 3, 5) if mode == "int8" else xs[:3]
    _assert_same(_run(it, x), _reference(model, x))
    err = capfd.readouterr().err
    assert re.search(r"node \d+: FULLY_CONNECTED \w+ M=\d+ K=\d+ N=24 sparsity [\d.]+ \(sparse-encoded\) -> layout",
                     err), err


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_is_claimed_and_exact(name, capfd):
    model = MODELS[name]()
    x = _input(ai.Interpreter(model_content=model), 2, 3)
    it = cd.interpreter(model, options={"verbose": True, "min_sparsity": 0.3})
    got = _run(it, x)
    err = capfd.readouterr().err
    ops = op_names(model)
    summary = [line for line in err.splitlines() if " FULLY_CONNECTED and " in line][-1]
    if "RESHAPE" in ops:  # Keras Flatten in front of a claimed FC is taken as an alias
        assert "RESHAPE claimed (alias" in err
    assert f"claimed {ops.count('FULLY_CONNECTED')} FULLY_CONNECTED and {ops.count('CONV_2D')} CONV_2D" in summary
    assert "declined" not in err
    _assert_same(got, _reference(model, x))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(MODELS)),
    batch=st.integers(1, 6),
    layouts=st.sampled_from(["auto", "dense", "csr", "1x16", "16x1", "16x4", "dense,16x4", "csr,1x16"]),
    isa=st.sampled_from(["auto", "scalar", "avx2"]),
    threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_random_layouts_isas_threads_batches_match_reference(name, batch, layouts, isa, threads, seed):
    model = MODELS[name]()
    x = _input(ai.Interpreter(model_content=model), batch, seed)
    it = cd.interpreter(model, options={"layouts": layouts, "isa": isa, "num_threads": threads, "min_sparsity": 0},
                        num_threads=threads)
    _assert_same(_run(it, x), _reference(model, x))


@pytest.mark.parametrize("name", ["i8_conv", "f32_conv_densify"])
def test_thread_split_is_measured_and_both_paths_are_exact(name, capfd):
    """With 2 threads, ops with enough work alternate one thread and the pool for their first 16
    invokes, then keep the faster; every one of those invokes (and the ones after) stays exact."""
    model = MODELS[name]()
    it = cd.interpreter(model, options={"num_threads": 2, "min_sparsity": 0, "verbose": True}, num_threads=2)
    plain = ai.Interpreter(model_content=model, experimental_op_resolver_type=REF)
    for i in range(20):
        x = _input(plain, 40, 100 + i)
        _assert_same(_run(it, x), _run(plain, x))
    decisions = [line for line in capfd.readouterr().err.splitlines() if "(best of 8) ->" in line]
    assert decisions, "no op was large enough to try the thread pool"
    assert all(line.endswith(("-> threads", "-> 1 thread")) for line in decisions)


@pytest.mark.parametrize(("name", "batch", "split"), [("i8_wide", 4, "rows"), ("f32_flatten", 40, "rows"),
                                                     ("i8_16x4", 30, "rows"), ("i8_chain_b1", 1, "pair"),
                                                     ("i8_chain_b1_odd", 1, "panels"),
                                                     ("f32_chain_b1", 1, "pair"), ("i8_wide", 3, "rows"),
                                                     ("f32_chain_big", 2, "panels")])
def test_chain_of_small_ops_as_one_pool_job_is_measured_and_exact(name, batch, split, capfd):
    """Ops too small to split one by one run as one pool job (their first 16 invokes alternate that
    and one thread): at batch 1 each thread takes its output panels of every op, with a barrier
    between ops (the first two ops, when they hold most of the work, as a pair, the second split
    along its inputs); with
    more rows each takes its rows through the whole chain. Each of those invokes, and those after,
    stays exact."""
    model = MODELS[name]()
    it = cd.interpreter(model, options={"num_threads": 2, "min_sparsity": 0, "verbose": True}, num_threads=2)
    plain = ai.Interpreter(model_content=model, experimental_op_resolver_type=REF)
    for i in range(20):
        x = _input(plain, batch, 300 + i)
        _assert_same(_run(it, x), _run(plain, x))
    decisions = [line for line in capfd.readouterr().err.splitlines() if f"as one job ({split}): 2 threads" in line]
    assert len(decisions) == 1, f"the op chain was not tried as one pool job split by {split}"
    assert decisions[0].endswith(("-> threads", "-> 1 thread"))


@pytest.mark.parametrize("image", [None, (8, 8, 4)])
def test_int8_batch1_chain_runs_as_one_stream_call_and_stays_exact(image, capfd):
    """On one thread a batch-1 int8 MLP whose layers all have the grouped stream runs as one kernel
    call: the input converted once, each layer's output stored converted for the next. It gives
    the reference kernels' bytes at batch 1 (also behind a flattening RESHAPE), and at batch 3,
    where the layers run one by one."""
    model = mlp((256, 96, 48, 10), 0.8, "16x4", "int8", image=image)
    it = cd.interpreter(model, options={"min_sparsity": 0, "verbose": True})
    for batch in (1, 3, 1):
        for seed in range(4):
            x = _input(ai.Interpreter(model_content=model), batch, 40 + seed)
            _assert_same(_run(it, x), _reference(model, x))
    calls = [line for line in capfd.readouterr().err.splitlines() if "one batch-1 int8 stream call" in line]
    assert calls, "the batch-1 chain did not run as one stream call"


@pytest.mark.parametrize("batch", [1, 3])
def test_float32_one_column_blocks_past_16_bit_columns(batch):
    """Past 65536 inputs the 16x1 kernels read 32-bit column numbers (the 16-bit copy is not built):
    up to 3314385 the rows left over after groups of four (batch 1 among them) read the missing
    16-bit copy and crashed the process."""
    model = mlp((70000, 32), 0.9, "16x1", "float32")
    x = _input(ai.Interpreter(model_content=model), batch, 11)
    it = cd.interpreter(model, options={"layouts": "16x1", "min_sparsity": 0})
    _assert_same(_run(it, x), _reference(model, x))


@pytest.mark.parametrize("name", ["f32_chain_b1", "i8_chain_b1"])
def test_pair_gives_the_same_bits_on_one_thread_and_on_the_pool(name, capfd):
    """The pair's second op is summed in the same parts on one thread as on two (float32: the split
    along its inputs that the threads take; int8: integer sums, exact in any order), so the trials,
    which alternate the two, give one output bit for bit, equal to the reference kernels'; the
    threads' ranges cover every output of the first op once."""
    model = MODELS[name]()
    it = cd.interpreter(model, options={"num_threads": 2, "min_sparsity": 0, "verbose": True}, num_threads=2)
    x = _input(ai.Interpreter(model_content=model), 1, 5)
    outs = [_run(it, x) for _ in range(20)]
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])
    _assert_same(outs[0], _reference(model, x))
    err = capfd.readouterr().err
    ranges = [tuple(map(int, m)) for m in re.findall(r"as a pair, thread \d: outputs (\d+)-(\d+) of node", err)]
    assert len(ranges) == 2 and ranges[0][0] == 0 and ranges[1][0] == ranges[0][1] + 1 and ranges[1][1] == 159, ranges
    assert re.search(r"as one job \(pair\): 2 threads [0-9.]+us, 1 thread [0-9.]+us \(best of 8\) -> ", err)


def _recheck_model_and_inputs():
    """512 -> 256 -> 64 at batch 8: big enough that the trials usually choose the pool on this
    2-vCPU VM (6 of 7 processes when this was written), so the checks have a pool to judge. Two
    inputs, used in turn: a share that read stale outputs (the chain splits rows here, so one that
    strayed into the other thread's rows; with panels, a missing barrier) would compute the
    previous input's answer."""
    model = mlp((512, 256, 64), 0.8, "16x1", "float32")
    it = cd.interpreter(model, options={"num_threads": 2, "min_sparsity": 0, "verbose": True}, num_threads=2)
    xs = [_input(ai.Interpreter(model_content=model), 8, seed) for seed in (7, 8)]
    firsts = [_run(it, x) for x in xs]
    for x, y in zip(xs, firsts, strict=True):
        _assert_same(y, _reference(model, x))
    return it, xs, firsts


def _run_checked(it, xs, firsts, runs: int, seconds: float, start: int = 0) -> int:
    """Invokes until both `runs` runs and `seconds` have passed. Now and then (densely around the
    first check's window) the input switches to the other one and the output is compared with its
    first, reference-checked one; in between, the same input is run again, as a benchmark does."""
    d_in, d_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    t0, i = time.perf_counter(), start
    while i - start < runs or time.perf_counter() - t0 < seconds:
        probe = i % 97 == 0 or 1030 <= i <= 1050 or 1540 <= i <= 1560 or i % 997 < 4
        if probe:
            it.set_tensor(d_in, xs[i % 2])
        it.invoke()
        if probe:
            np.testing.assert_array_equal(it.get_tensor(d_out), firsts[i % 2])
        i += 1
    return i


_CHECK = "re-checked after"


_CHECK_LINE = re.compile(r"re-checked after (\d+) runs.*: 2 threads ([0-9.]+)us \(mean of (\d+) runs(, cut short)?\), "
                         r"1 thread ([0-9.]+)us \(mean of (\d+) runs\), in turns of (\d+) runs, invoke to invoke "
                         r"-> (threads|1 thread)$")


def test_thread_choice_is_rechecked_while_running_and_stays_exact(capfd):
    """Whichever the trials chose, the chain is timed again after 1024 runs, one thread and the pool
    taking turns (invoke to invoke) until one thread has had 512 runs and 5 ms and the pool as many,
    or the pool has taken 1.25 times as long, and the faster stays. Outputs stay the same, bit for
    bit, before, during and after."""
    it, xs, firsts = _recheck_model_and_inputs()
    # the first window opens at run ~1040 and takes about 2 x max(512 runs, 5 ms): 60 ms covers it
    _run_checked(it, xs, firsts, 2200, 0.06)
    err = capfd.readouterr().err.splitlines()
    trial = [line for line in err if "as one job (rows): 2 threads" in line]
    checks = [line for line in err if _CHECK in line]
    assert len(trial) == 1 and trial[0].endswith(("-> threads", "-> 1 thread"))
    assert checks and "re-checked after 1024 runs: 2 threads" in checks[0]
    assert all(_CHECK_LINE.search(c) for c in checks), checks
    cut = [c for c in checks if ", cut short)" in c]
    assert all(c.endswith("-> 1 thread") for c in cut), "a pool side cut short must lose"


def test_rechecks_alternate_turns_of_equal_runs(capfd):
    """A check interleaves one thread and the pool in turns of equal runs (so a drift in the
    machine's speed during the check falls on both sides): a check that ran to its end gave both
    sides the same whole number of turns, the one-thread side at least 512 runs and 5 ms; one cut
    short stopped in a pool turn, the one-thread side a whole number of turns and at most one ahead."""
    it, xs, firsts = _recheck_model_and_inputs()
    checks: list[re.Match] = []
    t0 = time.perf_counter()
    i = 0
    while len(checks) < 3:  # the checks after 1024, 4096 and 16384 runs
        assert time.perf_counter() - t0 < 30, f"fewer than 3 checks within 30 s: {checks}"
        i = _run_checked(it, xs, firsts, 1000, 0.0, i)
        checks += [m for m in map(_CHECK_LINE.search, capfd.readouterr().err.splitlines()) if m]
    for m in checks:
        pool_runs, one_runs, turn = int(m[3]), int(m[6]), int(m[7])
        assert turn >= 16 and one_runs % turn == 0, m[0]
        if m[4]:  # cut short
            assert 0 <= one_runs - pool_runs <= turn and m[8] == "1 thread", m[0]
        else:
            assert pool_runs == one_runs and one_runs >= 512 and one_runs * float(m[5]) > 4990, m[0]  # 5 ms, less the log's rounding


# Processes that keep every CPU busy. "steady": always running, so the kernel preempts the pool's
# threads in its own slices. "6ms-bursts": real-time (SCHED_FIFO) bursts of 6 ms every 12 ms, which
# take a CPU from the pool's threads for 6 ms at a time whatever the kernel's slices are: a kernel
# that preempts in slices that long (longer than the monitor's idle threshold, 16 steps of runs)
# once hid a pool far slower than one thread from the monitor, which took each long wait for the caller
# pausing between invokes. A hog exits when the test process goes away.
_HOG = """
import os, sys, time
parent = os.getppid()
if sys.argv[1] == "6ms-bursts":
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
while os.getppid() == parent:
    t = time.perf_counter()
    while time.perf_counter() - t < 0.006:
        pass
    if sys.argv[1] == "6ms-bursts":
        time.sleep(0.006)
"""


def _can_use_sched_fifo() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (PermissionError, OSError, AttributeError):
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


@pytest.mark.parametrize("hogs", ["steady", "6ms-bursts"])
def test_a_pool_that_slows_down_is_rechecked_at_once(capfd, hogs):
    """While the pool is in use, runs slower than one thread was at the last two checks (the faster
    of them; here other processes keep every CPU busy) start a check at once instead of at the next
    scheduled one, also when the pool's threads lose their CPUs for milliseconds at a time; and
    when the pool loses that check, the next one comes soon after."""
    import subprocess
    import sys

    if hogs == "6ms-bursts" and not _can_use_sched_fifo():
        pytest.skip("this process may not start real-time (SCHED_FIFO) processes, which make the 6 ms bursts")
    it, xs, firsts = _recheck_model_and_inputs()
    i, t0 = 0, time.perf_counter()
    # wait for the pool to win a check after >= 65536 runs: the next scheduled one is then >= 196608
    # runs away, far more than the monitor needs (1024 slow runs, 100 ms after the last check)
    while True:
        if time.perf_counter() - t0 > 8.0:
            pytest.skip("the pool did not win the check after 65536 runs within 8 s on this machine, so there "
                        "was no pool to watch")
        i = _run_checked(it, xs, firsts, 2000, 0.0, i)
        won = [int(m[1]) for m in (re.search(r"re-checked after (\d+) runs.*-> threads$", line)
                                   for line in capfd.readouterr().err.splitlines()) if m]
        if won and won[-1] >= 65536:
            break
    i = _run_checked(it, xs, firsts, 0, 0.12, i)
    capfd.readouterr()
    procs = [subprocess.Popen([sys.executable, "-c", _HOG, hogs]) for _ in os.sched_getaffinity(0)]
    checks: list[str] = []
    try:
        t1 = time.perf_counter()
        while not checks and time.perf_counter() - t1 < 2.0:
            i = _run_checked(it, xs, firsts, 500, 0.0, i)
            checks = [line for line in capfd.readouterr().err.splitlines() if _CHECK in line]
    finally:
        for h in procs:
            h.kill()
            h.wait()
    assert checks and "(the pool ran slower than 1 thread had)" in checks[0], \
        f"the monitor did not start a check while {hogs} processes kept every CPU busy; checks then: {checks}"
    if not checks[0].endswith("-> 1 thread"):
        return  # the pool still won with the CPUs busy: no retry to watch
    # the busy processes are gone: a pool that lost a check the monitor started (which may have been
    # a passing moment) is checked again after 50 ms of running (then 100, 200, ...), not after 1 s
    capfd.readouterr()
    later: list[str] = []
    t2 = time.perf_counter()
    while not later and time.perf_counter() - t2 < 0.4:
        i = _run_checked(it, xs, firsts, 500, 0.0, i)
        later = [line for line in capfd.readouterr().err.splitlines() if _CHECK in line]
    assert later, "no check within 0.4 s of running after the pool lost a check that the monitor started"


def test_pauses_between_bursts_of_invokes_are_not_running_time(capfd):
    """A caller that invokes in bursts with pauses between them (an app, a benchmark): the pauses are
    left out of a check's turns, and they neither start checks (as time since the last check or as
    a slow pool) nor count towards the check after each second of running."""
    it, xs, firsts = _recheck_model_and_inputs()
    i = _run_checked(it, xs, firsts, 200, 0.0)
    t0 = time.perf_counter()
    i = _run_checked(it, xs, firsts, 600, 0.0, i)
    steady = (time.perf_counter() - t0) / 600 * 1e6  # us per run without pauses (before any check)
    capfd.readouterr()
    checks: list[str] = []
    t0 = time.perf_counter()
    while len(checks) < 2:  # the checks after 1024 and 4096 runs, with a 20 ms pause every 500 runs
        assert time.perf_counter() - t0 < 30, f"no second check within 30 s; checks: {checks}"
        i = _run_checked(it, xs, firsts, 500, 0.0, i)
        time.sleep(0.02)
        checks += [line for line in capfd.readouterr().err.splitlines() if _CHECK in line]
    for line in checks[:2]:
        one = float(re.search(r"1 thread ([0-9.]+)us \(mean", line)[1])
        pool = float(re.search(r"threads ([0-9.]+)us \(mean", line)[1])
        # a 20 ms pause in a side of >= 5 ms would add > 20 us to its mean run; a run is a few us
        assert one < 3 * steady + 5 and pool < 3 * steady + 5, f"a pause was counted: {line} (steady {steady:.2f} us)"
    # bursts of 500 runs, 150 ms apart, for 1.5 s: about 20 ms of running, short of the next
    # scheduled check (16384 runs)
    capfd.readouterr()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.5:
        i = _run_checked(it, xs, firsts, 500, 0.0, i)
        time.sleep(0.15)
    later = [line for line in capfd.readouterr().err.splitlines() if _CHECK in line]
    assert not later, f"pauses between bursts started checks: {later}"


@pytest.mark.parametrize("batch", [1, 5])
def test_wide_int8_input_both_vnni_paths(batch):
    """Inputs up to 16 KiB are converted to unsigned once; larger ones on the fly (batch 5 x 4200)."""
    model = MODELS["i8_wide"]()
    x = _input(ai.Interpreter(model_content=model), batch, 21)
    for isa in ("auto", "scalar"):
        _assert_same(_run(cd.interpreter(model, options={"isa": isa, "layouts": "16x4"}), x), _reference(model, x))


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n.startswith("i8_")])
@pytest.mark.parametrize("isa", ["auto", "avx2"])
def test_int8_panel_kernels_every_model_batch_1_and_3(name, isa):
    """The hand-written int8 panel kernels (VNNI batch-1 stream and row loop; AVX2 vpmaddwd) on every
    int8 model, for both panel layouts, bit for bit (the ISA falls back if the CPU lacks it)."""
    model = MODELS[name]()
    for batch in (1, 3):
        x = _input(ai.Interpreter(model_content=model), batch, 5 + batch)
        for layouts in ("16x4", "dense"):
            it = cd.interpreter(model, options={"isa": isa, "layouts": layouts, "min_sparsity": 0})
            _assert_same(_run(it, x), _reference(model, x))


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n.startswith("i8_")])
def test_reference_rounding_matches_builtin_ref_kernels_and_xnnpack(name):
    """rounding=reference reproduces the BUILTIN_REF kernels (and XNNPACK on dense FC) bit for bit."""
    model = MODELS[name]()
    x = _input(ai.Interpreter(model_content=model), 4, 11)
    got = _run(cd.interpreter(model, options={"rounding": "reference", "min_sparsity": 0}), x)
    ref = _run(ai.Interpreter(model_content=model, experimental_op_resolver_type=ai.OpResolverType.BUILTIN_REF), x)
    _assert_same(got, ref)
    if "FULLY_CONNECTED" in op_names(model) and "DENSIFY" not in op_names(model) and "v8" not in name:
        _assert_same(got, _run(ai.Interpreter(model_content=model), x))  # XNNPACK


def test_dense_enough_weights_are_declined_and_left_to_xnnpack(capfd):
    model = MODELS["f32_16x1"]()
    x = _input(ai.Interpreter(model_content=model), 1, 5)
    it = cd.interpreter(model, options={"verbose": "true", "min_sparsity": 0.95})
    got = _run(it, x)
    err = capfd.readouterr().err
    assert "declined: sparsity 0.800 < min_sparsity 0.950" in err and "claimed 0 FULLY_CONNECTED" in err
    _assert_same(got, _reference(model, x))


@pytest.mark.parametrize(
    ("threads", "options", "first_sparsity", "declined"),
    [
        (2, {}, 0.8, True),  # one thread here next to XNNPACK's two: the 16-input conv is left to XNNPACK
        (1, {}, 0.8, False),  # XNNPACK on one thread too: every sparse layer wins here
        (2, {"dense_threads": 0}, 0.8, False),  # the estimate switched off
        (2, {"dense_threads": 1}, 0.8, False),
        (2, {"num_threads": 2}, 0.8, False),  # the kernels on as many threads as XNNPACK
        (1, {"dense_threads": 3}, 0.8, True),
        (2, {}, 1.0, False),  # no weight at all: its outputs are a constant here, nothing to requantize
    ],
)
def test_int8_layers_with_few_inputs_per_output_are_left_to_xnnpack_in_a_shared_graph(threads, options,
                                                                                          first_sparsity, declined,
                                                                                          capfd):
    """1x1 conv 16 -> 128 and 128 -> 64 at 80 % (unstructured: every output has weights) around a
    depthwise conv (XNNPACK's): per output, the first saves ~13 of 16 multiply-adds but not the
    requantization (~24), so XNNPACK's dense kernel on 2 threads beats it; the second (~102 of 128)
    is taken up to 3 dense threads."""
    model = pointwise_pair(8, 16, 128, 64, 0.8, "unstructured", first_sparsity=first_sparsity)
    x = _input(ai.Interpreter(model_content=model), 2, 3)
    got = _run(cd.interpreter(model, options={"verbose": True, **options}, num_threads=threads), x)
    err = capfd.readouterr().err
    summary = [line for line in err.splitlines() if " FULLY_CONNECTED and " in line][-1]
    dense_threads = options.get("dense_threads", threads)
    if declined:
        assert re.search(r"node 0: CONV_2D declined: the next delegate runs it faster dense \(16 inputs per output at "
                         r"sparsity 0\.\d+: about [\d.]+ multiply-add "
                         rf"equivalents per output on 1 thread here against [\d.]+ dense on the next delegate's "
                         rf"{dense_threads} threads; option dense_threads\)", err), err
        assert "claimed 0 FULLY_CONNECTED and 1 CONV_2D" in summary
    else:
        assert "runs it faster dense" not in err
        assert "claimed 0 FULLY_CONNECTED and 2 CONV_2D" in summary
    # the depthwise conv runs on XNNPACK either way, whose int8 rounding is its own
    plain = _run(ai.Interpreter(model_content=model, num_threads=threads), x)
    assert np.max(np.abs(got.astype(int) - plain.astype(int))) <= 1


def _delegated(it) -> list[str]:
    return [op["op_name"] for op in it._get_ops_details()]


@pytest.mark.parametrize(
    ("dtype", "pattern", "dense_layers", "limit", "claimed_at_limit"),
    [
        # limits in MACs at batch 1 (the graph is prepared again at batch 3, with 3x the MACs)
        ("int8", "16x4", (3,), 24 * 10 - 1, 3),
        ("float32", "16x1", (0, 3), 48 * 40 - 1, 3),
        # a chain: layer 3 joins only through layer 2, so a limit that stops 2 stops 3 too
        ("int8", "16x4", (2, 3), 32 * 24 - 1, 2),
    ],
)
def test_small_dense_layers_next_to_claimed_ones_join_the_partition(dtype, pattern, dense_layers, limit,
                                                                    claimed_at_limit, capfd):
    """The search keeps the 10-way output layer dense: by default it runs in the delegate's partition
    (one DELEGATE node), not in a second partition of XNNPACK's."""
    model = mlp((48, 40, 32, 24, 10), 0.8, pattern, dtype, dense_layers=dense_layers)
    x = _input(ai.Interpreter(model_content=model), 3, 7)
    ref = _reference(model, x)
    it = cd.interpreter(model, options={"verbose": True})
    got = _run(it, x)
    err = capfd.readouterr().err
    assert "claimed 4 FULLY_CONNECTED" in err and "declined" not in err
    prepares = err.count(" FULLY_CONNECTED and ")  # resizing to batch 3 prepares the graph again
    assert prepares >= 1 and err.count("next to a claimed node") == len(dense_layers) * prepares
    assert _delegated(it).count("DELEGATE") == 1
    _assert_same(got, ref)
    # off, or just below a dense layer's MACs: what is not claimed runs in partitions of XNNPACK's
    for max_macs, claimed in ((0, 4 - len(dense_layers)), (limit, claimed_at_limit)):
        it = cd.interpreter(model, options={"verbose": True, "dense_neighbour_max_macs": max_macs})
        got = _run(it, x)
        err = capfd.readouterr().err
        assert f"claimed {claimed} FULLY_CONNECTED" in err and "declined: sparsity 0.000 < min_sparsity 0.500" in err
        assert _delegated(it).count("DELEGATE") >= 2
        _assert_same(got, ref)


def _pool_threads() -> int:
    """The process's threads named by the delegate's pool (its workers)."""
    gc.collect()  # an earlier test's interpreter freed meanwhile would take its workers with it
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return names.count("edge-pool")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names in /proc (Linux)")
def test_the_partitions_of_a_graph_share_one_pool(capfd):
    """XNNPACK's node in the middle splits the graph into two partitions of the delegate; with 2
    threads they get one pool worker between them. A pool per partition gave each its own worker,
    which had one job per invoke and was asleep again by the next (every job paid a wake-up)."""
    model = mlp((48, 40, 32, 24, 10), 0.8, "16x4", "int8", dense_layers=(2,))
    x = _input(ai.Interpreter(model_content=model), 128, 7)  # enough rows for each partition's ops to run as one job
    ref = _reference(model, x)
    before = _pool_threads()
    it = cd.interpreter(model, options={"num_threads": 2, "dense_neighbour_max_macs": 0, "verbose": True},
                        num_threads=1)
    for _ in range(20):  # past the thread trials: both partitions ran jobs on the pool
        got = _run(it, x)
        _assert_same(got, ref)
    assert _delegated(it).count("DELEGATE") == 3  # two of the sparse delegate's, one of XNNPACK's
    assert len(re.findall(r"ops as one job \(rows\): 2 threads", capfd.readouterr().err)) == 2
    assert _pool_threads() - before == 1


def test_interpreters_sharing_a_delegate_invoke_at_once_and_stay_exact():
    """One delegate, one pool, two interpreters invoked from two threads: a job that finds the pool
    busy runs on its caller alone; every result still matches the reference."""
    model = MODELS["f32_16x1"]()  # claimed whole; at 64 rows each invoke is one pool job (or one thread)
    delegate = cd.load({"num_threads": 2, "min_sparsity": 0})
    its = [ai.Interpreter(model_content=model, experimental_delegates=[delegate], num_threads=2) for _ in range(2)]
    xs = [_input(its[0], 64, seed) for seed in range(4)]
    refs = [_reference(model, x) for x in xs]
    for it in its:
        _run(it, xs[0])
    failures: list[str] = []

    def invoke_many(it, offset: int) -> None:
        d, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        for i in range(400):
            j = (i + offset) % len(xs)
            it.set_tensor(d, xs[j])
            it.invoke()
            got = it.get_tensor(o)
            if not np.allclose(got, refs[j], rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(refs[j]).max()))):
                failures.append(f"interpreter {offset}, invoke {i}")

    workers = [threading.Thread(target=invoke_many, args=(it, k)) for k, it in enumerate(its)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert failures == []


def test_abi_mismatch_is_refused_by_the_library_and_by_the_helper(monkeypatch):
    with pytest.raises(ValueError, match="built for ABI"):
        ai.load_delegate(str(cd.library_path()), {"abi_version": "litert-9.9.9/1"})
    monkeypatch.setattr(cd, "ABI_VERSION", "litert-9.9.9/1")
    with pytest.raises(ConverterError, match="built for ABI 'litert-2.3.0/1'.*rebuild") as exc:
        cd.load()
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"bogus": 1}, "sparse delegate option"),
        ({"layouts": "2x2"}, "sparse delegate layout"),
        ({"min_sparsity": "lots"}, "min_sparsity must be a number"),
        ({"dense_neighbour_max_macs": -1}, "dense_neighbour_max_macs must be an integer"),
        ({"num_threads": -3}, "num_threads must be an integer"),
        ({"dense_threads": "two"}, r"dense_threads must be an integer in -1\.\.64, got 'two'"),
        ({"isa": "sse9"}, "isa must be"),
        ({"rounding": "banker"}, "rounding must be builtin or reference"),
    ],
)
def test_bad_options_are_one_line_converter_errors(options, match):
    with pytest.raises(ConverterError, match=match) as exc:
        cd.load(options)
    assert "\n" not in str(exc.value)


def test_bad_backend_and_missing_library(monkeypatch, tmp_path):
    with pytest.raises(ConverterError, match="delegate backend"):
        cd.load(backend="onnx")
    monkeypatch.setattr(cd, "__file__", str(tmp_path / "__init__.py"))
    with pytest.raises(ConverterError, match="not built.*pip install"):
        cd.library_path()
