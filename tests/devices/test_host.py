"""The host target on the real LiteRT interpreter."""

from __future__ import annotations

import numpy as np
import pytest
from bench_models import packed_model, tiny_model, unsupported_model

from devices import DeviceError
from devices.settings import BenchSettings
from devices.targets.host import HostTarget, invoke, make_inputs, make_interpreter, measure


def _latencies(record):
    return {n: record.figure(n).value for n in
            ("latency_min", "latency_p50", "latency_p90", "latency_p99", "latency_mean")}


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("delegate", ["default", "none"])
def test_host_runs_and_percentiles_are_consistent(int8, delegate):
    record = HostTarget().run(tiny_model("conv", int8), BenchSettings(runs=30, warmup=2, delegate=delegate))[0]
    lat = _latencies(record)
    assert 0 < lat["latency_min"] <= lat["latency_p50"] <= lat["latency_p90"] <= lat["latency_p99"]
    assert lat["latency_min"] <= lat["latency_mean"]
    assert record.figure("latency_p50").note.startswith("n=30")
    assert all(f.kind == "measured" for f in record.figures)
    assert record.figure("peak_memory").value > 0
    assert record.figure("throughput").value == pytest.approx(1e3 / lat["latency_mean"])
    assert record.settings["delegate"] == delegate
    assert record.environment["packages"]["ai-edge-litert"]
    assert record.model_sha256 and record.status == "ok"


@pytest.mark.parametrize("kind, int8", [("conv", False), ("conv", True), ("dense", False)])
@pytest.mark.parametrize("delegate", ["default", "none"])
def test_host_outputs_equal_tf_lite_reference(kind, int8, delegate):
    import tensorflow as tf

    path = tiny_model(kind, int8)
    ours = make_interpreter(path, threads=1, delegate=delegate)
    ref = tf.lite.Interpreter(model_path=str(path),
                              experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    ref.allocate_tensors()
    samples, _ = make_inputs(ours.get_input_details(), BenchSettings(), 4, seed=1)
    for sample in samples:
        got = invoke(ours, sample)[0]
        for d, v in zip(ref.get_input_details(), sample, strict=True):
            ref.set_tensor(d["index"], v)
        ref.invoke()
        want = ref.get_tensor(ref.get_output_details()[0]["index"])
        if int8:
            assert np.max(np.abs(got.astype(int) - want.astype(int))) <= 1
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_inputs_are_seeded_and_cover_the_dtype_range():
    interp = make_interpreter(tiny_model("conv", True))
    a, _ = make_inputs(interp.get_input_details(), BenchSettings(), 8, seed=3)
    b, _ = make_inputs(interp.get_input_details(), BenchSettings(), 8, seed=3)
    c, _ = make_inputs(interp.get_input_details(), BenchSettings(), 8, seed=4)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    stacked = np.stack([s[0] for s in a])
    assert stacked.dtype == np.int8 and stacked.min() < -100 and stacked.max() > 100


def test_accuracy_mode_from_npz_matches_a_direct_computation(tmp_path):
    path = tiny_model("conv", False)
    rng = np.random.default_rng(0)
    x = rng.random((20, 8, 8, 1), dtype=np.float32)
    interp = make_interpreter(path)
    predictions = np.array([np.argmax(invoke(interp, [row[None]])[0]) for row in x])
    y = predictions.copy()
    y[:5] = (y[:5] + 1) % 10  # five wrong labels -> accuracy 0.75
    np.savez(tmp_path / "data.npz", x_test=x, y_test=y)
    settings = BenchSettings(mode="accuracy", inputs=str(tmp_path / "data.npz"))
    out = measure(path, settings)
    assert out["accuracy_top1"] == pytest.approx(0.75)
    record = HostTarget().run(path, settings)[0]
    assert record.figure("accuracy_top1").value == pytest.approx(0.75)
    assert record.figure("accuracy_top1").note == "n=20"


def test_npz_inputs_are_quantized_for_int8_models(tmp_path):
    path = tiny_model("conv", True)
    x = np.full((3, 8, 8, 1), 0.5, dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    interp = make_interpreter(path)
    samples, labels = make_inputs(interp.get_input_details(), BenchSettings(inputs=str(tmp_path / "x.npz")), 3)
    scale, zero = interp.get_input_details()[0]["quantization"]
    assert labels is None and len(samples) == 3
    assert samples[0][0].dtype == np.int8
    assert int(samples[0][0].flat[0]) == int(np.round(0.5 / scale + zero))


def test_wrong_npz_shape_is_one_clear_error(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 5), np.float32))
    with pytest.raises(DeviceError, match="input sample size"):
        HostTarget().run(tiny_model("conv"), BenchSettings(inputs=str(tmp_path / "x.npz"), runs=2))


