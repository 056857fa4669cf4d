"""``LotteryTicketSearch``: iterative magnitude pruning with rewinding, over levels and branches.

The loop (Frankle & Carbin 2019; Frankle et al. 2020; OpenLTH):

1. level 0 trains the dense network and captures θ_k (all non-mask variables at step k);
2. level L ≥ 1 prunes ``prune_fraction`` of the weights that survived level L-1, ranked by the
   magnitude of level L-1's *trained* weights (global or layer-wise, any block pattern), checks the
   new mask is nested in the old one, rewinds (θ_k, or the trained weights for LR rewinding and
   fine-tuning), retrains with the masks carried by TFMOT wrappers, and checks afterwards that the
   masks did not move and every pruned weight is exactly zero;
3. the ``reinit`` and ``random_prune`` controls run as their own branches at every level.

Everything a level produces goes to the work directory (:mod:`edge_lottery.workdir`) before the
next level starts, and every level is computed only from files on disk, so a run killed at any
point and started again yields the same summary as an uninterrupted one.

This module is the loop and nothing else: masks are :mod:`edge_lottery.masks`, wrappers
:mod:`edge_lottery.tfmot_masks`, training :mod:`edge_lottery.training`, rewinding
:mod:`edge_lottery.rewind`, files :mod:`edge_lottery.workdir`, tables and plots
:mod:`edge_lottery.report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lottery import _tf_env  # noqa: F401
from edge_lottery import config as config_lib
from edge_lottery import masks as masks_lib
from edge_lottery.config import SearchConfig, TrainConfig
from edge_lottery.errors import ConfigError, DataError, ModelError, WorkDirError, expected
from edge_lottery.workdir import TICKET, WorkDir, versions

log = logging.getLogger(__name__)

#: Per-level fields every summary row has (docs/search.md).
SUMMARY_FIELDS = ("level", "branch", "density", "test_accuracy", "best_val_accuracy", "early_stop_step",
                  "train_seconds")
#: Row fields that measure time, so they differ between two runs with the same seed.
TIMING_FIELDS = ("train_seconds", "epoch_seconds_mean", "epoch_seconds_first")


# ---- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LevelResult:
    """One finished level of one branch (a row of ``summary.json``)."""

    level: int
    branch: str
    density: float
    layer_densities: dict[str, float]
    test_accuracy: float | None
    test_loss: float
    best_val_accuracy: float | None
    best_val_loss: float | None
    early_stop_step: int | None
    test_accuracy_at_early_stop: float | None
    train_seconds: float
    masks_path: str
    weights_path: str
    row: dict[str, Any] = field(repr=False, default_factory=dict)
    work_dir: str = ""

    def ticket(self) -> Ticket:
        """This level's :class:`Ticket` (masks, trained weights, models)."""
        return Ticket(Path(self.work_dir), self.level, self.branch)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], work_dir: Path) -> LevelResult:
        d = work_dir / row["path"]
        return cls(
            level=int(row["level"]), branch=row["branch"], density=float(row["density"]),
            layer_densities=dict(row["layer_densities"]), test_accuracy=row.get("test_accuracy"),
            test_loss=float(row["test_loss"]), best_val_accuracy=row.get("best_val_accuracy"),
            best_val_loss=row.get("best_val_loss"), early_stop_step=row.get("early_stop_step"),
            test_accuracy_at_early_stop=row.get("test_accuracy_at_early_stop"),
            train_seconds=float(row["train_seconds"]), masks_path=str(d / "masks.npz"),
            weights_path=str(d / "weights.npz"), row=dict(row), work_dir=str(work_dir),
        )


class Ticket:
    """The masks and trained weights of one level; :meth:`model` gives a plain tf_keras model."""

    def __init__(self, work_dir: Path, level: int, branch: str = TICKET):
        self.work_dir = Path(work_dir)
        self.level = level
        self.branch = branch
        wd = WorkDir.open(self.work_dir)
        self.masks, self.weights, self.metrics = wd.load_level(level, branch)

    def model(self) -> Any:
        """A stripped tf_keras model (no wrappers) with the trained weights; pruned weights are 0."""
        return model_from_record(WorkDir.open(self.work_dir), self.masks, self.weights)

    def wrapped_model(self) -> Any:
        """The same weights inside TFMOT wrappers carrying the masks, for further TFMOT work
        (prune-preserving QAT, clustering). Train it with ``tfmot_masks.pruning_callbacks()``."""
        from edge_lottery import tfmot_masks

        plain = self.model()
        wrapped = tfmot_masks.wrap_for_masks(plain, exclude=_excluded_layers(plain, WorkDir.open(self.work_dir).config))
        tfmot_masks.set_masks(wrapped, self.masks)
        return wrapped

    def __repr__(self) -> str:
        return f"Ticket(level={self.level}, branch={self.branch!r}, density={masks_lib.density(self.masks):.4f})"


