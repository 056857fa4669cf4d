"""edge_lottery.tfmot_masks on real TFMOT wrappers: fixed masks through fit, strip, save, restore."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge_lottery import masks as M
from edge_lottery import tfmot_masks as T
from edge_lottery.errors import ConfigError, ModelError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")
tfmot = pytest.importorskip("tensorflow_model_optimization")
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils  # noqa: E402


# ------------------------------------------------------------------------------------------
# Tiny digits-sized models and data
# ------------------------------------------------------------------------------------------
def dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((64,))
    x = keras.layers.Dense(32, activation="tanh", name="fc1")(inp)
    x = keras.layers.Dense(16, activation="tanh", name="fc2")(x)
    out = keras.layers.Dense(10, name="out")(x)
    return keras.Model(inp, out)


def conv_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
            keras.layers.Conv2D(16, 1, name="pw"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, name="out"),
        ]
    )


def data(conv, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1) if conv else (n, 64), dtype=np.float32)
    return x, rng.integers(0, 10, n)


def fit(model, conv, epochs=2, optimizer="adam"):
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(conv)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=T.pruning_callbacks())


def half_masks(wrapped, pattern="unstructured"):
    return M.compute_masks(T.get_prunable_weights(wrapped), None, fraction=0.5, pattern=pattern)


# ------------------------------------------------------------------------------------------
# Registry and wrapping
# ------------------------------------------------------------------------------------------
def test_prunable_ids_follow_tfmot_registry():
    assert T.prunable_weight_ids(dense_model()) == ["fc1/kernel", "fc2/kernel", "out/kernel"]
    # DepthwiseConv2D, BatchNorm and biases are never prunable.
    assert T.prunable_weight_ids(conv_model()) == ["conv1/kernel", "pw/kernel", "out/kernel"]


def zoo_model():
    """One of each prunable layer family of TFMOT's registry."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((10,), dtype="int32")
    x = keras.layers.Embedding(50, 8, name="emb")(inp)
    x = keras.layers.LSTM(12, return_sequences=True, name="lstm")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.Conv1D(8, 3, name="c1d")(x)
    x = keras.layers.Reshape((8, 8, 1))(x)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(x))


def test_registry_mirror_matches_tfmot_wrapping():
    ids = T.prunable_weight_ids(zoo_model())
    assert ids == [
        "emb/embeddings", "lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "mha/query/kernel",
        "mha/key/kernel", "mha/value/kernel", "mha/attention_output/kernel", "c1d/kernel",
        "sep/pointwise_kernel", "out/kernel",
    ]
    theirs = tfmot.sparsity.keras.prune_low_magnitude(zoo_model())  # TFMOT's own choice of weights
    assert T.prunable_weight_ids(theirs) == ids
    ours = T.wrap_for_masks(zoo_model())
    assert T.prunable_weight_ids(ours) == ids
    T.set_masks(ours, M.compute_masks(T.get_prunable_weights(ours), None, fraction=0.5, scope="layerwise"))
    assert all(d == 0.5 for d in M.layer_densities(T.get_masks(ours)).values())


