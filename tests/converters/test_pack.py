"""TFLite-Micro packing: per-tensor choice, DECODE insertion and bit-exact verification on the
stock TFLite-Micro interpreter, plus arena measurement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ticket_models import digits_tflite, digits_ticket

from converters import ConverterError
from converters.report import plain_table
from converters.tflm import arena
from converters.tflm.pack import pack


def _inputs(n: int = 12) -> np.ndarray:
    _, ds, _ = digits_ticket(False)
    return ds.x_test[:n]


@pytest.mark.parametrize("method", ["auto", "huffman", "prune", "lut"])
def test_every_method_packs_bit_exact(method):
    flat = digits_tflite("int8")
    x = _inputs()
    result = pack(flat, method, x, measure_arena=False)
    rep = result.report
    chosen = [t for t in rep.tensors if t.method != "none"]
    assert chosen, plain_table(rep)
    if method != "auto":
        assert all(t.method == method for t in chosen)
    # independent check: the returned model decodes to the same outputs
    assert np.array_equal(arena.run(result.model_bytes, x), arena.run(flat, x))
    assert b"TFLM_DECODE" in result.model_bytes
    assert rep.verified_rows == len(x)


def test_auto_picks_smallest_and_reports_reasons():
    flat = digits_tflite("int8")
    rep = pack(flat, "auto", _inputs(4), measure_arena=False).report
    for t in rep.tensors:
        sizes = {m: v for m, v in t.candidates.items() if isinstance(v, int)}
        if t.method != "none":
            assert t.packed_bytes == min(sizes.values()), t
            assert t.packed_bytes < t.original_bytes
        else:
            assert t.reason, t
    weights = [t for t in rep.tensors if "MatMul" in t.name and t.original_bytes >= 2000]
    assert weights and all(t.method != "none" for t in weights)  # 75 % zeros always pay off
    assert rep.model_bytes_after < rep.model_bytes_before
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["totals"]["packed_bytes"] == rep.packed_bytes
    assert d["model_bytes_after"] == rep.model_bytes_after


def test_conv_model_packs_and_measures_arena():
    flat = digits_tflite("int8", conv=True)
    result = pack(flat, "auto", _inputs(6), measure_arena=True)
    before, after = result.report.arena_before, result.report.arena_after
    assert before["min_arena"] > 0 and after["min_arena"] > 0
    # decoded weights live in the arena unless alternate decompression memory is given
    assert after["min_arena_with_alt"] < after["min_arena"]
    # the bisected minimum is exact: one byte less fails on the real interpreter
    assert arena._probe(result.model_bytes, after["min_arena"], 0)[0]
    assert not arena._probe(result.model_bytes, after["min_arena"] - 1, 0)[0]


def test_verification_catches_a_corrupted_pack(monkeypatch):
    import converters.tflm.insert as insert_mod

    real = insert_mod.insert_decode

    def corrupt(model_bytes, encodings, **kw):
        out = bytearray(real(model_bytes, encodings, **kw))
        enc = max(encodings.values(), key=lambda e: len(e.encoded))
        at = bytes(out).find(enc.encoded)
        assert at > 0 and bytes(out).count(enc.encoded) == 1
        out[at + len(enc.encoded) // 3] ^= 0x10  # one bit of the largest encoded stream
        return bytes(out)

    monkeypatch.setattr(insert_mod, "insert_decode", corrupt)
    with pytest.raises(ConverterError, match="not bit-exact on TFLite-Micro"):
        pack(digits_tflite("int8"), "prune", _inputs(6), measure_arena=False)


def test_huffman_on_float_model_is_one_line_error():
    with pytest.raises(ConverterError, match="--pack huffman: HUFFMAN encoding of tensor float32") as err:
        pack(digits_tflite("float32"), "huffman", _inputs(2), measure_arena=False)
    assert "\n" not in str(err.value)


def test_float_model_auto_uses_float_capable_encoders():
    rep = pack(digits_tflite("float32"), "auto", _inputs(3), measure_arena=False).report
    assert {t.method for t in rep.tensors} <= {"none", "prune", "lut"}
    assert any(t.method == "prune" for t in rep.tensors)


def test_densify_model_is_refused_for_tflm():
    from converters.tflite import convert

    model, _, rep = digits_ticket(True)
    flat = convert(model, "int8", rep, sparse="converter")
    with pytest.raises(ConverterError, match="DENSIFY"):
        pack(flat, "auto", None, measure_arena=False)


def test_model_that_crashes_tflite_micro_is_a_one_line_error(oversized_weight_shape):
    """pack runs the input model on TFLite-Micro in this process; one whose weight shape is far
    larger than its data would crash it, so it is run in a child process first."""
    with pytest.raises(ConverterError, match=r"TFLite-Micro crashed \(signal"):
        pack(oversized_weight_shape(digits_tflite("int8")), "huffman", measure_arena=False)


def test_crash_check_that_does_not_finish_is_a_one_line_error(monkeypatch):
    """The child process that runs the model once is given a time limit; past it, one line (the
    limit is cut here so that a healthy model's start-up alone exceeds it)."""
    model = digits_tflite("float32")
    monkeypatch.setattr(arena, "CRASH_CHECK_TIMEOUT_S", 0.001)
    monkeypatch.setattr(arena, "_CRASH_CHECKED", set())
    with pytest.raises(ConverterError, match=r"did not finish .* within 0\.001 s") as exc:
        arena.check_no_crash(model)
    assert "\n" not in str(exc.value)


def test_bad_method():
    with pytest.raises(ConverterError, match="pack method: expected one of auto"):
        pack(digits_tflite("int8"), "zip")


def test_two_inputs_two_outputs_every_output_is_verified():
    import tf_keras as keras

    from converters.tflite import convert

    keras.utils.set_random_seed(5)
    a, b = keras.layers.Input((16,), name="a"), keras.layers.Input((8,), name="b")
    h = keras.layers.Dense(48, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], [keras.layers.Dense(4, name="y1")(h), keras.layers.Dense(3, name="y2")(h)])
    k, bias = model.layers[3].get_weights()
    k[np.abs(k) < np.quantile(np.abs(k), 0.8)] = 0
    model.layers[3].set_weights([k, bias])
    flat = convert(model, "float32")
    rng = np.random.default_rng(0)
    interp = arena.interpreter(flat)  # the converter orders inputs by signature name, not as Keras does
    xs = [rng.random((5, int(interp.get_input_details(i)["shape"][1]))).astype(np.float32) for i in range(2)]
    result = pack(flat, "prune", xs, measure_arena=True)
    got = arena.run(result.model_bytes, xs, all_outputs=True)
    want = arena.run(flat, xs, all_outputs=True)
    assert len(got) == 2 and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert result.report.verified_rows == 5 and result.report.arena_after["min_arena"] > 0
    with pytest.raises(ConverterError, match="arrays of inputs"):
        pack(flat, "prune", xs[0], measure_arena=False)
