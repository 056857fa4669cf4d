"""Property tests: random tensors, shapes, zero points and sparsities -> the stock TFLM runtime
decodes every encoder's output to the exact original bytes (and so does the reference decoder)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tflm_models import decoded_on_tflm, same_bytes

from converters.tflm import huffman_tables, lut, prune
from converters.tflm.encoding import TensorQuant

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = ["bool", "float32", "int8", "int16", "int32", "int64"]


@st.composite
def tensors(draw, dtypes=tuple(DTYPES), max_distinct=None):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    seed = draw(st.integers(0, 2**31 - 1))
    sparsity = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype == np.bool_:
        values = rng.random(n) < 0.5
    elif dtype == np.float32:
        values = rng.normal(scale=10.0, size=n).astype(np.float32)
        values[rng.random(n) < 0.1] = -0.0
    else:
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=n, dtype=dtype, endpoint=True)
    if max_distinct is not None:
        palette = rng.choice(values, size=min(n, max_distinct))
        values = rng.choice(palette, size=n)
    values = values.astype(dtype)
    values[rng.random(n) < sparsity] = np.zeros(1, dtype=dtype)[0]
    values = values.reshape(shape)
    # Quantization: none, per-tensor, or per-channel on axis 0 or the last axis.
    kind = draw(st.sampled_from(["none", "tensor", "axis0", "last"]))
    quant = None
    if kind != "none":
        axis = 0 if kind in ("tensor", "axis0") else len(shape) - 1
        c = 1 if kind == "tensor" else shape[axis]
        if kind == "last" and c == 1:
            axis = 0
        zps = rng.integers(-128, 128, size=c) if dtype == np.int8 else np.zeros(c, dtype=np.int64)
        quant = TensorQuant(np.full(c, 0.5, dtype=np.float32), zps, axis)
        if dtype == np.int8 and draw(st.booleans()):  # make the zero points actually occur
            from converters.tflm.prune import fill_values

            fill = fill_values(shape, dtype, quant).reshape(shape)
            values = np.where(rng.random(shape) < sparsity, fill, values).astype(dtype)
    return values, quant


@SETTINGS
@given(tensors())
def test_prune_property(case):
    values, quant = case
    enc = prune.encode(values, quant)
    assert same_bytes(prune.decode(enc, values.shape, values.dtype, quant), values)
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


@SETTINGS
@given(tensors(max_distinct=100))
def test_lut_property(case):
    values, quant = case
    enc = lut.encode(values, quant)
    assert 1 <= enc.details["bit_width"] <= 7
    assert same_bytes(lut.decode(enc, values.shape, values.dtype, quant), values)
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)


@SETTINGS
@given(tensors(dtypes=("int8", "int16")), st.sampled_from([None, 16, 32]), st.one_of(st.none(), st.integers(1, 12)))
def test_huffman_property(case, entry_bits, root_bits):
    values, quant = case
    if values.dtype == np.int16 and entry_bits == 16:
        entry_bits = 32
    enc = huffman_tables.encode(values, quant, table_entry_bits=entry_bits, root_bits=root_bits)
    assert enc.details["code_bits"] == enc.details["optimal_code_bits"] or enc.details["length_limit"]
    assert same_bytes(huffman_tables.decode(enc, values.shape, values.dtype), values)
    assert same_bytes(decoded_on_tflm(values, enc, quant), values)
