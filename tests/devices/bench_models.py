"""Tiny .tflite models for the device-target tests, built once per test session.

Conv2D(4, 3x3) -> Flatten -> Dense(10) on 8x8x1 inputs, as float32 and full-integer int8, plus a
Dense-only int8 model whose weight is big enough to be worth packing for TFLite-Micro DECODE.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)

#: Hand-computed MACs of the conv model: Conv2D 'valid' 3x3x1 -> 6x6x4, then Dense 144 -> 10.
CONV_MACS = 6 * 6 * 4 * 3 * 3 * 1 + 144 * 10
#: Dense 64 -> 32 -> 10.
DENSE_MACS = 64 * 32 + 32 * 10


@functools.lru_cache(maxsize=1)
def _dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="edge-lottery-bench-models-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _keras_conv():
    import numpy as np
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    return model, np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)


def _keras_dense():
    import numpy as np
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    # sparsify the first weight so packing is worthwhile
    w, b = model.layers[0].get_weights()
    w[np.abs(w) < np.quantile(np.abs(w), 0.6)] = 0.0
    model.layers[0].set_weights([w, b])
    return model, np.random.default_rng(0).random((16, 64), dtype=np.float32)


def _convert(model, data, int8: bool) -> bytes:
    from converters.quantize import PostTrainingQuantization
    from converters.tflite import convert

    if not int8:
        return convert(model, "float32")
    return convert(model, PostTrainingQuantization(mode="int8", num_samples=len(data)), data)


@functools.cache
def tiny_model(kind: str = "conv", int8: bool = False) -> Path:
    """Path of a cached tiny model: kind 'conv' or 'dense', float32 or int8."""
    model, data = _keras_conv() if kind == "conv" else _keras_dense()
    path = _dir() / f"{kind}_{'int8' if int8 else 'float'}.tflite"
    path.write_bytes(_convert(model, data, int8))
    return path


@functools.cache
def unsupported_model(kind: str) -> Path:
    """'topk': TOPK_V2, which LiteRT runs and TFLite-Micro has no kernel for;
    'custom': a custom 'Erf' op that no interpreter here can run."""
    import tensorflow as tf

    if kind == "topk":
        def fn(x):
            return tf.math.top_k(tf.reshape(x, [-1]), k=3).values
    else:
        def fn(x):
            return tf.math.erf(x)
    func = tf.function(fn, input_signature=[tf.TensorSpec([1, 8], tf.float32)], autograph=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([func.get_concrete_function()], func)
    converter.allow_custom_ops = kind != "topk"
    path = _dir() / f"unsupported_{kind}.tflite"
    path.write_bytes(converter.convert())
    return path


@functools.cache
def packed_model() -> Path | None:
    """The int8 dense model packed with TFLM PRUNE DECODE, or None if the packer is not available."""
    try:
        from converters.tflm.pack import pack
    except ImportError:
        return None
    result = pack(tiny_model("dense", int8=True).read_bytes(), "prune", measure_arena=False)
    path = _dir() / "dense_int8_packed.tflite"
    path.write_bytes(result.model_bytes)
    return path
