"""TFMOT pruning wrappers as carriers of fixed masks: the only module that touches their internals.

The lottery ticket search computes its masks itself (:mod:`edge_lottery.masks`) and uses TFMOT's
``PruneLowMagnitude`` wrapper only to *hold* them: the wrapper multiplies each prunable weight by
its mask before every forward pass, keeps the mask through ``fit``, ``save_weights`` and
``strip_pruning``, and is what the converters understand. Reusing it (rather than a mask layer of
our own) keeps tickets compatible with TFMOT's prune-preserving QAT and clustering.

Gotchas handled here (see docs/pruning-patterns.md):

* ``prune_low_magnitude`` wraps the *original* layer objects, so the wrapped model shares
  variables with its source. :func:`wrap_for_masks` clones the model first and copies weights, so
  the caller's model is never pruned behind its back. :func:`strip` shares variables with the
  wrapped model, as TFMOT's ``strip_pruning`` does.
* The schedule must never update the mask: ``ConstantSparsity(0.5, begin_step=10**9)`` is a
  built-in, so h5 loading needs no custom object. ``sparsity_m_by_n`` is never passed (it would
  overwrite our masks at step 1 and is not serialised).
* ``UpdatePruningStep`` is mandatory in ``fit`` (:func:`pruning_callbacks`); without it the
  wrapper's step assertion fails.
* Gradients at pruned positions are dense, so optimizer slots fill there; the weights are
  re-zeroed before every forward pass and by :func:`set_masks` / :func:`apply_masks` / :func:`strip`.
* Variables created under a ``tf.distribute`` strategy must be created in its scope: call
  :func:`wrap_for_masks` inside ``strategy.scope()``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

# Importing this submodule runs edge_lottery/__init__ (and so _tf_env) before TensorFlow loads.
import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import (
    prunable_layer,
    prune_registry,
    pruning_wrapper,
)

from edge_lottery.errors import ConfigError, ModelError, expected

#: A step the pruning schedule never reaches, so TFMOT never recomputes the masks we set.
NEVER_STEP = 10**9
#: Suffix of the keys under which :func:`snapshot` stores masks when asked to.
MASK_SUFFIX = "#mask"

_WRAPPER = pruning_wrapper.PruneLowMagnitude
_REGISTRY = prune_registry.PruneRegistry
_WRAPPER_PREFIX = "prune_low_magnitude_"


# --------------------------------------------------------------------------------------------
# Model checks and the prunable-weight registry
# --------------------------------------------------------------------------------------------
def _check_model(model: Any, *, allow_wrapped: bool = True) -> None:
    """Reject objects TFMOT cannot wrap, with the reason and the fix."""
    if not isinstance(model, keras.Model):
        module = type(model).__module__ or ""
        if module.split(".")[0] == "keras":
            raise ModelError(
                expected(
                    "model",
                    "a tf_keras (Keras 2) model, because TFMOT 0.8.1 only supports Keras 2; build it "
                    "with `import tf_keras as keras` after `import edge_lottery` "
                    "(or set TF_USE_LEGACY_KERAS=1 before importing TensorFlow)",
                    f"a Keras 3 {type(model).__name__}",
                )
            )
        raise ModelError(expected("model", "a tf_keras Sequential or Functional model", type(model).__name__))
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ModelError(
            expected(
                "model",
                "a Sequential or Functional tf_keras model (TFMOT wraps layers by rebuilding the model "
                "with clone_model, which needs a layer graph; subclassed models are not supported by "
                "TFMOT: rebuild it with the Functional API)",
                f"a subclassed model {type(model).__name__}",
            )
        )
    if not model.built:
        raise ModelError(expected("model", "a built model (give it an input shape)", "an unbuilt model"))
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            raise ModelError(
                expected(
                    "model",
                    "a flat model (weight ids are '<layer>/<attr>' of top-level layers)",
                    f"a nested model {layer.name!r}; flatten it into one Functional model",
                )
            )
    if not allow_wrapped and is_wrapped(model):
        raise ModelError(
            expected("model", "a model without pruning wrappers", "a wrapped model; strip() it first")
        )


def _registry_variables(layer: Any) -> list[Any]:
    """Prunable variables of a plain layer, mirroring TFMOT's ``PruneRegistry`` without mutating it.

    ``PruneRegistry.make_prunable`` would attach ``get_prunable_weights`` to the caller's layer, so
    the registry's tables are read instead.
    """
    if isinstance(layer, _WRAPPER):
        return [w for w, _, _ in layer.pruning_vars]
    if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights())
    if not _REGISTRY.supports(layer):
        return []
    cls = layer.__class__
    if cls in _REGISTRY._LAYERS_WEIGHTS_MAP:
        out = []
        for name in _REGISTRY._LAYERS_WEIGHTS_MAP[cls]:
            obj = layer
            for part in name.split("."):
                obj = getattr(obj, part)
            out.append(obj)
        return out
    out = []
    for cell in _REGISTRY._get_rnn_cells(layer):
        if cell.__class__ in _REGISTRY._RNN_CELLS_WEIGHTS_MAP:
            out.extend(getattr(cell, n) for n in _REGISTRY._RNN_CELLS_WEIGHTS_MAP[cell.__class__])
        else:
            out.extend(cell.get_prunable_weights())
    return out


def _inner(layer: Any) -> Any:
    return layer.layer if isinstance(layer, _WRAPPER) else layer


def _attr(var: Any, layer: Any) -> str:
    """Attribute part of a weight id: the variable name below its layer's scope.

    Independent of wrapping: ``fc1/kernel:0`` (built before wrapping) and
    ``prune_low_magnitude_fc1/kernel:0`` (built inside the wrapper) both give ``kernel``.
    """
    parts = var.name.split(":")[0].split("/")
    for anchor in (layer.name, _WRAPPER_PREFIX + layer.name):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            if rest:
                return "/".join(rest)
    return parts[-1]


def _prunable(model: Any) -> Iterator[tuple[str, Any, Any | None]]:
    """(id, weight variable, mask variable or None). Wrapped models: only what the wrappers carry."""
    wrapped = is_wrapped(model)
    seen: set[str] = set()
    for layer in model.layers:
        if wrapped and not isinstance(layer, _WRAPPER):
            continue
        inner = _inner(layer)
        if isinstance(layer, _WRAPPER):
            pairs = [(w, m) for w, m, _ in layer.pruning_vars]
        else:
            pairs = [(w, None) for w in _registry_variables(layer)]
        for w, m in pairs:
            wid = f"{inner.name}/{_attr(w, inner)}"
            if wid in seen:
                raise ModelError(expected("prunable weight ids", "unique ids", f"{wid!r} twice"))
            seen.add(wid)
            yield wid, w, m


def _all_variables(model: Any) -> dict[str, Any]:
    """Every non-mask variable keyed by ``<inner layer>/<attr>`` (stable across wrap/strip)."""
    out: dict[str, Any] = {}
    for layer in model.layers:
        inner = _inner(layer)
        for var in inner.weights:
            key = f"{inner.name}/{_attr(var, inner)}"
            if key in out:
                raise ModelError(expected("variable names", "unique '<layer>/<attr>' keys", f"{key!r} twice"))
            out[key] = var
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def is_wrapped(model: Any) -> bool:
    """True when some top-level layer is a TFMOT ``PruneLowMagnitude`` wrapper."""
    return any(isinstance(layer, _WRAPPER) for layer in getattr(model, "layers", ()))


def prunable_weight_ids(model: Any) -> list[str]:
    """Ids ``"<layer>/<attr>"`` of the prunable weights, in layer order.

    Plain models: what TFMOT's registry (or a layer's ``get_prunable_weights``) calls prunable;
    DepthwiseConv2D, biases and BatchNorm never are. Wrapped models: the weights the wrappers
    carry masks for (excluded layers are not listed).
    """
    _check_model(model)
    return [wid for wid, _, _ in _prunable(model)]


def wrap_for_masks(model: Any, *, exclude: Collection[str] = ()) -> keras.Model:
    """A new model whose prunable layers (except ``exclude``) carry fixed masks, all ones.

    The model is cloned and its weights copied first, so the caller's model keeps its own
    variables. Call inside ``strategy.scope()`` when training under ``tf.distribute``.
    """
    _check_model(model, allow_wrapped=False)
    if isinstance(exclude, str):
        exclude = (exclude,)
    names = [layer.name for layer in model.layers]
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise ConfigError(expected("exclude", f"layer names of the model ({', '.join(names)})", unknown))
    targets = {layer.name for layer in model.layers if _registry_variables(layer) and layer.name not in exclude}
    if not targets:
        prunable = [layer.name for layer in model.layers if _registry_variables(layer)]
        raise ModelError(
            expected(
                "model",
                "at least one prunable layer (Dense, Conv, Embedding, RNN, ... per TFMOT's registry) "
                "that is not excluded",
                f"prunable layers {prunable} with exclude={sorted(exclude)}",
            )
        )

    try:
        clone = keras.models.clone_model(model)
        if not clone.built:
            clone.build(model.input_shape)
    except (NotImplementedError, TypeError, ValueError) as exc:
        # Custom layers without get_config()/from_config() cannot be cloned; TFMOT clones too.
        raise ModelError(
            expected(
                "model",
                "a model keras.models.clone_model can rebuild (custom layers need get_config/from_config)",
                f"{type(exc).__name__}: "
                + (str(exc).splitlines()[0] if str(exc).strip() else "a layer's get_config() is not implemented"),
            )
        ) from exc
    for src, dst in zip(model.layers, clone.layers, strict=True):
        dst.set_weights(src.get_weights())

    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=NEVER_STEP)

    def _wrap(layer: Any) -> Any:
        if layer.name in targets:
            return _WRAPPER(layer, pruning_schedule=schedule)
        return layer

    wrapped = keras.models.clone_model(clone, clone_function=_wrap)
    if not wrapped.built:
        wrapped.build(model.input_shape)
    # clone_model must reuse the built layers: verify nothing was re-initialised.
    for (key, var), (key2, src) in zip(_all_variables(wrapped).items(), _all_variables(model).items(), strict=True):
        if key != key2 or not np.array_equal(var.numpy(), src.numpy()):
            raise ModelError(expected(f"wrapped copy of {key2!r}", "the source weights", f"{key} differs"))
    return wrapped


def get_masks(wrapped: Any) -> dict[str, np.ndarray]:
    """Current masks by weight id (float32 0/1 copies)."""
    _require_wrapped(wrapped)
    return {wid: np.array(m.numpy(), dtype=np.float32) for wid, _, m in _prunable(wrapped)}


def set_masks(wrapped: Any, masks: Mapping[str, np.ndarray]) -> None:
    """Assign every wrapper's masks and zero the pruned weights at once (not at the next step)."""
    _require_wrapped(wrapped)
    entries = list(_prunable(wrapped))
    ids = [wid for wid, _, _ in entries]
    missing = [i for i in ids if i not in masks]
    extra = [k for k in masks if k not in ids]
    if missing or extra:
        raise ModelError(expected("mask ids", ids, f"missing {missing}, extra {extra}"))
    prepared = []
    for wid, w, m in entries:
        arr = np.asarray(masks[wid])
        if tuple(arr.shape) != tuple(w.shape):
            raise ModelError(expected(f"mask shape of {wid!r}", tuple(w.shape), tuple(arr.shape)))
        if not np.all((arr == 0) | (arr == 1)):
            raise ModelError(expected(f"mask of {wid!r}", "0/1 values", "other values"))
        prepared.append((w, m, arr.astype(m.dtype.as_numpy_dtype)))
    for w, m, arr in prepared:
        m.assign(arr)
        w.assign(w.numpy() * arr)


