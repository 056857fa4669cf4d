"""Model registry: the lottery-ticket papers' networks and the MLPerf Tiny reference models.

Every model is a tf_keras (Keras 2) functional model, because TFMOT 0.8.1 only wraps Keras 2
layers. Four properties make the models usable for iterative magnitude pruning with rewinding:

* **stable layer names** (``fc1``, ``conv1``, ``output``, ...) so masks, pruning policies and
  records refer to layers by name across rebuilds;
* **seeded initializers**: each layer's initializer (and dropout) gets a seed derived from
  ``(seed, layer name)``, so the same seed gives bit-identical initial weights and adding a
  layer does not shift the others' seeds;
* **batch norm that keeps up**: momentum :data:`BN_MOMENTUM` (0.9, as in PyTorch and OpenLTH),
  not Keras's 0.99, so short training runs evaluate as they train;
* **logits out**: classifiers end in a linear ``Dense`` named ``output`` (no softmax); compile
  them with ``SparseCategoricalCrossentropy(from_logits=True)``. ``fc_autoencoder`` outputs the
  flattened reconstruction of its input (loss: MSE against ``x.reshape(len(x), -1)``).

Each model also carries the :class:`TrainingDefaults` its paper or reference script uses, with
the citation in ``source``. TensorFlow is imported inside functions so that importing this
module (for the registry, the CLI's ``--help`` or docs) stays cheap.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edge_lottery import _tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS before any TF import)
from edge_lottery.config import LRSchedule
from edge_lottery.errors import ModelError, expected

# Batch-norm moving-average momentum: PyTorch's default (0.1 there, 1 - 0.9 here), which OpenLTH's
# models use, instead of Keras's 0.99. With 0.99 the moving statistics trail the weights by ~100
# steps, so a model trained for a few epochs (as short searches do) evaluates at chance.
BN_MOMENTUM = 0.9

MODELS: tuple[str, ...] = (
    "lenet_300_100",
    "lenet5",
    "conv2",
    "conv4",
    "conv6",
    "resnet8",
    "ds_cnn",
    "mobilenet_v1_025",
    "fc_autoencoder",
)


@dataclass(frozen=True)
class TrainingDefaults:
    """The published training settings of an architecture (what its paper / reference used).

    ``weight_decay`` is the coefficient of a Keras ``l2`` kernel regularizer (loss +=
    wd * sum(w**2)); pass it to :func:`build_model` to attach it. Training length is given in
    ``iterations`` (optimizer steps, as the LTH papers do) or ``epochs``; see
    :meth:`total_steps`. ``lr_schedule`` is the schedule the source applies on top of
    ``learning_rate`` (the initial rate), as an :class:`edge_lottery.config.LRSchedule` in the
    source's units with its description in words; a search trains with it unless told otherwise.
    """

    optimizer: str  # "adam" | "sgd"
    learning_rate: float
    momentum: float = 0.0
    batch_size: int = 60
    iterations: int | None = None
    epochs: int | None = None
    weight_decay: float = 0.0
    prune_fraction_dense: float = 0.2  # per IMP level, of the remaining weights
    prune_fraction_conv: float = 0.1
    prune_fraction_output: float = 0.1  # output layer rate (LTH: half of the hidden rate)
    source: str = ""
    lr_schedule: LRSchedule = LRSchedule(description="constant")

    def total_steps(self, train_size: int) -> int:
        """Training length in optimizer steps for a training set of ``train_size`` examples."""
        if self.iterations is not None:
            return int(self.iterations)
        if self.epochs is None:
            raise ModelError("training defaults give neither iterations nor epochs")
        return int(self.epochs) * math.ceil(int(train_size) / int(self.batch_size))


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: what it is, how its paper trained it, which layers are special."""

    name: str
    description: str
    task: str  # "classification" | "reconstruction"
    defaults: TrainingDefaults
    output_layer: str  # final layer; papers prune it at its own rate or keep it dense
    first_layer: str  # first prunable layer
    loss: str = "sparse_categorical_crossentropy"  # always from logits for classification
    reference_input_shape: tuple[int, ...] = ()  # the input the source trained on
    reference_dataset: str = ""
    adaptations: str = ""  # what build_model changes from the source (small inputs, batch norm)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description for records."""
        d = asdict(self)
        d["reference_input_shape"] = list(self.reference_input_shape)
        return d


# --------------------------------------------------------------------------------------------
# Published defaults

