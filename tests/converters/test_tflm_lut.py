"""LUT (DECODE type 0): one value table per quantization channel, decoded exactly by the stock runtime."""

from __future__ import annotations

import numpy as np
import pytest
from tflm_models import decode_model, decoded_on_tflm, run_tflm, same_bytes

from converters import ConverterError
from converters.tflm import lut
from converters.tflm.encoding import Encoded, TensorQuant


def test_float32_with_negative_zero_and_nan_bits():
    rng = np.random.default_rng(0)
    palette = np.array([0.0, -0.0, 1.5, -2.25, np.inf, 3e-38], dtype=np.float32)
    values = rng.choice(palette, size=(7, 9)).astype(np.float32)
    enc = lut.encode(values)
    assert enc.details["stride"] == 6 and enc.details["bit_width"] == 3
    assert len(enc.encoded) == (values.size * 3 + 7) // 8
    assert len(enc.ancillary) == 16 + 6 * 4
    assert same_bytes(decoded_on_tflm(values, enc), values)


def test_int64():
    values = np.array([[2**40, -1, 7], [7, 2**40, -(2**62)]], dtype=np.int64)
    enc = lut.encode(values)
    assert enc.details["stride"] == 4 and enc.details["bit_width"] == 2
    assert same_bytes(decoded_on_tflm(values, enc), values)


def test_int8_last_axis_per_channel():
    rng = np.random.default_rng(1)
    c = 6
    quant = TensorQuant(np.full(c, 0.02), np.zeros(c), 2)
    values = np.stack([rng.choice(rng.integers(-128, 128, size=5), size=(3, 4)) for _ in range(c)], axis=-1)
    values = values.astype(np.int8)
    enc = lut.encode(values, quant)
    assert enc.details["tables"] == c
    assert enc.ancillary[5] >> 4 == 2  # axis nibble (ignored by today's runtime)
    assert len(enc.ancillary) == 16 + c * enc.details["stride"]
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_int8_axis0_fast_paths(bits):
    rng = np.random.default_rng(bits)
    quant = TensorQuant(np.full(8, 0.1), np.zeros(8), 0)
    values = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(8, 37)).astype(np.int8)
    enc = lut.encode(values, quant)
    assert enc.details["bit_width"] == bits
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


def test_shared_value_set_is_replicated_per_channel():
    rng = np.random.default_rng(2)
    palette = np.array([-9, -3, 0, 4, 11], dtype=np.int8)
    quant = TensorQuant(np.full(4, 0.1), np.zeros(4), 0)
    values = rng.choice(palette, size=(4, 10)).astype(np.int8)
    enc = lut.encode(values, quant, per_channel_tables=False)
    stride = enc.details["stride"]
    tables = np.frombuffer(enc.ancillary[16:], dtype=np.int8).reshape(4, stride)
    assert (tables == tables[0]).all() and stride == 5
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)
    # A single (unreplicated) table on the 4-channel tensor decodes wrong: the §4.5 pitfall.
    single = Encoded("lut", enc.encoded, enc.ancillary[: 16 + stride], enc.original_bytes, 0.0, 0, {})
    wrong = run_tflm(decode_model(values, single, quant, verify=False))[0]
    assert not same_bytes(wrong, values)


def test_per_channel_int32_bias():
    quant = TensorQuant(np.full(5, 1e-4), np.zeros(5), 0)
    bias = np.array([100000, -7, 0, 100000, 31], dtype=np.int32)
    enc = lut.encode(bias, quant)
    assert enc.details["stride"] == 1 and enc.details["bit_width"] == 1
    assert same_bytes(decoded_on_tflm(bias, enc, quant), bias)


def test_refuses_more_than_128_values_per_channel():
    values = np.arange(-128, 128, dtype=np.int16).reshape(2, 128)
    values[0, 0] = 500
    with pytest.raises(ConverterError, match=r"LUT encoding of tensor int16\[1, 256\]: distinct values per channel"):
        lut.encode(values.reshape(1, 256))
    enc = lut.encode(values, TensorQuant(np.ones(2), np.zeros(2), 0))
    assert enc.details["bit_width"] == 7
    assert same_bytes(decoded_on_tflm(values, enc, TensorQuant(np.ones(2), np.zeros(2), 0)), values)
    with pytest.raises(ConverterError, match="bit_width"):
        lut.encode(values, TensorQuant(np.ones(2), np.zeros(2), 0), bit_width=3)


def test_negative_control_flipped_index_bit():
    values = np.array([[1, 2, 3, 4], [4, 3, 2, 1]], dtype=np.int8)
    enc = lut.encode(values)
    flipped = bytearray(enc.encoded)
    flipped[0] ^= 0x80
    bad = Encoded("lut", bytes(flipped), enc.ancillary, enc.original_bytes, 0.0, 0, {})
    assert not same_bytes(run_tflm(decode_model(values, bad, verify=False))[0], values)
