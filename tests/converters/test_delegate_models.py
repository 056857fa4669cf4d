"""Tiny pruned models for the sparse delegate and sparse-tensor tests (builders only; this module holds no tests).

Models are built with tf_keras, pruned to a pattern by magnitude, and converted with the real
TFLite converter (float32, or int8 full-integer with representative data; optionally with
EXPERIMENTAL_SPARSITY so the weights arrive sparse-encoded / behind DENSIFY). Conversions are the
slow part, so every builder is cached per session by its arguments.
"""

from __future__ import annotations

import functools

import numpy as np

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)


def prune(w: np.ndarray, sparsity: float, pattern: str, rng: np.random.Generator) -> np.ndarray:
    """Zero ``sparsity`` of a kernel by magnitude. ``w`` is TFLite-oriented [out, in] (or [out, k])."""
    w = w.copy()
    out, k = w.shape
    if pattern == "unstructured":
        bh, bw = 1, 1
    else:
        bh, bw = (int(v) for v in pattern.split("x"))  # rows (outputs) x columns (inputs)
    nbh, nbw = -(-out // bh), -(-k // bw)
    pad = np.zeros((nbh * bh, nbw * bw), w.dtype)
    pad[:out, :k] = w
    blocks = np.abs(pad.reshape(nbh, bh, nbw, bw)).sum(axis=(1, 3))
    blocks += rng.random(blocks.shape) * 1e-6
    nzero = int(round(sparsity * blocks.size))
    if nzero:
        thr = np.sort(blocks.ravel())[nzero - 1]
        mask = np.repeat(np.repeat(blocks > thr, bh, axis=0), bw, axis=1)[:out, :k]
        w = w * mask
    return w


def _convert(model, dtype: str, rep_range: tuple[float, float], sparse_format: bool, in_shape, seed: int,
             per_tensor: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if per_tensor:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    opts = []
    if dtype == "int8":
        opts.append(tf.lite.Optimize.DEFAULT)
        rng = np.random.default_rng(seed)
        lo, hi = rep_range

        def rep():
            for _ in range(16):
                yield [rng.uniform(lo, hi, (1, *in_shape)).astype(np.float32)]

        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    if sparse_format:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    conv.optimizations = opts
    return conv.convert()


@functools.cache
def mlp(
    sizes: tuple[int, ...],
    sparsity: float,
    pattern: str,
    dtype: str,
    activation: str = "relu",
    sparse_format: bool = False,
    rep_range: tuple[float, float] = (-1.0, 1.0),
    use_bias: bool = True,
    per_tensor: bool = False,
    image: tuple[int, ...] | None = None,
    seed: int = 0,
    dense_layers: tuple[int, ...] = (),
) -> bytes:
    """An MLP sizes[0] -> ... -> sizes[-1]; every Dense kernel pruned to ``pattern`` at ``sparsity``
    except the Dense layers numbered in ``dense_layers`` (0 = first), which stay dense.

    With ``image`` the input has that shape and is flattened first (a RESHAPE in the TFLite model).
    """
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    if activation == "relu_n1_to_1":
        activation = lambda t: tf.clip_by_value(t, -1.0, 1.0)  # noqa: E731  (fused as RELU_N1_TO_1)
    inp = keras.Input(image if image else (sizes[0],), batch_size=None)
    x = keras.layers.Flatten()(inp) if image else inp
    for i, n in enumerate(sizes[1:]):
        act = activation if i < len(sizes) - 2 else None
        x = keras.layers.Dense(n, activation=act, use_bias=use_bias)(x)
    model = keras.Model(inp, x)
    for i, layer in enumerate(ly for ly in model.layers if isinstance(ly, keras.layers.Dense)):
        ws = layer.get_weights()
        if i not in dense_layers:
            ws[0] = prune(ws[0].T, sparsity, pattern, rng).T
        if use_bias:
            ws[1] = rng.normal(0, 0.1, ws[1].shape).astype(np.float32)
        layer.set_weights(ws)
    return _convert(model, dtype, rep_range, sparse_format, image or (sizes[0],), seed, per_tensor)


@functools.cache
def convnet(
    hw: int,
    cin: int,
    convs: tuple[tuple[int, int, int, str], ...],
    sparsity: float,
    pattern: str,
    dtype: str,
    activation: str = "relu6",
    sparse_format: bool = False,
    rep_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> bytes:
    """Conv2D stack; each conv is (filters, kernel, stride, padding), kernels pruned over [out, kh*kw*in]."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((hw, hw, cin))
    x = inp
    for filters, kernel, stride, padding in convs:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, activation=activation)(x)
    model = keras.Model(inp, x)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k, b = layer.get_weights()
            kh, kw, ci, co = k.shape
            flat = np.transpose(k, (3, 0, 1, 2)).reshape(co, kh * kw * ci)
            flat = prune(flat, sparsity, pattern, rng)
            k = np.transpose(flat.reshape(co, kh, kw, ci), (1, 2, 3, 0))
            layer.set_weights([k, rng.normal(0, 0.1, b.shape).astype(np.float32)])
    return _convert(model, dtype, rep_range, sparse_format, (hw, hw, cin), seed)


@functools.cache
def pointwise_pair(hw: int, cin: int, mid: int, out: int, sparsity: float, pattern: str = "16x4",
                   first_sparsity: float | None = None, seed: int = 0) -> bytes:
    """int8 1x1 conv (cin -> mid), 3x3 depthwise conv, 1x1 conv (mid -> out), both 1x1 kernels
    pruned to ``pattern`` (the first to ``first_sparsity`` if given): a MobileNet block, whose
    depthwise conv the delegate leaves to XNNPACK."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    inp = keras.Input((hw, hw, cin))
    x = keras.layers.Conv2D(mid, 1, activation="relu6")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    model = keras.Model(inp, keras.layers.Conv2D(out, 1, activation="relu6")(x))
    pointwise = [ly for ly in model.layers
                 if isinstance(ly, keras.layers.Conv2D) and not isinstance(ly, keras.layers.DepthwiseConv2D)]
    for i, layer in enumerate(pointwise):
        k, b = layer.get_weights()
        share = first_sparsity if i == 0 and first_sparsity is not None else sparsity
        k[0, 0] = prune(k[0, 0].T, share, pattern, rng).T
        layer.set_weights([k, rng.normal(0, 0.1, b.shape).astype(np.float32)])
    return _convert(model, "int8", (0.0, 1.0), False, (hw, hw, cin), seed)


def trailing_block_mlp(in_f: int, block: int):
    """An in_f -> 24 -> 10 MLP (tf_keras, not converted) whose first kernel has 1xblock sparsity and
    non-zeros in the trailing partial block of every other output, and inputs for it: what the
    project's sparse-tensor writer must keep whole (the converter drops those columns)."""
    import tf_keras as keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.layers.Input((in_f,)), keras.layers.Dense(24, activation="relu"),
                              keras.layers.Dense(10)])
    k, b = model.layers[0].get_weights()
    rng = np.random.default_rng(0)
    mask = np.zeros_like(k)
    full = in_f // block
    for o in range(k.shape[1]):
        for j in range(full):
            if rng.random() < 0.2:
                mask[j * block:(j + 1) * block, o] = 1
        if o % 2 == 0:
            mask[full * block:, o] = 1
    k = k * mask
    k[full * block:, ::2] *= 4  # make the trailing columns matter
    model.layers[0].set_weights([k, b])
    x = np.random.default_rng(2).random((24, in_f)).astype(np.float32)
    return model, x


def op_names(model: bytes) -> list[str]:
    """Builtin operator names of the model's main subgraph, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    return [d["op_name"] for d in it._get_ops_details()]