_LTH = "Frankle & Carbin, The Lottery Ticket Hypothesis, ICLR 2019 (arXiv 1803.03635), Fig. 2 / App."
_LTH_RATES = "IMP rates follow the LTH convention (conv 10 %, FC 20 %, output 10 % per level)"
_TINY = "mlcommons/tiny benchmark/training"

_SPECS: dict[str, ModelSpec] = {
    "lenet_300_100": ModelSpec(
        name="lenet_300_100",
        description="LeNet-300-100: Flatten, Dense 300 ReLU, Dense 100 ReLU, Dense logits (Glorot normal)",
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=1.2e-3, batch_size=60, iterations=50_000,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=f"{_LTH}: Adam 1.2e-3, batch 60, 50K iterations, FC 20 %, output 10 % per round",
        ),
        output_layer="output", first_layer="fc1",
        reference_input_shape=(28, 28, 1), reference_dataset="mnist",
    ),
    "lenet5": ModelSpec(
        name="lenet5",
        description=(
            "LeNet-5, Caffe variant used by Han et al. 2015: conv 20 5x5, maxpool, conv 50 5x5, maxpool, "
            "Dense 500 ReLU, Dense logits (no ReLU after the convolutions, as in Caffe's lenet)"
        ),
        task="classification",
        defaults=TrainingDefaults(
            optimizer="sgd", learning_rate=0.01, momentum=0.9, batch_size=64, iterations=10_000,
            weight_decay=2.5e-4,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=(
                "Han, Pool, Tran & Dally, NeurIPS 2015 trained Caffe's examples/mnist lenet_solver.prototxt: "
                "SGD lr 0.01, momentum 0.9, weight_decay 5e-4 (Caffe; = Keras l2 2.5e-4), batch 64, "
                f"10K iterations; {_LTH_RATES} because Han et al. prune by a per-layer threshold"
            ),
            lr_schedule=LRSchedule(kind="inv", unit="step", gamma=1e-4, power=0.75,
                                   description="Caffe 'inv': lr = 0.01 * (1 + 1e-4 * step) ** -0.75"),
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(28, 28, 1), reference_dataset="mnist",
        adaptations="a 5x5 convolution on a feature map smaller than 5x5 uses padding 'same'; "
        "pooling is skipped on a 1-pixel map",
    ),
    "conv2": ModelSpec(
        name="conv2",
        description="Conv-2: conv 64, 64 (3x3 same, ReLU), maxpool, Dense 256, 256, logits (Glorot normal)",
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=2e-4, batch_size=60, iterations=20_000,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=f"{_LTH}: Adam 2e-4, batch 60, 20K iterations, conv 10 %, FC 20 %, output 10 % per round",
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(32, 32, 3), reference_dataset="CIFAR-10",
        adaptations="max pooling is skipped on a 1-pixel feature map",
    ),
    "conv4": ModelSpec(
        name="conv4",
        description="Conv-4: conv 64, 64, pool, 128, 128, pool (3x3 same, ReLU), Dense 256, 256, logits",
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=3e-4, batch_size=60, iterations=25_000,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=f"{_LTH}: Adam 3e-4, batch 60, 25K iterations, conv 10 %, FC 20 %, output 10 % per round",
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(32, 32, 3), reference_dataset="CIFAR-10",
        adaptations="max pooling is skipped on a 1-pixel feature map",
    ),
    "conv6": ModelSpec(
        name="conv6",
        description="Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool (3x3 same, ReLU), Dense 256, 256, logits",
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=3e-4, batch_size=60, iterations=30_000,
            prune_fraction_dense=0.2, prune_fraction_conv=0.15, prune_fraction_output=0.1,
            source=f"{_LTH}: Adam 3e-4, batch 60, 30K iterations, conv 15 %, FC 20 %, output 10 % per round",
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(32, 32, 3), reference_dataset="CIFAR-10",
        adaptations="max pooling is skipped on a 1-pixel feature map",
    ),
    "resnet8": ModelSpec(
        name="resnet8",
        description=(
            "ResNet-8 (MLPerf Tiny image classification): conv 16 + BN, 3 residual stacks of 16/32/64 filters "
            "(strides 1/2/2, 1x1 projection shortcuts), average pool, Dense logits (He normal)"
        ),
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=500, weight_decay=1e-4,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=(
                f"{_TINY}/image_classification/train.py and keras_model.py (v0.5-v1.x reference, 16 filters): "
                f"Adam 1e-3 decayed x0.99 per epoch, batch 32, 500 epochs, l2 1e-4, augmentation; {_LTH_RATES}"
            ),
            lr_schedule=LRSchedule(kind="exponential", unit="epoch", gamma=0.99, decay_every=1,
                                   description="lr = 1e-3 * 0.99 ** epoch (Keras LearningRateScheduler)"),
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(32, 32, 3), reference_dataset="CIFAR-10",
        adaptations="padding 'same' keeps every map >= 1x1; the final pool covers the whole map; "
        "batch-norm momentum 0.9, not the Keras default 0.99 of the reference (see BN_MOMENTUM)",
    ),
    "ds_cnn": ModelSpec(
        name="ds_cnn",
        description=(
            "DS-CNN small (MLPerf Tiny keyword spotting): conv 64 10x4 stride 2 + BN, dropout 0.2, "
            "4 depthwise-separable blocks of 64 (BN, ReLU), dropout 0.4, average pool, Dense logits"
        ),
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=5e-4, batch_size=100, epochs=36, weight_decay=1e-4,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=(
                f"{_TINY}/keyword_spotting/keras_model.py and kws_util.py: Adam, step schedule "
                f"5e-4 / 1e-4 / 2e-5 (epochs 0-11 / 12-23 / 24-35), batch 100, 36 epochs, l2 1e-4; {_LTH_RATES}"
            ),
            lr_schedule=LRSchedule(kind="step", unit="epoch", milestones=(12, 24), gamma=0.2,
                                   description="5e-4 for epochs 0-11, 1e-4 for 12-23, 2e-5 for 24-35"),
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(49, 10, 1), reference_dataset="Speech Commands v2 (MFCC 49x10)",
        adaptations="padding 'same'; the final pool covers the whole map; "
        "batch-norm momentum 0.9, not the Keras default 0.99 of the reference (see BN_MOMENTUM)",
    ),
    "mobilenet_v1_025": ModelSpec(
        name="mobilenet_v1_025",
        description=(
            "MobileNetV1 alpha 0.25 (MLPerf Tiny visual wake words): conv 8 3x3 stride 2, 13 depthwise-separable "
            "blocks (16..256 filters), BN + ReLU everywhere, average pool, Dense logits"
        ),
        task="classification",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=1e-3, batch_size=32, epochs=50, weight_decay=1e-4,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=(
                f"{_TINY}/visual_wake_words/train_vww.py and vww_model.py: Adam 1e-3 for 20 epochs, 5e-4 for 10, "
                f"2.5e-4 for 20 (50 epochs), batch 32, l2 1e-4, 96x96x3 input; {_LTH_RATES}"
            ),
            lr_schedule=LRSchedule(kind="step", unit="epoch", milestones=(20, 30), gamma=0.5,
                                   description="1e-3 for epochs 0-19, 5e-4 for 20-29, 2.5e-4 for 30-49"),
        ),
        output_layer="output", first_layer="conv1",
        reference_input_shape=(96, 96, 3), reference_dataset="Visual Wake Words (COCO person, 96x96)",
        adaptations="padding 'same' keeps every map >= 1x1; the final pool covers the whole map; "
        "batch-norm momentum 0.9, not the Keras default 0.99 of the reference (see BN_MOMENTUM)",
    ),
    "fc_autoencoder": ModelSpec(
        name="fc_autoencoder",
        description=(
            "Dense autoencoder (MLPerf Tiny anomaly detection): Flatten, 4x Dense 128 + BN + ReLU, "
            "Dense 8 bottleneck + BN + ReLU, 4x Dense 128 + BN + ReLU, Dense to the flattened input size"
        ),
        task="reconstruction",
        defaults=TrainingDefaults(
            optimizer="adam", learning_rate=1e-3, batch_size=512, epochs=100,
            prune_fraction_dense=0.2, prune_fraction_conv=0.1, prune_fraction_output=0.1,
            source=(
                f"{_TINY}/anomaly_detection/baseline.yaml and keras_model.py: Adam (Keras default lr 1e-3), "
                f"MSE, batch 512, 100 epochs, input 640 (128 mels x 5 frames); {_LTH_RATES}"
            ),
        ),
        output_layer="output", first_layer="enc1",
        loss="mean_squared_error",
        reference_input_shape=(640,), reference_dataset="ToyADMOS / DCASE 2020 task 2 (log-mel, 640)",
        adaptations="any input is flattened; num_classes is ignored (the output size is the input size); "
        "batch-norm momentum 0.9, not the Keras default 0.99 of the reference (see BN_MOMENTUM)",
    ),
}

