"""The sparse-delegate benchmark's timing from C (benchmarks/sparse_delegate.py, NativeInvoke): it must
call the real LiteRT Interpreter::Invoke() of the interpreter it is given, and its self-check must
catch an address that does something else."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm")),
                                reason="the benchmark's C timing needs gcc and nm (binutils)")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sparse_delegate_bench", REPO_ROOT / "benchmarks" / "sparse_delegate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fc_int8(bench):
    return bench.fc_layer("int8", 0.9, "16x4")


def test_native_invoke_finds_the_function(bench, tmp_path):
    native = bench.NativeInvoke(tmp_path)
    assert native.why_not == ""
    assert native.invoke_addr > 0


@pytest.mark.parametrize("kind", ["xnnpack", "delegate"])
def test_invokes_from_c_compute_what_invokes_from_python_do(bench, fc_int8, tmp_path, kind):
    native = bench.NativeInvoke(tmp_path)
    runner = bench.Runner(fc_int8, kind, 1, 1, native=native)  # checks one invoke from C against Python
    assert runner.native is native
    it = runner.it
    d, out = it.get_input_details()[0], it.get_output_details()[0]["index"]
    for seed in (1, 2):
        x = np.random.default_rng(seed).integers(-128, 128, d["shape"]).astype(np.int8)
        it.set_tensor(d["index"], x)
        assert runner.sample(from_c=True) > 0
        from_c = it.get_tensor(out).copy()
        it.invoke()
        np.testing.assert_array_equal(from_c, it.get_tensor(out))


def test_the_self_check_rejects_a_function_that_does_not_invoke(bench, fc_int8, tmp_path):
    class AllocateInstead(bench.NativeInvoke):
        SYMBOL = "_ZN6tflite4impl11Interpreter15AllocateTensorsEv"  # same signature, computes nothing

    native = AllocateInstead(tmp_path)
    assert native.why_not == ""
    with pytest.raises(RuntimeError, match="did not compute what invoke"):
        bench.Runner(fc_int8, "xnnpack", 1, 1, native=native)


def test_a_missing_symbol_is_reported_not_called(bench, tmp_path):
    class Renamed(bench.NativeInvoke):
        SYMBOL = "_ZN6tflite4impl11Interpreter14NoSuchFunctionEv"

    native = Renamed(tmp_path)
    assert "not in libpywrap_litert_common.so's symbol table" in native.why_not
    assert bench.Runner(bench.fc_layer("float32", 0.9, "16x1"), "xnnpack", 1, 1, native=native).native is None