def apply_masks(wrapped: Any) -> None:
    """Re-zero the weights at pruned positions (before saving or exporting mid-training)."""
    _require_wrapped(wrapped)
    for _, w, m in _prunable(wrapped):
        w.assign(w.numpy() * m.numpy())


def get_prunable_weights(model: Any) -> dict[str, np.ndarray]:
    """Current values of the prunable weights by id (copies); see :func:`prunable_weight_ids`."""
    _check_model(model)
    return {wid: np.array(w.numpy()) for wid, w, _ in _prunable(model)}


def snapshot(model: Any, *, masks: bool = False) -> dict[str, np.ndarray]:
    """Copies of all non-mask variables keyed ``"<inner layer>/<attr>"``.

    The keys are the same for the plain, wrapped and stripped versions of one architecture, so a
    snapshot taken before wrapping (θ_0 / θ_k) restores into the wrapped model. With
    ``masks=True`` the masks of a wrapped model are added under ``"<id>#mask"``.
    """
    _check_model(model)
    snap = {key: np.array(var.numpy(), copy=True) for key, var in _all_variables(model).items()}
    if masks:
        _require_wrapped(model)
        snap.update({wid + MASK_SUFFIX: m for wid, m in get_masks(model).items()})
    return snap


def restore(model: Any, snap: Mapping[str, np.ndarray], *, masks_too: bool = False) -> None:
    """Assign a :func:`snapshot` back (BatchNorm statistics included), then re-apply the masks.

    ``masks_too`` also restores the masks saved with ``snapshot(..., masks=True)``; otherwise the
    model keeps its current masks and the restored weights are multiplied by them. So when the
    next masks are not nested in the current ones (a random control, another branch), call
    :func:`set_masks` with them *before* ``restore``; restoring first would zero, under the stale
    masks, weights the new masks keep.
    """
    _check_model(model)
    variables = _all_variables(model)
    values = {k: v for k, v in snap.items() if not k.endswith(MASK_SUFFIX)}
    missing = [k for k in variables if k not in values]
    extra = [k for k in values if k not in variables]
    if missing or extra:
        raise ModelError(expected("snapshot keys", sorted(variables), f"missing {missing}, extra {extra}"))
    for key, var in variables.items():
        if tuple(np.shape(values[key])) != tuple(var.shape):
            raise ModelError(expected(f"snapshot shape of {key!r}", tuple(var.shape), tuple(np.shape(values[key]))))
    mask_values = None
    if masks_too:
        _require_wrapped(model)
        ids = prunable_weight_ids(model)
        absent = [i for i in ids if i + MASK_SUFFIX not in snap]
        if absent:
            raise ModelError(
                expected("snapshot masks", "masks for every wrapped weight (snapshot(masks=True))", f"none for {absent}")
            )
        mask_values = {i: snap[i + MASK_SUFFIX] for i in ids}
    for key, var in variables.items():
        var.assign(np.asarray(values[key], dtype=var.dtype.as_numpy_dtype))
    if mask_values is not None:
        set_masks(model, mask_values)
    elif is_wrapped(model):
        apply_masks(model)


def pruning_callbacks() -> list[Any]:
    """Callbacks ``fit`` needs for wrapped models: TFMOT's ``UpdatePruningStep``.

    For a custom loop: ``cb = UpdatePruningStep(); cb.set_model(m); cb.on_train_begin()``, call
    ``m(x, training=True)`` in the loop and ``cb.on_epoch_end(epoch)`` after each epoch.
    """
    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(wrapped: Any) -> keras.Model:
    """``strip_pruning`` after re-masking; checks the plain kernels carry every pruned zero.

    The stripped model shares variables with ``wrapped`` (TFMOT reuses the inner layers).
    """
    _require_wrapped(wrapped)
    apply_masks(wrapped)
    masks = get_masks(wrapped)
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    values = get_prunable_weights(stripped)
    for wid, mask in masks.items():
        if wid not in values or np.any(values[wid][mask == 0] != 0):
            raise ModelError(expected(f"stripped weight {wid!r}", "zeros at every pruned position", "non-zeros"))
    return stripped


def _require_wrapped(model: Any) -> None:
    _check_model(model)
    if not is_wrapped(model):
        raise ModelError(expected("model", "a model wrapped by wrap_for_masks()", "a model without pruning wrappers"))