assert tuple(_SPECS) == MODELS


def get_model_spec(name: str) -> ModelSpec:
    """The registered :class:`ModelSpec` of ``name``; :class:`ModelError` lists the valid names."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ModelError(expected("unknown model", f"one of {', '.join(MODELS)}", name))
    return spec


# --------------------------------------------------------------------------------------------
# Building


def layer_seed(seed: int, layer_name: str) -> int:
    """Seed of one layer's initializer: a stable hash of (seed, layer name), in [0, 2**31)."""
    digest = hashlib.sha256(f"{int(seed)}/{layer_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    seed: int = 0,
    weight_decay: float = 0.0,
) -> Any:
    """Build registered model ``name`` (a fresh, seeded ``tf_keras.Model`` that outputs logits).

    ``weight_decay`` > 0 attaches an ``l2(weight_decay)`` regularizer to every kernel (pass
    ``get_model_spec(name).defaults.weight_decay`` to train as the source did). The model is
    not compiled.
    """
    get_model_spec(name)  # validates the name
    shape = _check_input_shape(name, input_shape)
    if name != "fc_autoencoder":
        try:
            classes = operator.index(num_classes) if not isinstance(num_classes, bool) else 0
        except TypeError:
            classes = 0
        if classes < 1:
            raise ModelError(expected(f"num_classes for {name}", "an integer >= 1", num_classes))
        num_classes = classes
    try:
        wd = float(weight_decay) if not isinstance(weight_decay, bool | str) else -1.0
    except (TypeError, ValueError):
        wd = -1.0
    if not wd >= 0 or math.isinf(wd):  # also rejects NaN
        raise ModelError(expected("weight_decay", "a finite float >= 0", weight_decay))
    try:
        seed_int = operator.index(seed)
    except TypeError:
        raise ModelError(expected("seed", "an integer", seed)) from None
    import tf_keras  # lazy: TensorFlow loads only when a model is built

    b = _Builder(tf_keras, seed_int, wd)
    inputs = tf_keras.Input(shape=shape, name="input")
    outputs = _BUILDERS[name](b, inputs, num_classes)
    return tf_keras.Model(inputs=inputs, outputs=outputs, name=name)


