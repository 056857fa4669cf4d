"""DECODE insertion: exclusion list, a real int8 Keras model packed three ways and run on stock TFLM."""

from __future__ import annotations

import numpy as np
import pytest
from tflm_models import run_tflm, same_bytes

from converters import ConverterError
from converters.tflm import flatbuffer, huffman_tables, lut, prune
from converters.tflm.insert import excluded_tensors, insert_decode


def _pad_model() -> bytes:
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    model = model_editor.Model()
    sg = model.add_subgraph()
    x = sg.add_tensor(shape=(1, 4), dtype=tflite.TensorType.INT8, name="x")
    paddings = sg.add_tensor(shape=(2, 2), dtype=tflite.TensorType.INT32,
                             data=np.array([[0, 0], [1, 1]], dtype="<i4").tobytes(), name="paddings")
    y = sg.add_tensor(shape=(1, 6), dtype=tflite.TensorType.INT8, name="y")
    sg.add_operator(opcode=tflite.BuiltinOperator.PAD, inputs=[x, paddings], outputs=[y])
    sg.inputs, sg.outputs = [x], [y]
    return bytes(model.build())


def test_prepare_time_constants_are_excluded():
    model = _pad_model()
    assert excluded_tensors(model) == {(0, 1)}
    enc = prune.encode(np.array([[0, 0], [1, 1]], dtype=np.int32))
    with pytest.raises(ConverterError, match="must stay constant.*PAD"):
        insert_decode(model, {(0, 1): enc})
    # The unpacked model itself runs and pads.
    out = run_tflm(model, [np.array([[1, 2, 3, 4]], dtype=np.int8)])[0]
    assert out.tolist() == [[0, 1, 2, 3, 4, 0]]


def test_bad_requests_are_one_line_errors():
    model = _pad_model()
    enc = prune.encode(np.zeros(4, dtype=np.int8))
    with pytest.raises(ConverterError, match="an existing tensor"):
        insert_decode(model, {(0, 9): enc})
    with pytest.raises(ConverterError, match="a constant tensor with data"):
        insert_decode(model, {(0, 0): enc})
    with pytest.raises(ConverterError, match="TFL3"):
        insert_decode(b"not a model at all", {(0, 1): enc})
    with pytest.raises(ConverterError, match="at least one"):
        insert_decode(model, {})


@pytest.fixture(scope="module")
def int8_dense_model():
    """Keras Dense 64->32(relu)->10, 60 % magnitude-pruned, full-integer int8 TFLite."""
    # `converters` (imported above) imported edge_lottery._tf_env first: Keras 2 is selected.
    import tf_keras as keras

    from converters.quantize import PostTrainingQuantization
    from converters.tflite import convert

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        threshold = np.quantile(np.abs(kernel), 0.6)
        layer.set_weights([np.where(np.abs(kernel) < threshold, 0.0, kernel), bias + 0.01])
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(64, 64)).astype(np.float32)
    tflite_bytes = convert(model, PostTrainingQuantization(mode="int8", num_samples=len(calib)), calib)
    inputs = rng.integers(-128, 128, size=(12, 1, 64)).astype(np.int8)
    return tflite_bytes, inputs


def _outputs(model_bytes, inputs, **kw):
    return np.stack([run_tflm(model_bytes, [x], **kw)[0] for x in inputs])


def _weights(tflite_bytes):
    consts = flatbuffer.constant_tensors(tflite_bytes)
    kernels = sorted((t for t in consts if t.dtype == np.int8 and len(t.shape) == 2), key=lambda t: -t.nbytes)
    biases = [t for t in consts if t.dtype == np.int32]
    return kernels, biases


ENCODERS = {
    "huffman": lambda t: huffman_tables.encode(t.array, t.quant),
    "huffman32": lambda t: huffman_tables.encode(t.array, t.quant, table_entry_bits=32, root_bits=7),
    "prune": lambda t: prune.encode(t.array, t.quant),
    "lut": lambda t: lut.encode(t.array, t.quant),
}


