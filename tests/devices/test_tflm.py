"""The tflm target on the stock TFLite-Micro interpreter: exact arena, packed models, errors."""

from __future__ import annotations

import faulthandler
import os

import numpy as np
import pytest
from bench_models import packed_model, tiny_model, unsupported_model

from devices import DeviceError
from devices.settings import BenchSettings
from devices.targets.host import invoke, make_inputs, make_interpreter
from devices.targets.tflm import TflmTarget, decoded_bytes, model_has_decode, run_outputs, try_allocate


def _runs(model: bytes, arena: int, alt: int = 0) -> bool:
    """Allocate in exactly ``arena`` bytes and invoke once, in a forked child.

    A child, because the wheel aborts the process (not raises) for some arenas just too small.
    The child turns off pytest's fault handler: that crash is an expected answer, not a traceback
    for the test log.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulthandler.disable()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            interp = try_allocate(model, arena, alt)
            if interp is not None:
                details = interp.get_input_details(0)
                interp.set_input(np.zeros(tuple(details["shape"]), dtype=details["dtype"]), 0)
                interp.invoke()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("kind, int8", [("conv", True), ("conv", False), ("dense", True)])
def test_arena_found_is_exact(kind, int8):
    path = tiny_model(kind, int8)
    record = TflmTarget().run(path, BenchSettings(runs=5, warmup=1))[0]
    arena = int(record.figure("arena_bytes").value)
    model = path.read_bytes()
    assert _runs(model, arena)
    assert not _runs(model, arena - 1)
    assert record.figure("arena_bytes").kind == "measured"
    assert 0 < record.figure("arena_recorded_total").value <= arena
    lat = {n: record.figure(n).value for n in ("latency_min", "latency_p50", "latency_p99", "latency_mean")}
    assert 0 < lat["latency_min"] <= lat["latency_p50"] <= lat["latency_p99"]
    assert lat["latency_min"] <= lat["latency_mean"]
    assert record.environment["device"]["packed"] is False


def test_tflm_outputs_agree_with_litert_within_one_step():
    path = tiny_model("conv", True)
    interp = make_interpreter(path, delegate="none")
    samples, _ = make_inputs(interp.get_input_details(), BenchSettings(), 4, seed=2)
    for sample in samples:
        host = invoke(interp, sample)[0]
        micro = run_outputs(path.read_bytes(), sample)[0]
        assert micro.shape == host.shape
        assert np.max(np.abs(micro.astype(int) - host.astype(int))) <= 1


def test_packed_model_needs_less_arena_with_alternate_memory():
    packed = packed_model()
    if packed is None:
        pytest.skip("converters.tflm.pack is not available")
    model = packed.read_bytes()
    assert model_has_decode(model)
    record = TflmTarget().run(packed, BenchSettings(runs=3, warmup=1))[0]
    arena = int(record.figure("arena_bytes").value)
    with_alt = int(record.figure("arena_bytes_with_alt").value)
    alt = int(record.figure("alt_decompression_bytes").value)
    assert alt == decoded_bytes(model) >= 2048  # the decoded 64x32 int8 weight at least
    assert with_alt < arena
    assert _runs(model, with_alt, alt) and not _runs(model, with_alt - 1, alt)
    assert _runs(model, arena) and not _runs(model, arena - 1)
    # decoding is exact: the packed model computes what the dense one computes
    dense = tiny_model("dense", True).read_bytes()
    x = [np.arange(64, dtype=np.int8).reshape(1, 64)]
    np.testing.assert_array_equal(run_outputs(model, x), run_outputs(dense, x))
    np.testing.assert_array_equal(run_outputs(model, x, with_alt, alt), run_outputs(dense, x))


def test_unsupported_operator_is_one_clear_error():
    with pytest.raises(DeviceError, match="TOPK_V2.*edge-lottery inspect"):
        TflmTarget().run(unsupported_model("topk"), BenchSettings(runs=2))


def test_arena_option_too_small_names_the_minimum():
    path = tiny_model("conv", True)
    with pytest.raises(DeviceError, match=r"too small .* needs at least \d+ bytes"):
        TflmTarget().run(path, BenchSettings(runs=2, extra={"arena": "1024"}))


def test_energy_mode_is_refused():
    with pytest.raises(DeviceError, match="cannot measure energy"):
        TflmTarget().run(tiny_model("conv", True), BenchSettings(mode="energy"))


def test_accuracy_mode_agrees_with_litert_predictions(tmp_path):
    path = tiny_model("conv", True)
    interp = make_interpreter(path, delegate="none")
    rng = np.random.default_rng(1)
    x = rng.random((12, 8, 8, 1), dtype=np.float32)
    settings = BenchSettings(mode="accuracy", inputs=str(tmp_path / "d.npz"))
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(12))
    samples, _ = make_inputs(interp.get_input_details(), settings, 12)
    y = np.array([np.argmax(invoke(interp, s)[0]) for s in samples])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    record = TflmTarget().run(path, settings)[0]
    assert record.figure("accuracy_top1").value >= 11 / 12  # TFLM may differ by one step from LiteRT
    assert record.figure("accuracy_top1").note == "n=12"