def test_wrap_clones_and_does_not_touch_the_callers_model():
    model = dense_model()
    before = T.snapshot(model)
    wrapped = T.wrap_for_masks(model, exclude=["out"])
    assert T.is_wrapped(wrapped) and not T.is_wrapped(model)
    assert T.prunable_weight_ids(wrapped) == ["fc1/kernel", "fc2/kernel"]
    assert [type(layer).__name__ for layer in wrapped.layers][1:] == ["PruneLowMagnitude", "PruneLowMagnitude", "Dense"]
    assert all(m.all() for m in T.get_masks(wrapped).values())
    T.set_masks(wrapped, half_masks(wrapped))
    after = T.snapshot(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # no shared variables
    # Same function as the source before any mask is set.
    x, _ = data(False, 8)
    fresh = T.wrap_for_masks(model)
    np.testing.assert_array_equal(fresh(x, training=False).numpy(), model(x, training=False).numpy())


def test_tfmot_own_wrapping_shares_variables_which_is_why_we_clone():
    """Documents the gotcha: prune_low_magnitude prunes the source model's kernels too."""
    model = dense_model()
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
    layer = wrapped.layers[1]
    w, m, _ = layer.pruning_vars[0]
    m.assign(np.zeros(m.shape, np.float32))
    layer.pruning_obj.weight_mask_op()
    assert not model.get_layer("fc1").kernel.numpy().any()


def test_set_masks_zeroes_weights_immediately_and_validates():
    wrapped = T.wrap_for_masks(dense_model())
    masks = half_masks(wrapped)
    T.set_masks(wrapped, masks)
    weights = T.get_prunable_weights(wrapped)
    for key, m in masks.items():
        assert not weights[key][m == 0].any() and np.all(weights[key][m == 1] != 0)
        np.testing.assert_array_equal(T.get_masks(wrapped)[key], m)
    with pytest.raises(ModelError, match=r"mask ids: expected .*missing \['out/kernel'\], extra \['nope/kernel'\]"):
        T.set_masks(wrapped, {**{k: v for k, v in masks.items() if k != "out/kernel"}, "nope/kernel": masks["fc1/kernel"]})
    with pytest.raises(ModelError, match=r"mask shape of 'fc2/kernel': expected \(32, 16\), received \(16, 32\)"):
        T.set_masks(wrapped, {**masks, "fc2/kernel": masks["fc2/kernel"].T})
    with pytest.raises(ModelError, match=r"mask of 'fc1/kernel': expected 0/1"):
        T.set_masks(wrapped, {**masks, "fc1/kernel": masks["fc1/kernel"] * 0.5})
    np.testing.assert_array_equal(T.get_masks(wrapped)["fc2/kernel"], masks["fc2/kernel"])  # nothing half-set


@pytest.mark.parametrize(("builder", "conv", "pattern"), [(dense_model, False, "block16x1"), (conv_model, True, "unstructured")])
def test_masks_survive_training_and_strip(builder, conv, pattern):
    wrapped = T.wrap_for_masks(builder(), exclude=["out"] if pattern != "unstructured" else ())
    masks = half_masks(wrapped, pattern)
    T.set_masks(wrapped, masks)
    before = T.get_prunable_weights(wrapped)
    fit(wrapped, conv)
    after = T.get_prunable_weights(wrapped)
    for key, m in masks.items():
        np.testing.assert_array_equal(T.get_masks(wrapped)[key], m)
        assert not after[key][m == 0].any(), key  # exactly zero
        # Trained: unpruned weights move (a unit whose outgoing weights are all pruned gets no
        # gradient, so not every single one).
        changed = np.mean(after[key][m == 1] != before[key][m == 1])
        assert changed > 0.4, (key, changed)
    # Optimizer slots do fill at pruned positions (dense gradients); the forward pass re-zeroes.
    first = next(iter(masks))
    (slot,) = [v for v in wrapped.optimizer.variables() if v.name == f"Adam/m/{first}:0"]
    assert np.abs(slot.numpy()[masks[first] == 0]).sum() > 0
    x, _ = data(conv, 8)
    expected = wrapped(x, training=False).numpy()
    stripped = T.strip(wrapped)
    assert not T.is_wrapped(stripped)
    values = T.get_prunable_weights(stripped)
    for key, m in masks.items():
        assert not values[key][m == 0].any()
        assert M.layer_densities({key: values[key] != 0})[key] == M.layer_densities({key: m})[key]
    np.testing.assert_allclose(stripped(x, training=False).numpy(), expected, rtol=1e-6, atol=1e-6)


def test_update_pruning_step_is_mandatory():
    wrapped = T.wrap_for_masks(dense_model())
    wrapped.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = data(False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="UpdatePruningStep"):
        wrapped.fit(x, y, epochs=1, verbose=0)
    assert isinstance(T.pruning_callbacks()[0], tfmot.sparsity.keras.UpdatePruningStep)


def test_apply_masks_rezeroes_after_direct_writes():
    wrapped = T.wrap_for_masks(dense_model())
    masks = half_masks(wrapped)
    T.set_masks(wrapped, masks)
    layer = wrapped.get_layer("prune_low_magnitude_fc1")
    layer.layer.kernel.assign(tf.ones_like(layer.layer.kernel))  # e.g. an optimizer step
    T.apply_masks(wrapped)
    np.testing.assert_array_equal(layer.layer.kernel.numpy(), masks["fc1/kernel"])


# ------------------------------------------------------------------------------------------
# Snapshots and serialisation
# ------------------------------------------------------------------------------------------
def test_snapshot_restore_bit_exact_across_wrapping():
    model = conv_model()
    fit_model = conv_model(seed=1)  # different values to restore over
    theta0 = T.snapshot(model)
    assert "bn1/moving_mean" in theta0 and "dw/depthwise_kernel" in theta0 and "conv1/bias" in theta0
    wrapped = T.wrap_for_masks(fit_model)
    assert set(T.snapshot(wrapped)) == set(theta0)
    masks = half_masks(wrapped)
    T.set_masks(wrapped, masks)
    fit(wrapped, True, epochs=1)  # moves BN statistics too
    T.restore(wrapped, theta0)
    now = T.snapshot(wrapped)
    for key, value in theta0.items():
        expected = value * masks[key] if key in masks else value
        np.testing.assert_array_equal(now[key], expected, err_msg=key)
    np.testing.assert_array_equal(T.get_masks(wrapped)["conv1/kernel"], masks["conv1/kernel"])
    # The stripped model has the same keys, so the same snapshot restores into it.
    stripped = T.strip(wrapped)
    assert set(T.snapshot(stripped)) == set(theta0)
    T.restore(stripped, theta0)
    np.testing.assert_array_equal(T.snapshot(stripped)["pw/kernel"], theta0["pw/kernel"])


def test_restore_masks_too_and_errors():
    wrapped = T.wrap_for_masks(dense_model())
    masks = half_masks(wrapped)
    T.set_masks(wrapped, masks)
    snap = T.snapshot(wrapped, masks=True)
    assert "fc1/kernel#mask" in snap
    T.set_masks(wrapped, {k: np.ones_like(v) for k, v in masks.items()})
    T.restore(wrapped, snap)  # masks kept as they are now (all ones)
    assert all(m.all() for m in T.get_masks(wrapped).values())
    T.restore(wrapped, snap, masks_too=True)
    assert all(np.array_equal(T.get_masks(wrapped)[k], masks[k]) for k in masks)
    with pytest.raises(ModelError, match=r"snapshot keys: expected .*missing \['fc1/bias'\]"):
        T.restore(wrapped, {k: v for k, v in snap.items() if k != "fc1/bias"})
    with pytest.raises(ModelError, match=r"extra \['ghost/kernel'\]"):
        T.restore(wrapped, {**snap, "ghost/kernel": np.zeros(1)})
    with pytest.raises(ModelError, match=r"snapshot shape of 'fc1/kernel': expected \(64, 32\)"):
        T.restore(wrapped, {**snap, "fc1/kernel": np.zeros((3, 3))})
    with pytest.raises(ModelError, match="snapshot masks"):
        T.restore(wrapped, T.snapshot(wrapped), masks_too=True)


def test_switching_to_non_nested_masks_sets_masks_before_restore():
    model = dense_model()
    theta0 = T.snapshot(model)
    wrapped = T.wrap_for_masks(model)
    ticket = half_masks(wrapped)
    control = M.random_masks_like(ticket, "unstructured", np.random.default_rng(0))
    T.set_masks(wrapped, ticket)
    T.set_masks(wrapped, control)  # the documented order: new masks first, then rewind
    T.restore(wrapped, theta0)
    now = T.snapshot(wrapped)
    for key, m in control.items():
        np.testing.assert_array_equal(now[key], theta0[key] * m)


@pytest.mark.parametrize("suffix", ["ckpt", "weights.h5"])
def test_save_load_weights_round_trips_masks(tmp_path, suffix):
    wrapped = T.wrap_for_masks(conv_model())
    masks = half_masks(wrapped)
    T.set_masks(wrapped, masks)
    fit(wrapped, True, epochs=1)
    path = str(tmp_path / f"model.{suffix}")
    wrapped.save_weights(path)
    other = T.wrap_for_masks(conv_model(seed=3))
    other.load_weights(path)
    for key, m in masks.items():
        np.testing.assert_array_equal(T.get_masks(other)[key], m)
    a, b = T.snapshot(wrapped), T.snapshot(other)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# 2:4 cross-check against TFMOT's own m-by-n helpers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, 8), (3, 3, 8, 4), (1, 1, 12, 6)])
def test_two_four_matches_tfmot(shape):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=shape).astype(np.float32)
    mask = M.compute_masks({"k/kernel": kernel}, None, fraction=0.5, pattern="2:4")["k/kernel"]
    assert pruning_utils.is_pruned_m_by_n(tf.constant(kernel * mask), (2, 4))
    assert not pruning_utils.is_pruned_m_by_n(tf.constant(kernel), (2, 4))
    k = tf.constant(kernel)
    theirs = pruning_utils.m_by_n_sparsity_mask_prepare(
        pruning_utils.generate_m_by_n_mask(pruning_utils.weights_rearrange(k), (2, 4)), k.shape
    ).numpy()
    np.testing.assert_array_equal(mask, theirs)