@dataclass(frozen=True)
class SearchResult:
    """All finished levels. ``best`` is the sparsest ticket level whose test accuracy is at most
    ``tolerance`` below the dense level's (the dense level itself when no pruned level matches)."""

    work_dir: Path
    config: SearchConfig
    levels: list[LevelResult]
    controls: dict[str, list[LevelResult]]
    best: LevelResult
    summary: dict[str, Any]

    def ticket(self, level: int | str = "best", branch: str = TICKET) -> Ticket:
        if level == "best":
            level = self.best.level
        return Ticket(self.work_dir, int(level), branch)

    @property
    def best_ticket(self) -> Ticket:
        return self.ticket("best")


# ---- model and data adapters ----------------------------------------------------------------
def _set_seed(seed: int) -> None:
    import tf_keras

    tf_keras.utils.set_random_seed(int(seed) % (2**31))


def _derived_seed(*parts: Any) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _excluded_layers(model: Any, config: Mapping[str, Any]) -> tuple[str, ...]:
    """Layer names not pruned: ``exclude`` plus the output layer when ``keep_output``."""
    out = list(config.get("exclude", ()))
    if config.get("keep_output"):
        name = _output_layer_name(model, config.get("model", ""))
        if name and name not in out:
            out.append(name)
    return tuple(out)


def _output_layer_name(model: Any, model_name: str) -> str | None:
    from edge_lottery import models as models_lib
    from edge_lottery import tfmot_masks

    if model_name in models_lib.MODELS:
        return models_lib.get_model_spec(model_name).output_layer
    ids = tfmot_masks.prunable_weight_ids(model)
    return ids[-1].split("/")[0] if ids else None


def _first_layer_name(model: Any, model_name: str) -> str | None:
    from edge_lottery import models as models_lib
    from edge_lottery import tfmot_masks

    if model_name in models_lib.MODELS:
        return models_lib.get_model_spec(model_name).first_layer
    ids = tfmot_masks.prunable_weight_ids(model)
    return ids[0].split("/")[0] if ids else None


def _is_logits(model: Any) -> bool:
    last = model.layers[-1]
    return getattr(last, "get_config", dict)().get("activation") not in ("softmax", "sigmoid")


class _ModelSource:
    """Builds fresh copies of the architecture and initial weights, for any kind of model input."""

    def __init__(self, model: Any, dataset: Any, train: TrainConfig | None, seed: int):
        import tf_keras

        from edge_lottery import models as models_lib

        self.registry_name: str | None = None
        self.user_model: Any = None
        self.factory: Callable[[], Any] | None = None
        self.input_shape = dataset.input_shape
        self.num_classes = dataset.num_classes
        if isinstance(model, str):
            models_lib.get_model_spec(model)  # ModelError listing the names
            self.registry_name = model
            self.name = model
            self.task = models_lib.get_model_spec(model).task
        elif isinstance(model, tf_keras.Model):
            models_lib.check_keras2_model(model)
            self.user_model = model
        elif callable(model):
            self.factory = model
            _set_seed(seed)
            self.user_model = model()
            models_lib.check_keras2_model(self.user_model)
        else:
            models_lib.check_keras2_model(model)  # raises ModelError with the right message
        if self.user_model is not None:
            self.name = "custom:" + self.user_model.name
            self.task = "classification"
            from edge_lottery import tfmot_masks

            tfmot_masks.prunable_weight_ids(self.user_model)  # rejects subclassed/nested models
            self.theta_0 = tfmot_masks.snapshot(self.user_model)
            self.architecture = self.user_model.to_json()
            shape = tuple(int(d) for d in self.user_model.input_shape[1:])
            if shape != tuple(self.input_shape):
                raise DataError(expected(f"input shape of model {self.user_model.name!r}", shape, self.input_shape))

    def defaults(self) -> config_lib.ModelDefaults:
        if self.registry_name is None:
            return config_lib.CUSTOM_DEFAULTS
        from edge_lottery import models as models_lib

        return config_lib.defaults_from_spec(models_lib.get_model_spec(self.registry_name))

    def identity(self) -> dict[str, Any]:
        if self.registry_name is not None:
            return {"name": self.registry_name, "kind": "registry"}
        theta = hashlib.sha256()
        for key in sorted(self.theta_0):
            theta.update(key.encode())
            theta.update(np.ascontiguousarray(self.theta_0[key]).tobytes())
        return {"name": self.name, "kind": "keras",
                "architecture_sha256": hashlib.sha256(self.architecture.encode()).hexdigest(),
                "init_sha256": theta.hexdigest()}

    def build(self, seed: int, weight_decay: float) -> Any:
        """A fresh model; for registry models ``seed`` decides the initial weights."""
        import tf_keras

        from edge_lottery import models as models_lib

        if self.registry_name is not None:
            return models_lib.build_model(self.registry_name, self.input_shape, self.num_classes, seed=seed,
                                          weight_decay=weight_decay)
        _set_seed(seed)
        if self.factory is not None:
            return self.factory()
        return tf_keras.models.clone_model(self.user_model)

    def initial_weights(self, seed: int, weight_decay: float) -> dict[str, np.ndarray]:
        from edge_lottery import tfmot_masks

        if self.registry_name is None and seed == -1:
            return dict(self.theta_0)
        return tfmot_masks.snapshot(self.build(seed, weight_decay))