@pytest.mark.parametrize("method", sorted(ENCODERS))
def test_real_int8_model_bit_identical(int8_dense_model, method):
    tflite_bytes, inputs = int8_dense_model
    kernels, _ = _weights(tflite_bytes)
    big = kernels[0]
    assert big.shape == (32, 64) and big.quant is not None and big.quant.channels == 32
    enc = ENCODERS[method](big)
    packed = insert_decode(tflite_bytes, {(big.subgraph, big.index): enc})
    assert packed != tflite_bytes
    reference = _outputs(tflite_bytes, inputs)
    assert same_bytes(_outputs(packed, inputs), reference)
    assert same_bytes(_outputs(packed, inputs, alt_memory=8192), reference)
    if method == "prune":
        assert enc.packed_bytes < big.nbytes  # 60 % zeros: PRUNE saves space


def test_real_model_mixed_decodes(int8_dense_model):
    """One DECODE with HUFFMAN weights + PRUNE bias, a second with PRUNE weights + LUT bias."""
    tflite_bytes, inputs = int8_dense_model
    kernels, biases = _weights(tflite_bytes)
    by_len = {t.shape[0]: t for t in biases}
    first_k, second_k = kernels[0], kernels[1]
    encodings = {
        (0, first_k.index): huffman_tables.encode(first_k.array),
        (0, by_len[32].index): prune.encode(by_len[32].array, by_len[32].quant),
        (0, second_k.index): prune.encode(second_k.array, second_k.quant),
        (0, by_len[10].index): lut.encode(by_len[10].array, by_len[10].quant),
    }
    packed = insert_decode(tflite_bytes, encodings)
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model = model_editor.read(packed)
    decodes = [op for op in model.subgraphs[0].operators if op.custom_code == "TFLM_DECODE"]
    assert [len(op.outputs) for op in decodes] == [2, 2]
    reference = _outputs(tflite_bytes, inputs)
    assert same_bytes(_outputs(packed, inputs), reference)
    assert same_bytes(_outputs(packed, inputs, alt_memory=8192), reference)


def test_packed_buffers_are_16_byte_aligned(int8_dense_model):
    tflite_bytes, _ = int8_dense_model
    kernels, _ = _weights(tflite_bytes)
    enc = huffman_tables.encode(kernels[0].array)
    packed = insert_decode(tflite_bytes, {(0, kernels[0].index): enc})
    spans = flatbuffer.buffer_spans(packed)
    assert all(start % 16 == 0 for start, length in spans if length)


def test_encoded_tensors_carry_no_quantization_and_outputs_keep_it(int8_dense_model):
    """What the runtime reads: the encoded UINT8 stream is raw bytes (no scales / zero points left on it),
    the decoded output keeps the original per-channel quantization (LUT/PRUNE take channels from it)."""
    from converters.inspect import inspect_model

    tflite_bytes, inputs = int8_dense_model
    kernels, biases = _weights(tflite_bytes)
    big, bias = kernels[0], {t.shape[0]: t for t in biases}[32]
    original = {t.index: t for t in inspect_model(tflite_bytes).tensors}
    encodings = {(0, big.index): lut.encode(big.array, big.quant), (0, bias.index): prune.encode(bias.array, bias.quant)}
    packed = insert_decode(tflite_bytes, encodings)
    info = inspect_model(packed)
    pairs = [d for op in info.ops for d in op.decode]
    assert len(pairs) == 2
    for d in pairs:
        enc, out = info.tensors[d.encoded_tensor], info.tensors[d.output_tensor]
        assert enc.dtype == "UINT8" and enc.quantization is None
        source = original[big.index] if out.shape == big.shape else original[bias.index]
        assert out.quantization == source.quantization and out.quantization["per_channel"]
        assert out.dtype == source.dtype and not out.is_constant
    assert same_bytes(_outputs(packed, inputs), _outputs(tflite_bytes, inputs))
    assert same_bytes(_outputs(packed, inputs, alt_memory=8192), _outputs(tflite_bytes, inputs))
