"""PRUNE (DECODE type 2): fill-value rules, upstream vectors, every dtype decoded by the stock runtime."""

from __future__ import annotations

import numpy as np
import pytest
from tflm_models import decode_model, decoded_on_tflm, run_tflm, same_bytes

from converters import ConverterError
from converters.tflm import prune
from converters.tflm.encoding import Encoded, TensorQuant

# tflite-micro kernels/decode_state_prune_test.cc: int8 [2,5,8,1], zero points (-128, 0) on axis 0.
UPSTREAM_BITMAP = bytes([0xA5, 0x5A] + [0xA5] * 8)
UPSTREAM_VALUES0 = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4,
                    11, 12, 13, 14, 11, 12, 13, 14, 11, 12, 13, 14, 11, 12, 13, 14, 11, 12, 13, 14]


def _upstream_expected() -> np.ndarray:
    rows = []
    for row in range(10):
        fill = -128 if row < 5 else 0
        vals = iter([1, 2, 3, 4] if row < 5 else [11, 12, 13, 14])
        bits = format(UPSTREAM_BITMAP[row], "08b")
        rows.append([next(vals) if b == "1" else fill for b in bits])
    return np.array(rows, dtype=np.int8).reshape(2, 5, 8, 1)


def test_reproduces_upstream_vectors():
    expected = _upstream_expected()
    quant = TensorQuant(np.ones(2), np.array([-128, 0]), 0)
    enc = prune.encode(expected, quant, pad_to=1)
    assert enc.encoded == UPSTREAM_BITMAP
    assert enc.ancillary[:16] == bytes([2, 1, 0, 0, 1]) + bytes(11)
    assert list(np.frombuffer(enc.ancillary[16:], dtype=np.int8)) == UPSTREAM_VALUES0
    assert same_bytes(decoded_on_tflm(expected, enc, quant), expected)


DTYPES = [np.bool_, np.float32, np.int8, np.int16, np.int32, np.int64]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_decodes_exactly(dtype):
    rng = np.random.default_rng(0)
    shape = (6, 5, 3)
    if dtype is np.bool_:
        values = rng.random(shape) < 0.3
    elif dtype is np.float32:
        values = (rng.normal(size=shape) * (rng.random(shape) < 0.4)).astype(np.float32)
        values[0, 0, 0] = -0.0  # differs bitwise from the +0.0 fill: must be kept
        values[0, 0, 1] = np.inf
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        values[rng.random(shape) < 0.5] = 0
    enc = prune.encode(values)
    zero_bits = np.zeros(1, dtype=values.dtype).view(np.uint8).tobytes()
    flat = values.reshape(-1)
    expected_kept = sum(flat[i].tobytes() != zero_bits for i in range(flat.size))
    assert enc.details["kept"] == expected_kept
    assert len(enc.ancillary) == 16 + expected_kept * values.dtype.itemsize
    assert len(enc.encoded) % 4 == 0 and len(enc.encoded) >= (values.size + 7) // 8
    assert same_bytes(prune.decode(enc, values.shape, values.dtype), values)
    assert same_bytes(decoded_on_tflm(values, enc), values)


def test_negative_zero_is_kept():
    values = np.array([0.0, -0.0, 1.0, 0.0], dtype=np.float32)
    enc = prune.encode(values)
    assert enc.details["kept"] == 2
    out = decoded_on_tflm(values, enc)
    assert np.signbit(out[1]) and not np.signbit(out[0])


@pytest.mark.parametrize("axis", [0, 2])
def test_int8_per_channel_nonzero_zero_points(axis):
    rng = np.random.default_rng(1)
    shape = (4, 3, 4) if axis == 2 else (5, 3, 2)
    c = shape[axis]
    zps = rng.integers(-20, 20, size=c)
    quant = TensorQuant(np.full(c, 0.1), zps, axis)
    values = rng.integers(-128, 128, size=shape).astype(np.int8)
    fill = np.expand_dims(zps, tuple(i for i in range(3) if i != axis)).astype(np.int8)
    mask = rng.random(shape) < 0.6
    values = np.where(mask, np.broadcast_to(fill, shape), values).astype(np.int8)
    enc = prune.encode(values, quant)
    assert enc.details["kept"] == int((values != np.broadcast_to(fill, shape)).sum())
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


def test_per_tensor_int8_zero_point_minus_17():
    rng = np.random.default_rng(2)
    quant = TensorQuant(np.array([0.05]), np.array([-17]), 0)
    values = rng.integers(-128, 128, size=(8, 9)).astype(np.int8)
    values[rng.random(values.shape) < 0.7] = -17
    enc = prune.encode(values, quant)
    assert enc.details["kept"] == int((values != -17).sum())
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


def test_per_channel_all_zero_points_fill_with_zero_and_int32_bias():
    quant = TensorQuant(np.full(4, 0.2), np.zeros(4), 0)
    bias = np.array([0, 1234567, 0, -5], dtype=np.int32)
    enc = prune.encode(bias, quant)
    assert enc.details["kept"] == 2
    assert same_bytes(decoded_on_tflm(bias, enc, quant), bias)


def test_refuses_what_the_runtime_rejects():
    with pytest.raises(ConverterError, match="zero points of a int16 tensor"):
        prune.encode(np.zeros((2, 3), dtype=np.int16), TensorQuant(np.ones(1), np.array([5]), 0))
    with pytest.raises(ConverterError, match="quantized_dimension"):
        prune.encode(np.zeros((2, 3, 4), dtype=np.int8), TensorQuant(np.ones(3), np.zeros(3), 1))
    with pytest.raises(ConverterError, match=r"PRUNE encoding of tensor uint8\[3\]: dtype"):
        prune.encode(np.zeros(3, dtype=np.uint8))


def test_negative_controls_on_the_runtime():
    values = np.array([[0, 3, 0, -2], [7, 0, 0, 1]], dtype=np.int16)
    enc = prune.encode(values)
    # PRUNE int16 with a non-zero zero point on the output: "All zero-points must be zero".
    from tflm_models import constant_output_model

    from converters.tflm.insert import insert_decode

    bad_quant = TensorQuant(np.ones(1), np.array([5]), 0)
    with pytest.raises(RuntimeError):
        run_tflm(insert_decode(constant_output_model(values, bad_quant), {(0, 1): enc}, verify=False))
    # Decode type 3 and 200 are rejected at prepare.
    for decode_type in (3, 200):
        anc = bytearray(enc.ancillary)
        anc[0] = decode_type
        bad = Encoded("prune", enc.encoded, bytes(anc), enc.original_bytes, 0.0, 0, {})
        with pytest.raises(RuntimeError):
            run_tflm(decode_model(values, bad, verify=False))
    # quantized_dimension = 1 on a rank-3 tensor: "unsupported quantization axis 1".
    v3 = np.zeros((2, 3, 4), dtype=np.int8)
    v3[1, 2, 3] = 9
    enc3 = prune.encode(v3)
    q_axis1 = TensorQuant(np.ones(3), np.zeros(3), 1)
    with pytest.raises(RuntimeError):
        run_tflm(insert_decode(constant_output_model(v3, q_axis1), {(0, 1): enc3}, verify=False))
    # Flip one bitmap bit: output differs.
    flipped = bytearray(enc.encoded)
    flipped[0] ^= 0x80
    bad = Encoded("prune", bytes(flipped), enc.ancillary, enc.original_bytes, 0.0, 0, {})
    assert not same_bytes(run_tflm(decode_model(values, bad, verify=False))[0], values)