def test_bad_inputs_give_device_errors(tmp_path):
    host = HostTarget()
    with pytest.raises(DeviceError, match="existing .tflite"):
        host.run(tmp_path / "missing.tflite", BenchSettings())
    with pytest.raises(DeviceError, match="delegate"):
        host.run(tiny_model("conv"), BenchSettings(delegate=str(tmp_path / "nope.so")))
    with pytest.raises(DeviceError, match="cannot measure energy"):
        host.run(tiny_model("conv"), BenchSettings(mode="energy"))
    with pytest.raises(DeviceError, match="unresolved custom op"):
        host.run(unsupported_model("custom"), BenchSettings(runs=2))
    packed = packed_model()
    if packed is not None:
        with pytest.raises(DeviceError, match="--target tflm"):
            host.run(packed, BenchSettings(runs=2))


def test_profile_ops_are_labelled_estimated():
    record = HostTarget(in_process=True).run(tiny_model("conv", True),
                                             BenchSettings(runs=5, extra={"profile_ops": "1"}))[0]
    op_figs = [f for f in record.figures if f.name.startswith("op")]
    assert op_figs and all(f.kind == "estimated" for f in op_figs)
    macs = sum(f.value for f in op_figs if f.name.endswith("_macs"))
    assert macs == 6 * 6 * 4 * 9 + 144 * 10
    shares = sum(f.value for f in op_figs if f.name.endswith("_latency"))
    assert shares == pytest.approx(record.figure("latency_mean").value)


def test_sparse_delegate_gives_the_same_outputs():
    pytest.importorskip("converters.delegate")
    from converters import delegate as sparse_delegate

    try:
        sparse_delegate.library_path()
    except Exception as exc:  # noqa: BLE001 - not built here
        pytest.skip(f"sparse delegate not built: {exc}")
    path = tiny_model("dense", False)
    sparse = make_interpreter(path, delegate="sparse")
    plain = make_interpreter(path, delegate="none")
    samples, _ = make_inputs(plain.get_input_details(), BenchSettings(), 3, seed=5)
    for sample in samples:
        np.testing.assert_allclose(invoke(sparse, sample)[0], invoke(plain, sample)[0], rtol=1e-4, atol=1e-5)
    record = HostTarget().run(path, BenchSettings(runs=5, delegate="sparse"))[0]
    assert record.settings["delegate"] == "sparse" and record.figure("latency_p50").value > 0
    with pytest.raises(DeviceError, match="sparse"):
        HostTarget().run(path, BenchSettings(runs=2, delegate="sparse", extra={"delegate.bogus": "1"}))


def test_measuring_child_ignores_packages_in_the_working_directory(tmp_path, monkeypatch):
    """`edge-lottery bench` run inside a source checkout after `pip install .`: the child process
    that measures must import the installed packages, not the checkout's (whose delegate library
    is not built there). A decoy package in the working directory stands in for the checkout."""
    for name in ("devices", "converters"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('imported from the working directory')\n")
    monkeypatch.chdir(tmp_path)
    record = HostTarget().run(tiny_model("dense", False), BenchSettings(runs=3, warmup=1))[0]
    assert record.status == "ok" and record.figure("latency_p50").value > 0
