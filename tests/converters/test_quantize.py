"""Trained quantization recipes keep a ticket's zeros; plain QAT does not (real TFMOT, tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from converters import ConverterError
from converters import quantize as q


def _pruned_model(keras, density: float = 0.2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((16,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    for layer in model.layers:
        k, b = layer.get_weights()
        thr = np.quantile(np.abs(k), 1 - density)
        layer.set_weights([np.where(np.abs(k) >= thr, k, 0.0), b])
    return model


def _fit(model, keras, steps: int = 30):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=256)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=max(1, steps // 8), verbose=0)
    return model


@pytest.fixture(scope="module")
def keras():
    import tf_keras

    return tf_keras


def test_plain_qat_destroys_sparsity_and_pqat_keeps_it(keras):
    plain = _fit(q.plain_qat(_pruned_model(keras)), keras)
    pqat = _fit(q.prune_preserving_qat(_pruned_model(keras)), keras)
    d_plain = q.densities(plain)
    d_pqat = q.densities(pqat)
    assert len(d_plain) == len(d_pqat) == 2
    assert max(d_plain.values()) > 0.5, d_plain  # zeros regrow under plain QAT
    assert all(abs(d - 0.2) < 0.02 for d in d_pqat.values()), d_pqat


def test_clustering_keeps_zeros_then_pcqat_keeps_both(keras):
    clustered = q.cluster_preserving_sparsity(_pruned_model(keras), number_of_clusters=8)
    clustered = q.strip_clustering(_fit(clustered, keras, steps=16))
    dens = q.densities(clustered)
    assert all(abs(d - 0.2) < 0.02 for d in dens.values()), dens
    assert all(n <= 8 for n in q.distinct_values(clustered).values())
    pcqat = _fit(q.prune_cluster_preserving_qat(clustered), keras, steps=16)
    assert all(abs(d - 0.2) < 0.02 for d in q.densities(pcqat).values())
    assert all(n <= 8 for n in q.distinct_values(pcqat).values())


def test_bad_arguments_are_one_line_errors(keras):
    with pytest.raises(ConverterError, match="quantize mode: expected one of"):
        q.PostTrainingQuantization(mode="int4")
    with pytest.raises(ConverterError, match="number_of_clusters"):
        q.cluster_preserving_sparsity(_pruned_model(keras), number_of_clusters=1)
    with pytest.raises(ConverterError, match="tf_keras"):
        q.prune_preserving_qat(object())
    cfg = q.PostTrainingQuantization("int16x8", io="float", num_samples=7)
    assert q.PostTrainingQuantization.from_config(cfg.get_config()) == cfg


def test_pqat_model_converts_to_int8_tflite_with_its_zeros(keras):
    from converters.inspect import inspect_model
    from converters.tflite import convert, run_litert

    pqat = _fit(q.prune_preserving_qat(_pruned_model(keras)), keras, steps=8)
    flat = convert(pqat, "int8")  # QAT learnt the ranges: no representative data needed
    info = inspect_model(flat)
    kernels = [t for t in info.tensors if t.is_constant and t.dtype == "INT8" and len(t.shape) == 2]
    assert len(kernels) == 2
    assert all(abs(t.zero_fraction - 0.8) < 0.03 for t in kernels), [t.zero_fraction for t in kernels]
    x = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
    assert run_litert(flat, x).dtype == np.int8
