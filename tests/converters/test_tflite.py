"""Keras -> TFLite for every quantization mode, run on the real LiteRT interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from converters import ConverterError
from converters.quantize import QUANTIZE_MODES, PostTrainingQuantization
from converters.tflite import convert, run_litert


@pytest.fixture(scope="module")
def digits_model():
    import tf_keras as keras

    from edge_lottery.data import load_dataset, representative_samples

    ds = load_dataset("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input(ds.input_shape),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(ds.num_classes),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=3, batch_size=64, verbose=0)
    return model, ds, representative_samples(ds, 64, seed=0)


@pytest.mark.parametrize("mode", QUANTIZE_MODES)
def test_every_mode_converts_and_agrees_with_keras(digits_model, mode):
    model, ds, rep = digits_model
    flat = convert(model, mode, rep)
    assert flat[4:8] == b"TFL3"
    x = ds.x_test[:40]
    want = np.argmax(model.predict(x, verbose=0), axis=1)
    got = run_litert(flat, x)
    agree = float(np.mean(np.argmax(got, axis=1) == want))
    assert agree >= 0.9, (mode, agree)
    expected_out = {"int8": np.int8, "int16x8": np.int16}.get(mode, np.float32)
    assert got.dtype == expected_out


def test_quantized_models_are_smaller(digits_model):
    model, _, rep = digits_model
    sizes = {m: len(convert(model, m, rep)) for m in ("float32", "float16", "int8")}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


def test_int8_with_float_io(digits_model):
    model, ds, rep = digits_model
    flat = convert(model, PostTrainingQuantization("int8", io="float"), rep)
    assert run_litert(flat, ds.x_test[:3]).dtype == np.float32


def test_representative_mismatch_is_one_line(digits_model):
    model, _, rep = digits_model
    with pytest.raises(ConverterError, match=r"representative data shape: expected \[n, 8, 8, 1\]") as err:
        convert(model, "int8", rep.reshape(len(rep), 64))
    assert "\n" not in str(err.value)
    with pytest.raises(ConverterError, match="representative data dtype: expected float32"):
        convert(model, "int8", (rep * 255).astype(np.uint8))
    with pytest.raises(ConverterError, match="representative data for --quantize int8"):
        convert(model, "int8", None)
