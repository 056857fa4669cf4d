"""Test helpers: a tiny pruned digits model and its TFLite conversions, built once per session."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def digits_ticket(conv: bool = False, density: float = 0.25):
    """A quickly trained digits model (Dense, or a small CNN) with magnitude-pruned kernels.

    Returns (model, dataset, representative float32 rows).
    """
    import tf_keras as keras

    from edge_lottery.data import load_dataset, representative_samples

    ds = load_dataset("digits")
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Input(ds.input_shape)]
    if conv:
        layers += [keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.DepthwiseConv2D(3, activation="relu")]
    layers += [keras.layers.Flatten(), keras.layers.Dense(40, activation="relu"), keras.layers.Dense(ds.num_classes)]
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=3, batch_size=128, verbose=0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D) and not isinstance(
                layer, keras.layers.DepthwiseConv2D):
            k, b = layer.get_weights()
            thr = np.quantile(np.abs(k), 1 - density)
            layer.set_weights([np.where(np.abs(k) >= thr, k, 0), b])
    return model, ds, representative_samples(ds, 32, seed=0)


@functools.cache
def digits_tflite(mode: str = "int8", conv: bool = False) -> bytes:
    from converters.tflite import convert

    model, _, rep = digits_ticket(conv)
    return convert(model, mode, rep)
