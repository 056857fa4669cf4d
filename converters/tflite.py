"""Keras -> TFLite flatbuffer for every quantization mode, optionally with sparse weights.

The conversion itself is the stock ``tf.lite.TFLiteConverter``; this module only chooses its
settings (:class:`~converters.quantize.PostTrainingQuantization`), checks the representative
data against the model before calibration (a shape mistake otherwise surfaces as a long MLIR
trace), and, for ``sparse="project"``, re-encodes FULLY_CONNECTED weights in TFLite's sparse
tensor format with the project's own encoder (:mod:`converters.sparse_tensor`), because the
converter's ``EXPERIMENTAL_SPARSITY`` drops trailing input columns for 1x16 / 1x4 blocks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from converters import ConverterError
from converters.quantize import QUANTIZE_MODES, PostTrainingQuantization
from edge_lottery.errors import expected

SPARSE_MODES: tuple[str, ...] = ("none", "project", "converter")


def is_quantization_aware(model: Any) -> bool:
    """True for a model returned by a QAT recipe (it holds TFMOT ``QuantizeWrapper`` layers)."""
    return any(type(layer).__name__.startswith("QuantizeWrapper") for layer in getattr(model, "layers", []))


def check_representative(model: Any, representative: Any) -> np.ndarray:
    """The representative inputs as float32 ``[n, *input_shape]``, or a one-line ConverterError."""
    input_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else tuple(model.input_shape[1:])
    want = tuple(int(d) if d is not None else None for d in input_shape)
    if not isinstance(representative, np.ndarray):
        raise ConverterError(expected("representative data", "a numpy array", type(representative).__name__))
    got = tuple(int(d) for d in representative.shape[1:])
    if representative.ndim != len(want) + 1 or any(w is not None and w != g for w, g in zip(want, got, strict=False)):
        raise ConverterError(
            expected("representative data shape", f"[n, {', '.join(str(w) for w in want)}] (the model input)",
                     list(representative.shape))
        )
    if representative.dtype not in (np.float32, np.float64):
        raise ConverterError(expected("representative data dtype", "float32", str(representative.dtype)))
    if len(representative) == 0:
        raise ConverterError(expected("representative data", "at least one row", 0))
    return np.asarray(representative, dtype=np.float32)


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    # The MLIR converter writes pages of progress to fd 2; keep the CLI readable.
    if os.environ.get("EDGE_LOTTERY_VERBOSE"):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def convert(
    model: Any,
    quantization: PostTrainingQuantization | str = "float32",
    representative: np.ndarray | None = None,
    *,
    sparse: str = "none",
) -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer.

    ``quantization`` is a mode name or a :class:`PostTrainingQuantization`. ``int8`` and
    ``int16x8`` need ``representative`` inputs (float32, the model's input shape) unless the model
    is quantization-aware (PQAT / PCQAT), whose ranges were learnt. ``sparse``: ``"none"``,
    ``"project"`` (own sparse encoder, runs on LiteRT without default delegates) or
    ``"converter"`` (``Optimize.EXPERIMENTAL_SPARSITY``; kept to show its trailing-column bug).
    """
    import tensorflow as tf
    import tf_keras

    if isinstance(quantization, str):
        quantization = PostTrainingQuantization(mode=quantization)
    if not isinstance(quantization, PostTrainingQuantization):
        raise ConverterError(expected("quantization", f"one of {', '.join(QUANTIZE_MODES)}", quantization))
    if sparse not in SPARSE_MODES:
        raise ConverterError(expected("sparse mode", f"one of {', '.join(SPARSE_MODES)}", sparse))
    if not isinstance(model, tf_keras.Model):
        raise ConverterError(expected("model type", "a tf_keras (Keras 2) Model", type(model).__name__))
    qat = is_quantization_aware(model)
    mode = quantization.mode
    rep = None
    if representative is not None:
        rep = check_representative(model, representative)[: quantization.num_samples]
    elif quantization.needs_representative and not qat:
        raise ConverterError(
            expected(f"representative data for --quantize {mode}", "an array of model inputs", None)
        )
    if qat and mode not in ("int8", "dynamic"):
        raise ConverterError(expected("quantize mode of a quantization-aware model", "int8 or dynamic", mode))

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations: list[Any] = []
    if mode != "float32" or qat:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse == "converter":
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8"):
        if rep is not None:
            def gen() -> Iterator[list[np.ndarray]]:
                for row in rep:
                    yield [row[None, ...]]

            converter.representative_dataset = gen
        if mode == "int8":
            if rep is not None or not qat:  # a QAT model carries its ranges; the INT8-only op set
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # wants data
            io_type = tf.int8
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            io_type = tf.int16
        if quantization.io == "int8":
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    try:
        with _quiet_fd2():
            flat = bytes(converter.convert())
    except ConverterError:
        raise
    except Exception as exc:  # the converter raises many types; name the mode and the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConverterError(f"TFLite conversion ({mode}) failed: {first[:300]}") from exc
    if sparse == "project":
        from converters.sparse_tensor import sparsify_model

        flat = sparsify_model(flat)
    return flat


def run_litert(model_bytes: bytes, inputs: np.ndarray, *, default_delegates: bool = False) -> np.ndarray:
    """Run a TFLite model on LiteRT one row at a time; inputs are quantized if the model is integer.

    ``default_delegates=False`` uses ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: sparse int8 FC fails
    under the default XNNPACK delegate in ai-edge-litert 2.3.0.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if default_delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_content=bytes(model_bytes), experimental_op_resolver_type=kind)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ConverterError(f"LiteRT cannot load the model: {str(exc).strip().splitlines()[0]}") from exc
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    rows = []
    for row in np.asarray(inputs):
        interp.set_tensor(inp["index"], quantize_input(row[None, ...], inp))
        interp.invoke()
        rows.append(np.array(interp.get_tensor(out["index"]))[0])
    return np.stack(rows)


def quantize_input(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    """Float inputs -> the model's input dtype using its scale / zero point (identity for float)."""
    dtype = np.dtype(details["dtype"])
    if np.issubdtype(dtype, np.floating):
        return np.asarray(x, dtype=dtype)
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        return np.asarray(x, dtype=dtype)
    scale, zp = details["quantization"]
    if not scale:
        return np.asarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, np.float64) / scale + zp), info.min, info.max).astype(dtype)


__all__ = ["SPARSE_MODES", "check_representative", "convert", "is_quantization_aware", "quantize_input", "run_litert"]
