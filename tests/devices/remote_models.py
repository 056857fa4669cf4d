"""Tiny int8 models and digits inputs shared by the remote-device tests (serial, android).

Built once per test process: a tf_keras Dense classifier on 8x8x1 digits, converted with full
integer quantization so its input and output tensors are int8, like an MCU deployment.
"""

from __future__ import annotations

import functools

import numpy as np

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)


@functools.lru_cache(maxsize=1)
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from edge_lottery.data import load_dataset

    ds = load_dataset("digits")
    return (np.asarray(ds.x_train), np.asarray(ds.y_train), np.asarray(ds.x_test), np.asarray(ds.y_test))


@functools.lru_cache(maxsize=1)
def tiny_int8_model() -> bytes:
    import tf_keras as keras

    from converters.quantize import PostTrainingQuantization
    from converters.tflite import convert

    x_train, y_train, _, _ = digits_split()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)

    return convert(model, PostTrainingQuantization(mode="int8", num_samples=64), x_train[:64].astype(np.float32))


def write_model(tmp_path, name: str = "tiny.tflite"):
    path = tmp_path / name
    path.write_bytes(tiny_int8_model())
    return path


def quantize_input(model: bytes, x: np.ndarray) -> bytes:
    """float image -> int8 bytes with the model's input scale / zero point (TFLM reads them)."""
    from tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(model)
    d = it.get_input_details(0)
    scale = d["quantization_parameters"]["scales"][0]
    zp = d["quantization_parameters"]["zero_points"][0]
    q = np.clip(np.round(np.asarray(x, np.float32) / scale + zp), -128, 127).astype(np.int8)
    return q.tobytes()
