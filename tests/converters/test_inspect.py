"""inspect_model on converted, packed, sparse and foreign/corrupted files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ticket_models import digits_tflite, digits_ticket

from converters import ConverterError
from converters.inspect import format_text, inspect_model
from converters.tflm.pack import pack


def test_int8_conv_model_ops_tensors_and_macs():
    info = inspect_model(digits_tflite("int8", conv=True))
    names = [op.name for op in info.ops]
    assert names[:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"] and names.count("FULLY_CONNECTED") == 2
    by_name = {op.name: op for op in info.ops}
    # conv 3x3x1 -> 8 ch on 8x8 valid: 6*6*8 outputs * 9 MACs; depthwise 3x3 on 6x6x8 -> 4*4*8 * 9
    assert by_name["CONV_2D"].macs == 6 * 6 * 8 * 9
    assert by_name["DEPTHWISE_CONV_2D"].macs == 4 * 4 * 8 * 9
    fcs = [op for op in info.ops if op.name == "FULLY_CONNECTED"]
    assert [op.macs for op in fcs] == [128 * 40, 40 * 10]
    assert info.total_macs == sum(op.macs for op in info.ops)
    weights = [t for t in info.tensors if t.name.endswith("MatMul")]
    assert weights and all(abs(t.zero_fraction - 0.75) < 0.02 for t in weights)
    assert all(t.quantization["per_channel"] for t in weights)
    json.dumps(info.to_dict())


def test_packed_model_shows_decode_encodings():
    _, ds, _ = digits_ticket(False)
    for method, type_name in (("prune", "PRUNE"), ("huffman", "HUFFMAN"), ("lut", "LUT")):
        packed = pack(digits_tflite("int8"), method, ds.x_test[:2], measure_arena=False).model_bytes
        info = inspect_model(packed)
        assert "TFLM_DECODE" in info.operator_names
        decodes = info.decodes
        assert decodes and {d.type_name for d in decodes} == {type_name}
        for d in decodes:
            assert d.encoded_bytes > 0 and d.ancillary_bytes >= 16 and d.decoded_bytes > 0
        assert "DECODE " + type_name in format_text(info)
        # FC still gets its MACs from the decoded tensor's shape
        assert sum(op.macs for op in info.ops if op.name == "FULLY_CONNECTED") == 64 * 40 + 40 * 10


def test_sparse_format_metadata():
    import tf_keras as keras

    from converters.tflite import convert

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((32,)), keras.layers.Dense(8)])
    k, b = model.layers[0].get_weights()
    k[np.random.default_rng(0).random(k.shape) < 0.9] = 0
    model.layers[0].set_weights([k, b])
    info = inspect_model(convert(model, "float32", sparse="project"))
    sparse = [t for t in info.tensors if t.sparsity]
    assert len(sparse) == 1
    assert [d["format"] for d in sparse[0].sparsity["dim_metadata"]] == ["DENSE", "SPARSE_CSR"]
    assert abs(sparse[0].zero_fraction - float(np.mean(k == 0))) < 1e-6


@pytest.mark.parametrize("blob,match", [
    (b"", "expected at least 8 bytes"),
    (b"PK\x03\x04 not a model at all", "file identifier 'TFL3'"),
])
def test_foreign_files(blob, match):
    with pytest.raises(ConverterError, match=f"not a TFLite flatbuffer: .*{match}"):
        inspect_model(blob)


def test_truncated_files_are_one_line_errors():
    flat = digits_tflite("int8")
    for cut in (9, 100, len(flat) // 2, len(flat) - 200):
        with pytest.raises(ConverterError, match="not a TFLite flatbuffer") as err:
            inspect_model(flat[:cut])
        assert "\n" not in str(err.value)


def test_corrupted_bytes_describe_or_fail_in_one_line():
    """Random byte mutations of a packed model (DECODE operators, ancillary tensors): inspect either
    describes the file or raises a one-line ConverterError.  Bytes of a 300-mutant run per model
    once broke it three ways (an operator's tensor index out of range, a custom code that is not
    UTF-8, quantization with scales but no zero points); this keeps a sample of such mutants."""
    import random

    base = pack(digits_tflite("int8"), "huffman", measure_arena=False).model_bytes
    rng = random.Random(3)
    described = failed = 0
    for _ in range(300):
        blob = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            blob[rng.randrange(len(blob))] = rng.choice([0, 0xFF, rng.randrange(256)])
        try:
            info = inspect_model(bytes(blob))
        except ConverterError as exc:
            assert "\n" not in str(exc)
            failed += 1
            continue
        format_text(info)
        json.dumps(info.to_dict())
        described += 1
    assert described and failed


def test_operator_tensor_index_out_of_range_is_one_line(rewrite_model):
    def bad_output(m):
        m.subgraphs[0].operators[0].outputs[0] = 999

    with pytest.raises(ConverterError, match="operator 0 of subgraph 0 refers to tensor 999"):
        inspect_model(rewrite_model(digits_tflite("int8"), bad_output))


def test_batch_matmul_macs_follow_adj_x():
    import tensorflow as tf
    import tf_keras as keras

    for transpose_a, shape in ((False, (4, 6)), (True, (6, 4))):
        a, b = keras.Input(shape), keras.Input((6, 5))
        flat = tf.lite.TFLiteConverter.from_keras_model(
            keras.Model([a, b], tf.linalg.matmul(a, b, transpose_a=transpose_a))).convert()
        info = inspect_model(flat)
        assert [(o.name, o.macs) for o in info.ops] == [("BATCH_MATMUL", 4 * 5 * 6)]