def check_keras2_model(model: Any) -> None:
    """Raise :class:`ModelError` unless ``model`` is a tf_keras (Keras 2) model, as TFMOT needs."""
    import tf_keras

    if isinstance(model, tf_keras.Model):
        return
    cls = type(model)
    module = cls.__module__ or ""
    qualname = f"{module}.{cls.__qualname__}"
    if module == "keras" or module.startswith("keras."):
        try:
            import keras

            version = f"Keras {keras.__version__}"
        except Exception:  # pragma: no cover - keras vanished between calls
            version = "Keras 3"
        raise ModelError(
            f"expected a tf_keras (Keras 2) model, received a {version} model ({qualname}): TFMOT 0.8.1 "
            "only prunes Keras 2 models; build it with `import tf_keras as keras` (or set "
            "TF_USE_LEGACY_KERAS=1 and import edge_lottery before tensorflow so tf.keras is Keras 2)"
        )
    raise ModelError(
        f"expected a tf_keras (Keras 2) Model, received {qualname}: build the model with "
        "`import tf_keras as keras` (TF_USE_LEGACY_KERAS=1)"
    )


def _check_input_shape(name: str, input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
        ok = len(shape) >= 1 and all(d >= 1 for d in shape) and all(
            float(a) == float(b) for a, b in zip(shape, input_shape, strict=True)
        )
    except (TypeError, ValueError):
        ok, shape = False, ()
    needs_image = name not in ("lenet_300_100", "fc_autoencoder")
    if not ok or (needs_image and len(shape) != 3):
        want = "(H, W, C) with positive sizes" if needs_image else "a tuple of positive sizes"
        raise ModelError(expected(f"input_shape for {name}", want, input_shape))
    return shape


class _Builder:
    """Creates named layers with seeded initializers (one place for naming and seeding)."""

    def __init__(self, keras: Any, seed: int, weight_decay: float) -> None:
        self.k = keras
        self.seed = seed
        self.weight_decay = weight_decay

    def _init(self, kind: str, name: str) -> Any:
        cls = {
            "glorot_normal": self.k.initializers.GlorotNormal,
            "glorot_uniform": self.k.initializers.GlorotUniform,
            "he_normal": self.k.initializers.HeNormal,
        }[kind]
        return cls(seed=layer_seed(self.seed, name))

    def _reg(self) -> Any:
        return self.k.regularizers.L2(self.weight_decay) if self.weight_decay > 0 else None

    def dense(self, units: int, name: str, init: str, activation: str | None = None) -> Any:
        return self.k.layers.Dense(
            units, activation=activation, kernel_initializer=self._init(init, name),
            kernel_regularizer=self._reg(), name=name,
        )

    def conv(self, x: Any, filters: int, kernel: tuple[int, int], name: str, init: str, *,
             strides: int | tuple[int, int] = 1, padding: str = "same", activation: str | None = None) -> Any:
        return self.k.layers.Conv2D(
            filters, kernel, strides=strides, padding=padding, activation=activation,
            kernel_initializer=self._init(init, name), kernel_regularizer=self._reg(), name=name,
        )(x)

    def depthwise(self, x: Any, name: str, *, strides: int = 1) -> Any:
        """3x3 depthwise conv. The MLPerf Tiny references pass ``kernel_initializer`` and
        ``kernel_regularizer`` to DepthwiseConv2D, which ignores both; so, as in their trained
        models, the depthwise kernel is Glorot-uniform initialised and not weight-decayed."""
        return self.k.layers.DepthwiseConv2D(
            (3, 3), strides=strides, padding="same",
            depthwise_initializer=self._init("glorot_uniform", name), name=name,
        )(x)

    def bn(self, x: Any, name: str) -> Any:
        return self.k.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)

    def bn_relu(self, x: Any, prefix: str, suffix: str = "") -> Any:
        x = self.bn(x, f"{prefix}bn{suffix}")
        return self.k.layers.ReLU(name=f"{prefix}relu{suffix}")(x)

    def dropout(self, x: Any, rate: float, name: str) -> Any:
        return self.k.layers.Dropout(rate, seed=layer_seed(self.seed, name), name=name)(x)

    def maxpool(self, x: Any, name: str) -> Any:
        """2x2 max pooling, skipped (not built) where the map is already 1 pixel high or wide."""
        h, w = int(x.shape[1]), int(x.shape[2])
        if min(h, w) < 2:
            return x
        return self.k.layers.MaxPooling2D((2, 2), name=name)(x)

    def global_avgpool_flatten(self, x: Any) -> Any:
        """AveragePooling2D over the whole map + Flatten, as the MLPerf Tiny references do."""
        h, w = int(x.shape[1]), int(x.shape[2])
        x = self.k.layers.AveragePooling2D(pool_size=(h, w), name="pool")(x)
        return self.k.layers.Flatten(name="flatten")(x)


