"""Quantization recipes on the Keras side, built on TFMOT (never re-implemented here).

Two families:

* **Post-training** modes (``float32``, ``float16``, ``dynamic``, ``int8``, ``int16x8``) are
  converter settings; :class:`PostTrainingQuantization` names one and :mod:`converters.tflite`
  applies it.
* **Trained** recipes rewrite a stripped (pruned) Keras model so that fine-tuning keeps the
  ticket's zeros: prune-preserving QAT (PQAT), sparsity-preserving weight clustering and
  prune+cluster-preserving QAT (PCQAT), exactly as the TFMOT 0.8.1 notes give them. Plain QAT
  (:func:`plain_qat`) is kept only to show that it destroys sparsity.

The recipes return models ready to ``compile`` and ``fit``; the caller owns training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from converters import ConverterError
from edge_lottery import _tf_env  # noqa: F401  (Keras 2 before TensorFlow)
from edge_lottery.errors import expected

#: Post-training modes, in the order of the CLI's ``--quantize`` choices.
QUANTIZE_MODES: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int16x8")
#: Modes that need a representative dataset to calibrate activations.
CALIBRATED_MODES: tuple[str, ...] = ("int8", "int16x8")
#: Trained recipes (Keras -> Keras).
TRAINED_RECIPES: tuple[str, ...] = ("pqat", "cluster", "pcqat")
CENTROID_INITS: tuple[str, ...] = ("kmeans_plus_plus", "linear", "random", "density_based")


@dataclass(frozen=True)
class PostTrainingQuantization:
    """One post-training quantization setting for the TFLite converter.

    ``io`` is the dtype of the model's inputs / outputs for the integer modes: ``"int8"``
    (``int16`` for int16x8) gives an all-integer model for microcontrollers, ``"float"``
    keeps float32 I/O with quantize / dequantize ops at the edges.
    ``num_samples`` bounds how many representative rows calibration uses.
    """

    mode: str = "int8"
    io: str = "int8"
    num_samples: int = 100

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZE_MODES:
            raise ConverterError(expected("quantize mode", f"one of {', '.join(QUANTIZE_MODES)}", self.mode))
        if self.io not in ("int8", "float"):
            raise ConverterError(expected("quantized model I/O", "'int8' or 'float'", self.io))
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ConverterError(expected("representative sample count", "an integer >= 1", self.num_samples))

    @property
    def needs_representative(self) -> bool:
        return self.mode in CALIBRATED_MODES

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, "io": self.io, "num_samples": self.num_samples}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PostTrainingQuantization:
        return cls(**config)


def _tfmot() -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot


def _check_keras2(model: Any, what: str) -> None:
    import tf_keras

    if not isinstance(model, tf_keras.Model):
        raise ConverterError(expected(f"{what}: model type", "a tf_keras (Keras 2) Model", type(model).__name__))


def prune_preserving_qat(model: Any) -> Any:
    """PQAT: quantization-aware training that keeps the zeros of a stripped pruned model.

    TFMOT: ``quantize_apply(quantize_annotate_model(m), Default8BitPrunePreserveQuantizeScheme())``.
    """
    _check_keras2(model, "prune-preserving QAT")
    q = _tfmot().quantization.keras
    return q.quantize_apply(q.quantize_annotate_model(model), q.collab_opts.Default8BitPrunePreserveQuantizeScheme())


def plain_qat(model: Any) -> Any:
    """Plain QAT (``quantize_model``); it does NOT preserve sparsity and is here for comparison."""
    _check_keras2(model, "QAT")
    return _tfmot().quantization.keras.quantize_model(model)


def cluster_preserving_sparsity(
    model: Any, number_of_clusters: int = 16, centroid_init: str = "kmeans_plus_plus", *, per_channel: bool = False
) -> Any:
    """Weight clustering that keeps zeros zero (``preserve_sparsity=True``); fine-tune, then
    :func:`strip_clustering`."""
    _check_keras2(model, "clustering")
    if isinstance(number_of_clusters, bool) or not isinstance(number_of_clusters, int) or number_of_clusters < 2:
        raise ConverterError(expected("number_of_clusters", "an integer >= 2", number_of_clusters))
    if centroid_init not in CENTROID_INITS:
        raise ConverterError(expected("centroid initialisation", f"one of {', '.join(CENTROID_INITS)}", centroid_init))
    c = _tfmot().clustering.keras
    init = getattr(c.CentroidInitialization, centroid_init.upper())
    kwargs: dict[str, Any] = {"preserve_sparsity": True}
    if per_channel:
        kwargs["cluster_per_channel"] = True
    return c.cluster_weights(model, number_of_clusters=number_of_clusters, cluster_centroids_init=init, **kwargs)


def strip_clustering(model: Any) -> Any:
    return _tfmot().clustering.keras.strip_clustering(model)


def prune_cluster_preserving_qat(clustered_stripped: Any) -> Any:
    """PCQAT: QAT that keeps both the zeros and the cluster centroids of a stripped clustered model.

    In TFMOT 0.8.1 the scheme exists only under ``tfmot.experimental.combine``.
    """
    _check_keras2(clustered_stripped, "prune+cluster-preserving QAT")
    tfmot = _tfmot()
    q = tfmot.quantization.keras
    scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return q.quantize_apply(q.quantize_annotate_model(clustered_stripped), scheme)


def apply_recipe(model: Any, recipe: str, **kwargs: Any) -> Any:
    """Registry entry point: ``pqat`` | ``cluster`` | ``pcqat`` (PCQAT clusters first if asked)."""
    if recipe == "pqat":
        return prune_preserving_qat(model)
    if recipe == "cluster":
        return cluster_preserving_sparsity(model, **kwargs)
    if recipe == "pcqat":
        return prune_cluster_preserving_qat(model)
    raise ConverterError(expected("trained quantization recipe", f"one of {', '.join(TRAINED_RECIPES)}", recipe))


def kernel_weights(model: Any) -> dict[str, np.ndarray]:
    """Kernels of Dense / Conv layers by weight name, read through ``model.weights``.

    Inside ``QuantizeWrapperV2`` ``layer.kernel`` is a symbolic quantized tensor, so weights are
    matched by name (``.../kernel:0``) instead.
    """
    out: dict[str, np.ndarray] = {}
    for w in model.weights:
        name = w.name
        if name.endswith("kernel:0") and "cluster" not in name.split("/")[-1]:
            out[name] = np.asarray(w.numpy())
    return out


def densities(model: Any) -> dict[str, float]:
    """Non-zero fraction of every kernel (1.0 = dense)."""
    return {k: float(np.count_nonzero(v)) / v.size for k, v in kernel_weights(model).items() if v.size}


def distinct_values(model: Any) -> dict[str, int]:
    """Number of distinct values of every kernel (clustering leaves ``number_of_clusters``)."""
    return {k: int(np.unique(v).size) for k, v in kernel_weights(model).items()}


__all__ = [
    "CALIBRATED_MODES",
    "QUANTIZE_MODES",
    "TRAINED_RECIPES",
    "PostTrainingQuantization",
    "apply_recipe",
    "cluster_preserving_sparsity",
    "densities",
    "distinct_values",
    "kernel_weights",
    "plain_qat",
    "prune_cluster_preserving_qat",
    "prune_preserving_qat",
    "strip_clustering",
]