def _as_dataset(dataset: Any, *, data_dir: Any, validation_size: int | None, seed: int) -> Any:
    from edge_lottery import data as data_lib

    if isinstance(dataset, str):
        return data_lib.load_dataset(dataset, data_dir, validation_size=validation_size, seed=seed)
    if isinstance(dataset, data_lib.Dataset):
        return dataset
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3):
        parts = []
        for i, part in enumerate(dataset):
            if not (isinstance(part, (tuple, list)) and len(part) == 2):
                raise DataError(expected(f"dataset part {i}", "an (x, y) pair", type(part).__name__))
            x = np.asarray(part[0], dtype=np.float32)
            y = np.asarray(part[1]).astype(np.int64).reshape(-1)
            if len(x) != len(y):
                raise DataError(expected(f"dataset part {i}", "as many labels as examples", f"{len(x)} vs {len(y)}"))
            parts.append((x, y))
        if len(parts) == 2:  # (train, test): hold out the last 10 % of train for validation
            (x, y), test = parts
            n_val = max(1, len(x) // 10)
            parts = [(x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:]), test]
        (xt, yt), (xv, yv), (xs, ys) = parts
        arrays = {"x_train": xt, "y_train": yt, "x_val": xv, "y_val": yv, "x_test": xs, "y_test": ys}
        sha = data_lib.content_sha256(arrays)
        num_classes = int(max(yt.max(initial=0), yv.max(initial=0), ys.max(initial=0))) + 1
        return data_lib.Dataset(name="custom:" + sha[:12], num_classes=num_classes, sha256=sha,
                                source="arrays", validation_size=len(xv), seed=seed, split="given", **arrays)
    raise DataError(expected("dataset", "a dataset name, an edge_lottery Dataset, or ((x, y), [(x, y),] (x, y))",
                             type(dataset).__name__))


