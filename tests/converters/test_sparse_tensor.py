"""The project's sparse FC encoder: LiteRT runs it and matches the dense model, unlike the
converter's encoding when in_features is not a multiple of the block."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_delegate_models import trailing_block_mlp

from converters import ConverterError
from converters.sparse_tensor import decode_fc, decode_sparsity, encode_fc, read_model
from converters.tflite import convert, run_litert


@settings(max_examples=40, deadline=None)
@given(out_f=st.integers(1, 9), blocks=st.integers(1, 5), block=st.sampled_from([None, 4, 16]),
       density=st.floats(0, 1), seed=st.integers(0, 1000))
def test_encode_decode_roundtrip(out_f, blocks, block, density, seed):
    rng = np.random.default_rng(seed)
    in_f = blocks * (block or 3)
    w = rng.integers(-127, 128, size=(out_f, in_f)).astype(np.int8)
    w[rng.random(w.shape) > density] = 0
    enc = encode_fc(w, block)
    assert np.array_equal(decode_fc(enc), w)
    assert enc.segments[0] == 0 and enc.segments[-1] * (block or 1) == enc.values.size


def test_block_must_divide_in_features():
    with pytest.raises(ConverterError, match="a multiple of 16"):
        encode_fc(np.zeros((2, 20), np.int8), 16)


@pytest.mark.parametrize("mode,in_f,block", [("int8", 60, 16), ("float32", 62, 4)])
def test_project_sparse_matches_dense_where_converter_drops_columns(mode, in_f, block):
    model, x = trailing_block_mlp(in_f, block)
    dense = run_litert(convert(model, mode, x), x)
    mine_bytes = convert(model, mode, x, sparse="project")
    mine = run_litert(mine_bytes, x)
    conv = run_litert(convert(model, mode, x, sparse="converter"), x)
    if mode == "int8":
        assert np.array_equal(mine, dense)
        assert np.abs(conv.astype(int) - dense).max() > 2  # the converter's encoding lost columns
    else:
        np.testing.assert_allclose(mine, dense, rtol=1e-5, atol=1e-5)
        assert np.abs(conv - dense).max() > 1e-3
    # the weight is really stored sparse, with our metadata
    m = read_model(mine_bytes)
    sparse = [t for t in m.subgraphs[0].tensors if t.sparsity is not None]
    assert sparse, "no tensor was written in sparse format"
    t = sparse[0]
    assert list(t.sparsity.traversalOrder) == [0, 1, 2] and list(t.sparsity.blockMap) == [1]
    assert t.sparsity.dimMetadata[2].denseSize == block
    values = np.frombuffer(bytes(np.asarray(m.buffers[t.buffer].data, np.uint8)),
                           dtype=np.int8 if mode == "int8" else np.float32)
    dense_w = decode_sparsity(values, t.sparsity, tuple(t.shape))
    assert dense_w.shape[1] % block == 0 and np.count_nonzero(dense_w[:, in_f:]) == 0


def test_unstructured_float_uses_csr_and_matches():
    import tf_keras as keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.layers.Input((30,)), keras.layers.Dense(12)])
    k, b = model.layers[0].get_weights()
    k[np.random.default_rng(0).random(k.shape) < 0.8] = 0
    model.layers[0].set_weights([k, b])
    x = np.random.default_rng(1).random((8, 30)).astype(np.float32)
    flat = convert(model, "float32", sparse="project")
    t = [t for t in read_model(flat).subgraphs[0].tensors if t.sparsity is not None][0]
    assert list(t.sparsity.traversalOrder) == [0, 1]
    np.testing.assert_allclose(run_litert(flat, x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