def _lenet_300_100(b: _Builder, x: Any, num_classes: int) -> Any:
    x = b.k.layers.Flatten(name="flatten")(x)
    x = b.dense(300, "fc1", "glorot_normal", "relu")(x)
    x = b.dense(100, "fc2", "glorot_normal", "relu")(x)
    return b.dense(num_classes, "output", "glorot_normal")(x)


def _lenet5(b: _Builder, x: Any, num_classes: int) -> Any:
    for i, filters in ((1, 20), (2, 50)):
        # Caffe's LeNet uses 'valid' 5x5 convolutions; on maps smaller than the kernel use 'same'.
        padding = "valid" if min(int(x.shape[1]), int(x.shape[2])) >= 5 else "same"
        x = b.conv(x, filters, (5, 5), f"conv{i}", "glorot_uniform", padding=padding)
        x = b.maxpool(x, f"pool{i}")
    x = b.k.layers.Flatten(name="flatten")(x)
    x = b.dense(500, "fc1", "glorot_uniform", "relu")(x)
    return b.dense(num_classes, "output", "glorot_uniform")(x)


def _conv_n(blocks: tuple[int, ...]) -> Callable[[_Builder, Any, int], Any]:
    def build(b: _Builder, x: Any, num_classes: int) -> Any:
        n = 0
        for i, filters in enumerate(blocks, start=1):
            for _ in range(2):
                n += 1
                x = b.conv(x, filters, (3, 3), f"conv{n}", "glorot_normal", activation="relu")
            x = b.maxpool(x, f"pool{i}")
        x = b.k.layers.Flatten(name="flatten")(x)
        x = b.dense(256, "fc1", "glorot_normal", "relu")(x)
        x = b.dense(256, "fc2", "glorot_normal", "relu")(x)
        return b.dense(num_classes, "output", "glorot_normal")(x)

    return build