# ------------------------------------------------------------------------------------------
# Rejected models
# ------------------------------------------------------------------------------------------
class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.fc = keras.layers.Dense(4)

    def call(self, x):
        return self.fc(x)


def test_subclassed_model_rejected_with_reason():
    model = Subclassed()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ModelError, match=r"subclassed models are not supported by TFMOT.*Functional API"):
        T.wrap_for_masks(model)


def test_no_prunable_layer_rejected():
    model = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.DepthwiseConv2D(3), keras.layers.Flatten()])
    with pytest.raises(ModelError, match=r"at least one prunable layer.*received 'prunable layers \[\]"):
        T.wrap_for_masks(model)
    with pytest.raises(ModelError, match=r"prunable layers \['fc1', 'fc2', 'out'\] with exclude"):
        T.wrap_for_masks(dense_model(), exclude=["fc1", "fc2", "out"])
    with pytest.raises(ConfigError, match=r"exclude: expected layer names .*received \['nope'\]"):
        T.wrap_for_masks(dense_model(), exclude=["nope"])


def test_other_bad_models_rejected():
    with pytest.raises(ModelError, match="unbuilt"):
        T.wrap_for_masks(keras.Sequential([keras.layers.Dense(3)]))
    with pytest.raises(ModelError, match="strip"):
        T.wrap_for_masks(T.wrap_for_masks(dense_model()))
    with pytest.raises(ModelError, match="tf_keras Sequential or Functional"):
        T.wrap_for_masks("model.h5")
    with pytest.raises(ModelError, match="wrap_for_masks"):
        T.get_masks(dense_model())


