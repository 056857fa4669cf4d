"""Model registry: every model builds on digits- and MNIST-sized inputs, seeds, logits, Keras 2 only."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

import edge_lottery  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from edge_lottery.errors import EdgeLotteryError, ModelError
from edge_lottery.models import (
    MODELS,
    ModelSpec,
    TrainingDefaults,
    build_model,
    check_keras2_model,
    get_model_spec,
    layer_seed,
)

SHAPES = [(8, 8, 1), (28, 28, 1)]


def _kernel_layers(model):  # layers with a prunable weight matrix, in order
    return [layer for layer in model.layers if any("kernel" in w.name for w in layer.weights)]


def test_registry_specs_are_complete() -> None:
    assert len(set(MODELS)) == len(MODELS) == 9
    for name in MODELS:
        spec = get_model_spec(name)
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.task in ("classification", "reconstruction")
        d = spec.defaults
        assert isinstance(d, TrainingDefaults)
        assert d.optimizer in ("adam", "sgd") and d.learning_rate > 0 and d.batch_size >= 1
        assert (d.iterations is None) != (d.epochs is None)
        for rate in (d.prune_fraction_dense, d.prune_fraction_conv, d.prune_fraction_output):
            assert 0.0 < rate < 1.0
        assert d.source, f"{name} has no citation"
        assert d.total_steps(55_000) > 0
        json.dumps(spec.to_dict())
    lth = get_model_spec("lenet_300_100").defaults
    assert (lth.optimizer, lth.learning_rate, lth.batch_size, lth.iterations) == ("adam", 1.2e-3, 60, 50_000)
    assert (lth.prune_fraction_dense, lth.prune_fraction_output) == (0.2, 0.1)
    assert [get_model_spec(n).defaults.learning_rate for n in ("conv2", "conv4", "conv6")] == [2e-4, 3e-4, 3e-4]
    assert [get_model_spec(n).defaults.iterations for n in ("conv2", "conv4", "conv6")] == [20_000, 25_000, 30_000]
    assert [get_model_spec(n).defaults.prune_fraction_conv for n in ("conv2", "conv4", "conv6")] == [0.1, 0.1, 0.15]
    assert get_model_spec("fc_autoencoder").task == "reconstruction"
    ds = get_model_spec("ds_cnn").defaults
    assert ds.total_steps(1000) == 36 * 10  # epochs x ceil(1000 / 100)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ModelError) as exc:
        get_model_spec("vgg19")
    msg = str(exc.value)
    assert "\n" not in msg and "vgg19" in msg and all(n in msg for n in MODELS)
    with pytest.raises(ModelError):
        build_model("vgg19", (8, 8, 1), 10)


@pytest.mark.parametrize("shape", SHAPES, ids=["8x8", "28x28"])
@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_runs(name: str, shape: tuple[int, ...]) -> None:
    spec = get_model_spec(name)
    model = build_model(name, shape, 3, seed=0)
    check_keras2_model(model)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    y = model(x, training=False).numpy()
    expected_units = int(np.prod(shape)) if spec.task == "reconstruction" else 3
    assert y.shape == (2, expected_units)
    assert np.all(np.isfinite(y))
    # Layers the pruning code relies on, by name.
    assert model.layers[-1].name == spec.output_layer
    assert _kernel_layers(model)[0].name == spec.first_layer
    assert _kernel_layers(model)[-1].name == spec.output_layer
    # Logits / raw reconstruction: a linear output layer, no softmax anywhere at the end.
    assert model.get_layer(spec.output_layer).get_config()["activation"] == "linear"
    if spec.task == "classification":
        assert not np.allclose(y.sum(axis=1), 1.0)
    assert len({layer.name for layer in model.layers}) == len(model.layers)


def test_reference_sizes() -> None:
    # Parameter counts the papers report: LeNet-300-100 266K, Han et al.'s LeNet-5 431K.
    assert build_model("lenet_300_100", (28, 28, 1), 10).count_params() == 266_610
    assert build_model("lenet5", (28, 28, 1), 10).count_params() == 431_080
    # Frankle & Carbin's Conv-2 on CIFAR-10: 4.3M weights.
    conv2 = build_model("conv2", (32, 32, 3), 10)
    assert abs(conv2.count_params() - 4.3e6) < 0.05e6
    # Layer names are stable.
    names = [layer.name for layer in build_model("lenet_300_100", (8, 8, 1), 10).layers]
    assert names == ["input", "flatten", "fc1", "fc2", "output"]
    conv6 = [layer.name for layer in _kernel_layers(build_model("conv6", (8, 8, 1), 10))]
    assert conv6 == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1", "fc2", "output"]


@pytest.mark.parametrize("name", ["lenet_300_100", "conv2", "resnet8", "ds_cnn"])
def test_same_seed_same_weights(name: str) -> None:
    a = build_model(name, (8, 8, 1), 10, seed=7).get_weights()
    b = build_model(name, (8, 8, 1), 10, seed=7).get_weights()
    c = build_model(name, (8, 8, 1), 10, seed=8).get_weights()
    assert len(a) == len(b) == len(c)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    kernels = [i for i, w in enumerate(a) if w.ndim >= 2]
    assert kernels and all(not np.array_equal(a[i], c[i]) for i in kernels)
    # Different layers of one model get different seeds.
    assert layer_seed(7, "fc1") != layer_seed(7, "fc2") and layer_seed(7, "fc1") != layer_seed(8, "fc1")


def _weights_sha256(model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def test_initial_weights_identical_across_processes() -> None:
    """A resumed search rebuilds theta_0 from the seed in a new process: it must be bit-identical."""
    # layer_seed is a SHA-256, not Python's per-process salted hash().
    assert (layer_seed(0, "fc1"), layer_seed(1, "conv1")) == (507703097, 209143458)
    code = (
        "import hashlib, numpy as np, edge_lottery\n"
        "from edge_lottery.models import build_model\n"
        "h = hashlib.sha256()\n"
        "for w in build_model('conv2', (8, 8, 1), 10, seed=3).get_weights():\n"
        "    h.update(np.ascontiguousarray(w).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == _weights_sha256(build_model("conv2", (8, 8, 1), 10, seed=3))


def test_bad_arguments() -> None:
    for bad_shape in [(8, 8), (0, 8, 1), "8x8", (8.5, 8, 1)]:
        with pytest.raises(ModelError) as exc:
            build_model("conv2", bad_shape, 10)
        assert "input_shape" in str(exc.value)
    with pytest.raises(ModelError):
        build_model("lenet5", (8, 8, 1), 0)
    for bad_wd in (-1.0, float("nan"), "1e-4"):
        with pytest.raises(ModelError):
            build_model("lenet5", (8, 8, 1), 10, weight_decay=bad_wd)
    with pytest.raises(ModelError) as exc:
        build_model("lenet5", (8, 8, 1), 10, seed="abc")
    assert "seed" in str(exc.value)
    # Flattening models accept any positive shape.
    assert build_model("lenet_300_100", (64,), 10).output_shape == (None, 10)
    assert build_model("fc_autoencoder", (640,), 0).output_shape == (None, 640)


def test_weight_decay_adds_l2_losses() -> None:
    plain = build_model("lenet5", (8, 8, 1), 10)
    assert plain.losses == []
    wd = build_model("lenet5", (8, 8, 1), 10, weight_decay=1e-4)
    assert len(wd.losses) == len(_kernel_layers(wd)) == 4
    kernel = wd.get_layer("fc1").kernel.numpy()
    reg = [float(v) for v in wd.get_layer("fc1").losses]
    assert reg and np.isclose(reg[0], 1e-4 * float(np.sum(kernel**2)), rtol=1e-5)
    # The regularizer does not change the initial weights (rewinding targets stay the same).
    assert _weights_sha256(wd) == _weights_sha256(build_model("lenet5", (8, 8, 1), 10, weight_decay=0.0))


@pytest.mark.parametrize("name", MODELS)
def test_tfmot_can_wrap_every_model(name: str) -> None:
    """Every registered model must be prunable by TFMOT (the whole point of the registry)."""
    import tensorflow_model_optimization as tfmot

    model = build_model(name, (8, 8, 1), 4, seed=0)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    wrapped = {layer.layer.name for layer in pruned.layers if hasattr(layer, "layer")}
    assert get_model_spec(name).first_layer in wrapped
    assert get_model_spec(name).output_layer in wrapped


def test_lenet_300_100_learns_digits() -> None:
    import tf_keras

    from edge_lottery.data import as_tf_dataset, load_dataset

    ds = load_dataset("digits")
    model = build_model("lenet_300_100", ds.input_shape, ds.num_classes, seed=0)
    d = get_model_spec("lenet_300_100").defaults
    model.compile(
        optimizer=tf_keras.optimizers.Adam(d.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(as_tf_dataset(ds.x_train, ds.y_train, d.batch_size, shuffle=True, seed=0), epochs=8, verbose=0)
    _, acc = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    assert acc > 0.9


def test_batch_norm_model_evaluates_as_it_trains_after_a_short_run() -> None:
    """ds_cnn on digits for 80 steps: with Keras's BN momentum 0.99 it evaluated at chance, because
    the moving statistics trail the weights; with BN_MOMENTUM (0.9) it must learn."""
    import tf_keras

    from edge_lottery.data import load_dataset
    from edge_lottery.models import BN_MOMENTUM

    ds = load_dataset("digits")
    tf_keras.utils.set_random_seed(0)
    model = build_model("ds_cnn", ds.input_shape, ds.num_classes, seed=0)
    moms = {layer.momentum for layer in model.layers if isinstance(layer, tf_keras.layers.BatchNormalization)}
    assert moms == {BN_MOMENTUM}
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, batch_size=32, epochs=2, verbose=0)
    _, acc = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    assert acc > 0.5


def test_keras3_model_rejected() -> None:
    keras3 = pytest.importorskip("keras")
    if not keras3.__version__.startswith("3"):
        pytest.skip(f"installed keras is {keras3.__version__}, not Keras 3")
    inputs = keras3.Input(shape=(4,))
    k3 = keras3.Model(inputs, keras3.layers.Dense(2)(inputs))
    with pytest.raises(ModelError) as exc:
        check_keras2_model(k3)
    msg = str(exc.value)
    assert "\n" not in msg and "Keras 3" in msg and "tf_keras" in msg and "TF_USE_LEGACY_KERAS" in msg
    assert isinstance(exc.value, EdgeLotteryError)
    with pytest.raises(ModelError) as exc:
        check_keras2_model("not a model")
    assert "str" in str(exc.value)


@pytest.mark.slow
def test_lenet_300_100_learns_mnist_with_paper_defaults(shared_data_dir) -> None:
    """One epoch at the LTH settings (Adam 1.2e-3, batch 60) already passes 95 % on MNIST."""
    import tf_keras

    from edge_lottery.data import as_tf_dataset, load_dataset

    ds = load_dataset("mnist", shared_data_dir)
    d = get_model_spec("lenet_300_100").defaults
    model = build_model("lenet_300_100", ds.input_shape, ds.num_classes, seed=0)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(d.learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(as_tf_dataset(ds.x_train, ds.y_train, d.batch_size, shuffle=True, seed=0), epochs=1, verbose=0)
    _, acc = model.evaluate(ds.x_test, ds.y_test, batch_size=1000, verbose=0)
    assert acc > 0.95