def _resnet8(b: _Builder, x: Any, num_classes: int) -> Any:
    x = b.conv(x, 16, (3, 3), "conv1", "he_normal")
    x = b.bn_relu(x, "", "1")
    for stack, (filters, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
        p = f"stack{stack}_"
        y = b.conv(x, filters, (3, 3), f"{p}conv1", "he_normal", strides=stride)
        y = b.bn_relu(y, p, "1")
        y = b.conv(y, filters, (3, 3), f"{p}conv2", "he_normal")
        y = b.bn(y, f"{p}bn2")
        if stride != 1 or int(x.shape[-1]) != filters:
            x = b.conv(x, filters, (1, 1), f"{p}shortcut", "he_normal", strides=stride)
        x = b.k.layers.Add(name=f"{p}add")([x, y])
        x = b.k.layers.ReLU(name=f"{p}relu")(x)
    x = b.global_avgpool_flatten(x)
    return b.dense(num_classes, "output", "he_normal")(x)


def _separable(b: _Builder, x: Any, filters: int, prefix: str, init: str, stride: int = 1) -> Any:
    x = b.depthwise(x, f"{prefix}depthwise", strides=stride)
    x = b.bn_relu(x, prefix, "1")
    x = b.conv(x, filters, (1, 1), f"{prefix}pointwise", init)
    return b.bn_relu(x, prefix, "2")


def _ds_cnn(b: _Builder, x: Any, num_classes: int) -> Any:
    x = b.conv(x, 64, (10, 4), "conv1", "glorot_uniform", strides=2)
    x = b.bn_relu(x, "", "1")
    x = b.dropout(x, 0.2, "dropout1")
    for i in range(1, 5):
        x = _separable(b, x, 64, f"ds{i}_", "glorot_uniform")
    x = b.dropout(x, 0.4, "dropout2")
    x = b.global_avgpool_flatten(x)
    return b.dense(num_classes, "output", "glorot_uniform")(x)


# (filters, stride) of MobileNetV1's 13 depthwise-separable blocks at alpha 0.25.
_MOBILENET_025 = (
    (16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2),
    (128, 1), (128, 1), (128, 1), (128, 1), (128, 1), (256, 2), (256, 1),
)


def _mobilenet_v1_025(b: _Builder, x: Any, num_classes: int) -> Any:
    x = b.conv(x, 8, (3, 3), "conv1", "he_normal", strides=2)
    x = b.bn_relu(x, "", "1")
    for i, (filters, stride) in enumerate(_MOBILENET_025, start=1):
        x = _separable(b, x, filters, f"ds{i}_", "he_normal", stride)
    x = b.global_avgpool_flatten(x)
    return b.dense(num_classes, "output", "he_normal")(x)


def _fc_autoencoder(b: _Builder, x: Any, num_classes: int) -> Any:
    del num_classes  # the output reconstructs the input
    size = int(math.prod(int(d) for d in x.shape[1:]))
    x = b.k.layers.Flatten(name="flatten")(x)
    names = [f"enc{i}" for i in range(1, 5)] + ["bottleneck"] + [f"dec{i}" for i in range(1, 5)]
    for layer_name in names:
        units = 8 if layer_name == "bottleneck" else 128
        x = b.dense(units, layer_name, "glorot_uniform")(x)
        x = b.bn_relu(x, f"{layer_name}_")
    return b.dense(size, "output", "glorot_uniform")(x)


_BUILDERS: dict[str, Callable[[_Builder, Any, int], Any]] = {
    "lenet_300_100": _lenet_300_100,
    "lenet5": _lenet5,
    "conv2": _conv_n((64,)),
    "conv4": _conv_n((64, 128)),
    "conv6": _conv_n((64, 128, 256)),
    "resnet8": _resnet8,
    "ds_cnn": _ds_cnn,
    "mobilenet_v1_025": _mobilenet_v1_025,
    "fc_autoencoder": _fc_autoencoder,
}

assert tuple(_BUILDERS) == MODELS
