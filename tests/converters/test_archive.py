"""Deep Compression archive: exact byte restoration, CSR gap fillers, sizes, and bad input."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters import ConverterError
from converters.archive import _csr, archive_report, pack_archive, unpack_archive


def _model_with(weights: list[np.ndarray], extra: bytes = b"") -> bytes:
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    from converters.tflm import flatbuffer

    model = model_editor.Model(description="archive test")
    sg = model.add_subgraph()
    x = sg.add_tensor(shape=(1,), dtype=tflite.TensorType.INT8, name="x")
    outs = []
    for i, w in enumerate(weights):
        outs.append(sg.add_tensor(shape=w.shape, dtype=flatbuffer.tensor_type(w.dtype), data=w.tobytes(),
                                  name=f"w{i}"))
    sg.inputs, sg.outputs = [x], outs
    if extra:
        model.metadata["extra"] = extra
    return bytes(model.build())


def _sparse_int8(shape, density, seed):
    rng = np.random.default_rng(seed)
    w = np.round(rng.laplace(0, 20, size=shape)).clip(-128, 127).astype(np.int8)
    w[rng.random(shape) >= density] = 0
    return w


def test_csr_relative_indices_with_filler_zeros():
    data = np.zeros(40, dtype=np.uint8)
    data[[2, 3, 30]] = [7, 9, 5]
    csr = _csr(data, 3)  # gaps up to 7; the gap of 26 needs fillers
    assert csr.gaps.tolist() == [2, 0, 7, 7, 7, 2]
    assert csr.values.tolist() == [7, 9, 0, 0, 0, 5]
    positions = np.cumsum(csr.gaps + 1) - 1
    rebuilt = np.zeros(40, dtype=np.uint8)
    rebuilt[positions] = csr.values
    assert rebuilt.tobytes() == data.tobytes()


def test_roundtrip_is_byte_exact_and_small():
    weights = [_sparse_int8((64, 128), 0.1, 0), _sparse_int8((32, 64), 0.5, 1), np.arange(20, dtype=np.int32)]
    original = _model_with(weights, extra=b"metadata stays verbatim")
    blob = pack_archive(original)
    assert blob[:4] == b"ELDC"
    assert unpack_archive(blob) == original
    report = archive_report(original)
    assert report["archive_bytes"] == len(blob)
    assert report["archive_bytes"] < report["zlib_only_bytes"] < report["original_bytes"]
    assert sorted(t["bytes"] for t in report["tensors"]) == [32 * 64, 64 * 128]  # int32 left in the rest
    sparse = next(t for t in report["tensors"] if t["bytes"] == 64 * 128)
    assert sparse["nonzero"] == int(np.count_nonzero(weights[0]))
    assert sparse["packed_bytes"] < 0.25 * sparse["bytes"]
    assert sparse["entropy_bound_bytes"] <= (sparse["value_bits"] + sparse["index_bits_total"]) / 8


def test_explicit_tensors_and_dense_or_empty_buffers():
    dense = np.arange(-128, 128, dtype=np.int8).repeat(2)
    zeros = np.zeros(300, dtype=np.int8)
    original = _model_with([dense, zeros, np.linspace(-1, 1, 50).astype(np.float32)])
    blob = pack_archive(original, tensors=[(0, 1), (0, 2), (0, 3)])
    assert unpack_archive(blob) == original
    report = archive_report(original, tensors=[(0, 3)])
    assert len(report["tensors"]) == 1 and report["tensors"][0]["bytes"] == 200
    with pytest.raises(ConverterError, match="constant tensor"):
        pack_archive(original, tensors=[(0, 0)])


def test_real_converted_model_roundtrip():
    # `converters` (imported above) selected Keras 2 before TensorFlow.
    import tf_keras as keras

    from converters.quantize import PostTrainingQuantization
    from converters.tflite import convert

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    for layer in model.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.8)] = 0
            layer.set_weights([kernel, bias])
    rng = np.random.default_rng(0)
    rep = np.concatenate([rng.normal(size=(1, 8, 8, 1)).astype(np.float32) for _ in range(8)])
    original = convert(model, PostTrainingQuantization(mode="int8", io="float", num_samples=8), rep)
    blob = pack_archive(original)
    assert unpack_archive(blob) == original
    report = archive_report(original)
    assert report["tensors"] and report["archive_bytes"] < report["original_bytes"]


def test_bad_input_is_one_line_error():
    original = _model_with([_sparse_int8((16, 16), 0.3, 2)])
    blob = pack_archive(original)
    cases = {
        "truncated": blob[:-5],
        "too short": blob[:10],
        "foreign": b"PK\x03\x04" + blob[4:],
        "version": blob[:4] + bytes([9]) + blob[5:],
        "crc": blob[:-1] + bytes([blob[-1] ^ 1]),
    }
    messages = {}
    for name, bad in cases.items():
        with pytest.raises(ConverterError) as info:
            unpack_archive(bad)
        messages[name] = str(info.value)
        assert "\n" not in messages[name]
    assert "magic" in messages["foreign"] and "version" in messages["version"] and "CRC" in messages["crc"]
    # A consistent header over a corrupt payload (CRC recomputed) is still caught.
    header = bytearray(blob[:32])
    payload = bytearray(blob[32:])
    payload[40] ^= 0xFF
    struct.pack_into("<I", header, 20, zlib.crc32(bytes(payload)))
    with pytest.raises(ConverterError):
        unpack_archive(bytes(header) + bytes(payload))
    with pytest.raises(ConverterError, match="TFL3"):
        pack_archive(b"definitely not a flatbuffer")


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3000), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_property_roundtrip(n, density, seed):
    original = _model_with([_sparse_int8((n,), density, seed)])
    assert unpack_archive(pack_archive(original, tensors=[(0, 1)])) == original