# ---- the search ------------------------------------------------------------------------------
class LotteryTicketSearch:
    """Find winning tickets of a Keras model by IMP with rewinding.

    ``model``: a registry name (``edge_lottery.models.MODELS``), a tf_keras Sequential/Functional
    model (cloned; its current weights are θ_0), or a callable returning one.
    ``dataset``: a registry name, an :class:`edge_lottery.data.Dataset`, or
    ``((x_train, y_train), [(x_val, y_val),] (x_test, y_test))``.
    ``config``: a :class:`SearchConfig`; ``**overrides`` replace its fields, and fields of
    :class:`TrainConfig` (``epochs=2``, ``learning_rate=...``) replace training defaults.
    ``strategy``: a ``tf.distribute`` strategy; models and optimizers are created in its scope
    (a search constructed inside ``with strategy.scope():`` picks that strategy up).
    ``callbacks``: extra Keras callbacks for every training run; a callback with an
    ``on_level_begin(branch, level, model)`` method is told when each run starts.

    Without ``levels`` or ``target_sparsity`` the search runs 3 levels. Validation (bad
    arguments, patterns the layers cannot take, unreachable targets) happens in the constructor,
    before any training. ``run()`` switches on TensorFlow op determinism for the process (exact
    resume needs it; turn it off with ``deterministic=False``).
    """

    def __init__(self, model: Any, dataset: Any, *, work_dir: str | Path, config: SearchConfig | None = None,
                 callbacks: Sequence[Any] | None = None, strategy: Any = None, data_dir: str | Path | None = None,
                 progress: bool = False, **overrides: Any):
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        search_fields = {f.name for f in dataclasses.fields(SearchConfig)}
        train_over = {k: v for k, v in overrides.items() if k in train_fields}
        search_over = {k: v for k, v in overrides.items() if k in search_fields}
        unknown = sorted(set(overrides) - train_fields - search_fields)
        if unknown:
            raise ConfigError(expected("argument", "a SearchConfig or TrainConfig field", unknown[0]))
        for key in ("exclude", "controls"):
            if key in search_over and isinstance(search_over[key], str):
                search_over[key] = tuple(s for s in search_over[key].split(",") if s)
            elif key in search_over:
                search_over[key] = tuple(search_over[key])
        base_name = model if isinstance(model, str) else "custom"
        base_ds = dataset if isinstance(dataset, str) else "custom"
        if config is None:
            config = SearchConfig(model=base_name, dataset=base_ds, **search_over)
        else:
            config = dataclasses.replace(config, **search_over)
        if config.levels is None and config.target_sparsity is None:
            config = dataclasses.replace(config, levels=3)
        config.validate()
        self.dataset = _as_dataset(dataset, data_dir=data_dir, validation_size=config.validation_size,
                                   seed=config.seed)
        self.source = _ModelSource(model, self.dataset, config.train, config.seed)
        config = dataclasses.replace(config, model=self.source.name, dataset=self.dataset.name)
        self.config = config_lib.resolve(config, self.source.defaults(), train_overrides=train_over,
                                         train_size=len(self.dataset.x_train))
        self.train: TrainConfig = self.config.train  # type: ignore[assignment]
        self.work_dir = Path(work_dir)
        self.callbacks = list(callbacks or [])
        if strategy is None and "tensorflow" in __import__("sys").modules:
            import tensorflow as tf

            if tf.distribute.has_strategy():  # constructed inside `with strategy.scope():`
                strategy = tf.distribute.get_strategy()
        self.strategy = strategy
        self.progress = progress
        self._xla_logged = False
        self._stalled = False  # set by run() when a level would prune nothing
        self.total_steps = self.train.total_steps(len(self.dataset.x_train))
        self.eval_every = self.train.eval_every or self.train.steps_per_epoch(len(self.dataset.x_train))
        self._check_against_model()

    # ---- set-up ----------------------------------------------------------------------------
    def _weight_decay_in_model(self) -> float:
        return float(self.train.weight_decay) if self.source.registry_name is not None else 0.0

    def _check_against_model(self) -> None:
        from edge_lottery import tfmot_masks

        probe = self.source.build(self.config.seed, 0.0) if self.source.user_model is None else self.source.user_model
        self.layer_names = tuple(layer.name for layer in probe.layers)
        cfg = self.config.to_dict()
        self.excluded = _excluded_layers(probe, cfg)
        ids = tfmot_masks.prunable_weight_ids(probe)
        weights = tfmot_masks.get_prunable_weights(probe)
        self.prunable = {i: weights[i] for i in ids if i.split("/")[0] not in self.excluded}
        first = _first_layer_name(probe, self.config.model)
        self.first_id = next((i for i in self.prunable if i.split("/")[0] == first), None)
        self.output_layer = _output_layer_name(probe, self.config.model)
        self.logits = _is_logits(probe)
        self._random_layers = any(hasattr(layer, "_random_generator") for layer in probe.layers)
        config_lib.validate_against_weights(self.config, self.prunable, first_layer_id=self.first_id,
                                            total_steps=self.total_steps, layer_names=self.layer_names)
        self.excluded_sizes = {i: int(np.size(weights[i])) for i in ids if i not in self.prunable}

    def _record(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "config_hash": self.config.hash(), "model": self.source.identity(),
            "dataset": self.dataset.to_dict(), "versions": versions(),
            "training": {"total_steps": self.total_steps, "eval_every": self.eval_every,
                         "steps_per_epoch": self.train.steps_per_epoch(len(self.dataset.x_train))},
        }

    def _layer_fractions(self, ids: Sequence[str]) -> dict[str, float]:
        cfg = self.config
        out: dict[str, float] = {}
        for wid in ids:
            layer = wid.split("/")[0]
            if layer == self.output_layer and not cfg.keep_output and cfg.prune_fraction_output != cfg.prune_fraction:
                out[wid] = float(cfg.prune_fraction_output)  # type: ignore[arg-type]
            elif self._is_conv(wid) and cfg.prune_fraction_conv != cfg.prune_fraction:
                out[wid] = float(cfg.prune_fraction_conv)  # type: ignore[arg-type]
        return out

    def _is_conv(self, wid: str) -> bool:
        return np.ndim(self.prunable[wid]) > 2

    # ---- masks -----------------------------------------------------------------------------
    def next_masks(self, trained: Mapping[str, np.ndarray], previous: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Level L's masks from level L-1's trained weights (nested in ``previous``)."""
        cfg = self.config
        weights = {k: trained[k] for k in previous}
        lf = self._layer_fractions(list(previous))
        new = masks_lib.compute_masks(weights, previous, fraction=float(cfg.prune_fraction), scope=cfg.scope,
                                      pattern=cfg.pattern, layer_fractions=lf or None)
        if self.first_id is not None and cfg.first_layer_density:
            floor = float(cfg.first_layer_density)
            dens = masks_lib.layer_densities(new)[self.first_id]
            if dens < floor:
                prev_d = masks_lib.layer_densities(previous)[self.first_id]
                lf[self.first_id] = max(0.0, 1.0 - floor / prev_d) if prev_d > floor else 0.0
                new = masks_lib.compute_masks(weights, previous, fraction=float(cfg.prune_fraction), scope=cfg.scope,
                                              pattern=cfg.pattern, layer_fractions=lf)
        if not masks_lib.is_nested(new, previous):
            raise ModelError("internal error: the new masks are not nested in the previous level's masks")
        return new

    def _density_all(self, masks: Mapping[str, np.ndarray]) -> float:
        kept = sum(float(np.count_nonzero(m)) for m in masks.values()) + sum(self.excluded_sizes.values())
        total = sum(int(np.size(m)) for m in masks.values()) + sum(self.excluded_sizes.values())
        return kept / total

    # ---- training units --------------------------------------------------------------------
    def _scope(self) -> Any:
        import contextlib

        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def _compile(self, model: Any) -> None:
        import tf_keras

        from edge_lottery import training

        opt = training.make_optimizer(self.train, self.total_steps,
                                      decoupled_weight_decay=self.source.registry_name is None)
        if self.source.task == "reconstruction":
            loss, metrics = tf_keras.losses.MeanSquaredError(), []
        else:
            loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=self.logits)
            metrics = ["accuracy"]
        jit = self._use_xla(model)
        model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=jit,
                      steps_per_execution=int(self.train.steps_per_execution))

    def _use_xla(self, model: Any) -> bool:
        """``jit_compile`` as set, or (None) XLA only for a model without convolution layers."""
        if self.strategy is not None:
            return False  # XLA is switched off under a tf.distribute strategy
        if self.train.jit_compile is not None:
            return bool(self.train.jit_compile)
        import tf_keras

        # Every public convolution (transposed ones subclass ConvND).
        convs = (tf_keras.layers.Conv1D, tf_keras.layers.Conv2D, tf_keras.layers.Conv3D,
                 tf_keras.layers.DepthwiseConv1D, tf_keras.layers.DepthwiseConv2D,
                 tf_keras.layers.SeparableConv1D, tf_keras.layers.SeparableConv2D)
        has_conv = any(isinstance(m, convs) for m in model.submodules)
        if not self._xla_logged:
            log.info("jit_compile automatic: %s", "off (the model has convolutions, which XLA runs slower on CPU)"
                     if has_conv else "on (no convolutions)")
            self._xla_logged = True
        return not has_conv

    def _wrapped_model(self) -> Any:
        """The one wrapped, compiled model every level trains (traced once per process)."""
        from edge_lottery import tfmot_masks

        if self._wrapped is None or self._random_layers:
            # Layers that draw random numbers in training (Dropout, noise) keep generator state in
            # the traced step; a fresh model per run makes that state a function of the run alone,
            # which exact resume needs. It costs one trace per level.
            with self._scope():
                base = self.source.build(self.config.seed, self._weight_decay_in_model())
                wrapped = tfmot_masks.wrap_for_masks(base, exclude=self.excluded)
                self._compile(wrapped)
            self._wrapped = wrapped
        return self._wrapped

    def _run_unit(self, branch: str, level: int, masks: Mapping[str, np.ndarray], start: Any,
                  capture_k: int | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
        """Train one (branch, level); returns metrics, trained weights and the θ_k snapshot if asked.

        Every input comes from ``start`` and ``masks`` (which the caller read from disk), and the
        optimizer is reset to a fresh state, so the result does not depend on what this process
        trained before: the basis of exact resume.
        """
        from edge_lottery import report, rewind, tfmot_masks, training

        seed = _derived_seed(self.config.seed, branch, level)
        _set_seed(seed)
        wrapped = self._wrapped_model()
        with self._scope():
            # Masks first: restore() multiplies by the masks the model carries, and those must be
            # this run's, not the previous run's (a stale random-prune mask would zero survivors).
            tfmot_masks.set_masks(wrapped, masks)
            tfmot_masks.restore(wrapped, start.weights)
            training.reset_optimizer(wrapped, start.start_step, start.constant_lr)
        callbacks = [*tfmot_masks.pruning_callbacks()]
        rp = None
        if capture_k is not None:
            rp = rewind.rewind_point_callback(capture_k)
            callbacks.append(rp)
        tb_dir = self.wd.tensorboard_dir(level, branch)
        shutil.rmtree(tb_dir, ignore_errors=True)  # a partial log of an interrupted run
        tb = report.tensorboard_callback(tb_dir)
        if tb is not None:
            callbacks.append(tb)
        callbacks.append(report.progress_callback(branch, level, start.start_step, self.total_steps,
                                                  rich_display=self.progress))
        callbacks.extend(self.callbacks)
        for cb in self.callbacks:
            hook = getattr(cb, "on_level_begin", None)
            if hook is not None:
                hook(branch, level, wrapped)
        run = training.run_training(
            wrapped, self.tensors, self.train, seed=self.config.seed, start_step=start.start_step,
            end_step=self.total_steps, eval_every=self.eval_every, callbacks=callbacks,
            split_at=(capture_k,) if capture_k else (),
            metric=None if self.source.task == "reconstruction" else "accuracy",
        )
        # The invariants of a ticket, checked after every level (notes §7 #4, §9 #9).
        tfmot_masks.apply_masks(wrapped)
        carried = tfmot_masks.get_masks(wrapped)
        for wid, mask in masks.items():
            if not np.array_equal(carried[wid], mask):
                raise ModelError(f"mask of {wid!r} changed during training of {branch} level {level}")
        trained = tfmot_masks.snapshot(wrapped)
        for wid, mask in masks.items():
            if np.any(trained[wid][mask == 0] != 0):
                raise ModelError(f"pruned weights of {wid!r} are not zero after training {branch} level {level}")
        theta_k = None
        if rp is not None:
            if rp.snapshot is None:
                raise ModelError(f"the rewind point k={capture_k} was never reached")
            theta_k = rp.snapshot
        metrics = self._metrics(branch, level, masks, run, start)
        return metrics, trained, theta_k

    def _metrics(self, branch: str, level: int, masks: Mapping[str, np.ndarray], run: Any, start: Any) -> dict[str, Any]:
        best = run.best or {}
        secs = run.epoch_seconds
        path = self.wd.level_dir(level, branch).relative_to(self.wd.root)
        return {
            "level": level, "branch": branch, "path": str(path),
            "density": masks_lib.density(masks), "density_all": self._density_all(masks),
            "layer_densities": masks_lib.layer_densities(masks),
            "remaining_weights": int(sum(np.count_nonzero(m) for m in masks.values())),
            "test_accuracy": run.test.get("accuracy"), "test_loss": run.test.get("loss"),
            "best_val_accuracy": max((h["val_accuracy"] for h in run.history if "val_accuracy" in h), default=None),
            "best_val_loss": best.get("val_loss"), "val_accuracy_at_early_stop": best.get("val_accuracy"),
            "early_stop_step": int(best["step"]) if "step" in best else None,
            "test_accuracy_at_early_stop": best.get("test_accuracy"),
            "train_seconds": run.seconds, "epoch_seconds_mean": float(np.mean(secs)) if secs else None,
            "epoch_seconds_first": float(secs[0]) if secs else None,
            "start_step": run.start_step, "end_step": run.end_step, "rewind": self.config.rewind,
            "start": start.description, "history": run.history,
        }

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Run (or resume) the search; returns every finished level. A finished search is a no-op."""
        from edge_lottery import rewind

        self.wd = WorkDir.create_or_resume(self.work_dir, self._record())
        if self.source.user_model is not None:
            self.wd.save_architecture(self.source.architecture)
        if self.config.deterministic:
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        self._tensors: Any = None
        self._wrapped: Any = None
        self._stalled = False
        cfg = self.config
        k = cfg.rewind_step
        wd_theta0 = -1 if self.source.user_model is not None else cfg.seed
        ones = {wid: np.ones(np.shape(w), np.float32) for wid, w in self.prunable.items()}

        # Level 0: dense training; captures θ_k.
        if not self.wd.is_finished(0) or not self.wd.has_rewind_point():
            theta_0 = self.source.initial_weights(wd_theta0, self._weight_decay_in_model())
            start = rewind.StartState(theta_0, 0, None, "θ_0 (initialisation)")
            metrics, trained, theta_k = self._run_unit(TICKET, 0, ones, start, capture_k=k)
            self.wd.save_rewind_point(theta_k, k)
            if not self.wd.is_finished(0):
                self.wd.save_level(0, ones, trained, metrics)
            self._summarise()
        theta_k, step = self.wd.load_rewind_point()
        if step != k:
            raise ModelError(expected("rewind point step", k, step))
        prev_masks, prev_weights, _ = self.wd.load_level(0)

        level = 0
        while self._more_levels(level, prev_masks):
            new_masks = self.next_masks(prev_weights, prev_masks)
            if all(np.array_equal(new_masks[i], prev_masks[i]) for i in new_masks):
                # Every pruned layer is down to the one block the collapse guard keeps.
                log.warning("level %d would prune nothing (every pruned layer is down to its last %s block, "
                            "which is never pruned); stopping at density %.4f", level + 1, cfg.pattern,
                            masks_lib.density(prev_masks))
                self._stalled = True
                break
            level += 1
            branches: list[tuple[str, dict[str, np.ndarray]]] = [(TICKET, new_masks)]
            for control in cfg.controls:
                if control == "random_prune":
                    rng = np.random.default_rng([cfg.seed, level, 7])
                    branches.append((control, masks_lib.random_masks_like(new_masks, cfg.pattern, rng)))
                else:
                    branches.append((control, new_masks))
            for branch, masks in branches:
                if self.wd.is_finished(level, branch):
                    saved = self.wd.load_level(level, branch)[0]
                    if branch != "random_prune" and not all(np.array_equal(saved[i], masks[i]) for i in masks):
                        raise WorkDirError(f"work directory {self.wd.root} is inconsistent: level {level} ({branch}) "
                                           "has other masks than the previous level's weights give")
                    continue
                fresh = None
                if branch == "reinit":
                    fresh = self.source.initial_weights(_derived_seed(cfg.seed, "reinit", level),
                                                        self._weight_decay_in_model())
                    if all(np.array_equal(fresh[i], theta_k[i]) for i in masks):
                        log.warning("reinit level %d: the fresh initialisation equals θ_k (initializers with "
                                    "fixed seeds?); the control is not a re-initialisation", level)
                start = rewind.start_state(cfg.rewind, branch, theta_k=theta_k, k=k, previous=prev_weights,
                                           fresh=fresh, train=self.train, total_steps=self.total_steps)
                log.info("level %d (%s): density %.4f, start: %s", level, branch, masks_lib.density(masks),
                         start.description)
                metrics, trained, _ = self._run_unit(branch, level, masks, start)
                self.wd.save_level(level, masks, trained, metrics, branch=branch)
                self._summarise()
            prev_masks, prev_weights, _ = self.wd.load_level(level)
        summary = self._summarise()
        return self._result(summary)

    @property
    def tensors(self) -> Any:
        from edge_lottery import training

        if self._tensors is None:
            d = self.dataset
            with self._scope():
                self._tensors = training.TensorData(d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test,
                                                    reconstruction=self.source.task == "reconstruction")
        return self._tensors

    def _more_levels(self, level: int, masks: Mapping[str, np.ndarray]) -> bool:
        cfg = self.config
        if cfg.levels is not None:
            return level < cfg.levels
        return 1.0 - masks_lib.density(masks) < float(cfg.target_sparsity) - 1e-12 and level < config_lib.MAX_LEVELS

    # ---- summary ---------------------------------------------------------------------------
    def _summarise(self) -> dict[str, Any]:
        from edge_lottery import report

        rows = []
        branches = [TICKET, *self.config.controls]
        for branch in branches:
            for level in self.wd.finished_levels(branch):
                metrics = self.wd.load_level(level, branch)[2]
                rows.append({k: v for k, v in metrics.items() if k != "history"})
        rows.sort(key=lambda r: (r["level"], branches.index(r["branch"])))
        summary = {
            "format": "edge-lottery-summary/1",
            "config": self.config.to_dict(), "config_hash": self.config.hash(),
            "model": self.wd.record.get("model"), "dataset": self.wd.record.get("dataset"),
            "hyperparameters": self.train.to_dict(), "training": self.wd.record.get("training"),
            "versions": self.wd.record.get("versions"), "tolerance": self.config.tolerance,
            "levels": rows, "best_level": choose_best(rows, self.config.tolerance),
            "finished": self._all_done(rows),
        }
        before = self.wd.read_summary()
        self.wd.write_summary(summary)
        if before != json_roundtrip(summary) or not self.wd.plot_path.exists():
            report.plot_accuracy_vs_density(rows, self.wd.plot_path, title=f"{self.config.model} on {self.config.dataset}")
        return summary

    def _all_done(self, rows: list[dict[str, Any]]) -> bool:
        ticket = [r for r in rows if r["branch"] == TICKET]
        if not ticket:
            return False
        if self._stalled:
            return True
        last = max(ticket, key=lambda r: r["level"])
        if self.config.levels is not None:
            return last["level"] >= self.config.levels
        return 1.0 - last["density"] >= float(self.config.target_sparsity) - 1e-12

    def _result(self, summary: dict[str, Any]) -> SearchResult:
        rows = [LevelResult.from_row(r, self.wd.root) for r in summary["levels"]]
        ticket = [r for r in rows if r.branch == TICKET]
        controls: dict[str, list[LevelResult]] = {}
        for r in rows:
            if r.branch != TICKET:
                controls.setdefault(r.branch, []).append(r)
        best = next(r for r in ticket if r.level == summary["best_level"])
        return SearchResult(self.wd.root, self.config, ticket, controls, best, summary)


def json_roundtrip(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def choose_best(rows: Sequence[Mapping[str, Any]], tolerance: float) -> int | None:
    """The sparsest ticket level within ``tolerance`` of the dense level's test accuracy.

    The dense level matches itself, so the answer is level 0 when no pruned level matches. For
    reconstruction models (no accuracy) the test loss may be at most (1 + tolerance) x dense.
    """
    ticket = [r for r in rows if r.get("branch", TICKET) == TICKET]
    dense = next((r for r in ticket if r["level"] == 0), None)
    if dense is None:
        return None
    if dense.get("test_accuracy") is not None:
        ok = [r for r in ticket if r["test_accuracy"] is not None and r["test_accuracy"] >= dense["test_accuracy"] - tolerance]
    else:
        ok = [r for r in ticket if r["test_loss"] <= dense["test_loss"] * (1 + tolerance)]
    return int(min(ok, key=lambda r: (r["density"], -r["level"]))["level"])


def model_from_record(wd: WorkDir, masks: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]) -> Any:
    """Rebuild a plain model from a work directory and assign a level's weights (checks the zeros)."""
    import tf_keras

    from edge_lottery import models as models_lib
    from edge_lottery import tfmot_masks

    config = wd.config
    arch = wd.read_architecture()
    if arch is not None:
        model = tf_keras.models.model_from_json(arch)
    else:
        ds = wd.record["dataset"]
        model = models_lib.build_model(config["model"], tuple(ds["input_shape"]), int(ds["num_classes"]),
                                       seed=int(config.get("seed", 0)))
    tfmot_masks.restore(model, weights)
    values = tfmot_masks.get_prunable_weights(model)
    for wid, mask in masks.items():
        if np.any(values[wid][np.asarray(mask) == 0] != 0):
            raise ModelError(f"weights of {wid!r} in {wd.root} are not zero where the mask prunes them")
    return model