class NoConfig(keras.layers.Layer):
    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x


def test_unclonable_model_rejected():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2, name="fc")(NoConfig(object(), name="scale")(inp)))
    with pytest.raises(ModelError, match="clone_model can rebuild"):
        T.wrap_for_masks(model)


def test_custom_prunable_layer_is_honoured():
    class Scale(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], 4), initializer="ones")

        def call(self, x):
            return x @ self.w

        def get_prunable_weights(self):
            return [self.w]

    inp = keras.Input((8,))
    model = keras.Model(inp, Scale(name="scale")(inp))
    assert T.prunable_weight_ids(model) == ["scale/w"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=False
    )


def test_keras3_model_rejected():
    proc = _run(
        """
        import edge_lottery
        from edge_lottery import tfmot_masks as T
        from edge_lottery.errors import ModelError
        import keras
        assert keras.__version__.startswith("3"), keras.__version__
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        try:
            T.wrap_for_masks(model)
        except ModelError as e:
            print("ERR", e)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ERR model: expected a tf_keras (Keras 2) model" in proc.stdout
    assert "TF_USE_LEGACY_KERAS=1" in proc.stdout and "Keras 3 Sequential" in proc.stdout


def test_mirrored_strategy_keeps_masks_fixed():
    proc = _run(
        """
        import edge_lottery
        import numpy as np, tensorflow as tf, tf_keras as keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from edge_lottery import masks as M, tfmot_masks as T
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        assert strategy.num_replicas_in_sync == 2
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inp = keras.Input((64,))
            x = keras.layers.Dense(32, activation="tanh", name="fc1")(inp)
            model = keras.Model(inp, keras.layers.Dense(10, name="out")(x))
            theta0 = T.snapshot(model)
            wrapped = T.wrap_for_masks(model)
            masks = M.compute_masks(T.get_prunable_weights(wrapped), None, fraction=0.6)
            T.set_masks(wrapped, masks)
            wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x, y = rng.random((64, 64), dtype=np.float32), rng.integers(0, 10, 64)
        before = T.get_prunable_weights(wrapped)
        wrapped.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=T.pruning_callbacks())
        after = T.get_prunable_weights(wrapped)
        for k, m in masks.items():
            assert np.array_equal(T.get_masks(wrapped)[k], m), k
            assert not after[k][m == 0].any(), k
            assert np.mean(after[k][m == 1] != before[k][m == 1]) > 0.9, k
            for replica_var in strategy.experimental_local_results(
                    [v for v in wrapped.weights if v.name == k + ":0"][0]):
                assert not replica_var.numpy()[m == 0].any(), (k, replica_var.device)
        with strategy.scope():
            T.restore(wrapped, theta0)
        for k, v in T.snapshot(wrapped).items():
            assert np.array_equal(v, theta0[k] * masks[k] if k in masks else theta0[k]), k
        print("OK", M.density(masks))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK ")
    assert float(proc.stdout.split()[1]) == pytest.approx(0.4, abs=1e-3)


def test_docs_example_runs():
    """The Python example of docs/pruning-patterns.md runs as written."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pruning-patterns.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "pruning-patterns.md", "exec"), namespace)
    assert M.layer_densities(T.get_masks(namespace["wrapped"])) == {"fc1/kernel": 0.796875}
    assert not T.is_wrapped(namespace["plain"])
