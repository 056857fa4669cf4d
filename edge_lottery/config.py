"""Typed, frozen hyperparameters of a lottery ticket search (OpenLTH style).

Why dataclasses and not kwargs: a search is resumable and its work directory is refused when the
configuration changes, so the configuration has to be a value with a stable serialisation
(:meth:`to_dict` / :meth:`from_dict`) and a stable hash. ``None`` fields mean "the model
registry's default" (the papers' hyperparameters); :func:`resolve` fills them in, and the resolved
configuration is what the work directory records.

Everything here is pure Python: validation that only needs the configuration runs in
microseconds, before TensorFlow is imported. Checks that need the model (pattern fits the layer
shapes, there is something to prune) are in :func:`validate_against_weights`, still before any
training step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_lottery.errors import ConfigError, expected

OPTIMIZERS: tuple[str, ...] = ("sgd", "momentum", "adam")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "exponential", "inv")
# The TrainConfig fields that make up the learning-rate schedule (a user setting any of them
# replaces the model registry's published schedule).
LR_SCHEDULE_FIELDS: tuple[str, ...] = ("lr_schedule", "lr_milestones", "lr_gamma", "lr_power", "lr_decay_steps")
# Fields added after work directories were first recorded, with their defaults. ``to_dict`` leaves
# a field out while it has its default, so a configuration that does not use it keeps the hash
# (and resumes the work directory) it had before the field existed.
_LATER_TRAIN_FIELDS: dict[str, Any] = {"lr_power": 1.0, "lr_decay_steps": 1}
REWIND_MODES: tuple[str, ...] = ("weights", "lr", "finetune")
CONTROLS: tuple[str, ...] = ("reinit", "random_prune")
# Mirrors edge_lottery.masks.SCOPES / PATTERNS; kept here so a config validates without numpy
# work. tests/edge_lottery/test_search_config.py checks that the two agree.
SCOPES: tuple[str, ...] = ("global", "layerwise")
PATTERNS: tuple[str, ...] = ("unstructured", "block16x1", "block16x4", "block1x16", "2:4", "neuron")
# Patterns whose masks cannot be pruned again: a 2:4 mask is exactly half dense.
ONE_SHOT_PATTERNS: dict[str, float] = {"2:4": 0.5}
# More levels than this is almost certainly a typo (0.8**100 = 2e-10).
MAX_LEVELS = 100


def _known_keys(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` as keyword arguments for dataclass ``cls``; an unknown key is a one-line ConfigError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(expected(f"{cls.__name__} keys", "one of " + ", ".join(sorted(names)), unknown[0]))
    return dict(d)


def _choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(expected(what, "one of " + ", ".join(choices), value))


def _positive(what: str, value: object, *, allow_zero: bool = False, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        ok = value >= 0 if allow_zero else value > 0
        ok = ok and math.isfinite(float(value))
    if not ok:
        desc = ("a non-negative " if allow_zero else "a positive ") + ("integer" if integer else "number")
        raise ConfigError(expected(what, desc, value))


def _fraction(what: str, value: object, *, closed_low: bool = False, closed_high: bool = False) -> None:
    low, high = ("[" if closed_low else "("), ("]" if closed_high else ")")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v >= 0 if closed_low else v > 0) and (v <= 1 if closed_high else v < 1)
    if not ok:
        raise ConfigError(expected(what, f"a number in {low}0, 1{high}", value))


@dataclass(frozen=True)
class TrainConfig:
    """How one training run goes: optimizer, learning rate (schedule), batch size and length.

    Exactly one of ``epochs`` / ``iterations`` sets the length (``iterations`` wins when both are
    given by a model default and the user sets ``epochs``: the user's choice is applied by
    :func:`resolve`). ``eval_every`` is the number of steps between validation evaluations, which
    is the resolution of the early-stopping step; ``None`` means once per epoch.
    ``jit_compile`` and ``steps_per_execution`` are speed knobs (lth-and-tfmot-notes §11); they
    do not change the hash because they do not change what is computed. ``jit_compile=None``
    (the default) XLA-compiles the train step only for models without convolutions: on CPU,
    XLA ran LeNet-300-100's step 1.5x faster than TensorFlow's kernels, but the conv nets'
    1.25-1.8x slower and the depthwise ones (ds_cnn, mobilenet_v1_025) 7-9x slower
    (benchmarks/train_step_xla.py, docs/results/train_step_xla.md).

    Learning rate at optimizer step ``s`` (Caffe's policies and names; ``learning_rate`` = base):

    * ``constant``: base;
    * ``cosine``: base * (1 + cos(pi * t)) / 2, t = (s - warmup_steps) / (total - warmup_steps);
    * ``step``: base * lr_gamma ** (number of ``lr_milestones`` <= s) (piecewise constant);
    * ``exponential``: base * lr_gamma ** floor(s / lr_decay_steps) (``lr_decay_steps`` = steps
      per epoch decays once per epoch, 1 decays every step);
    * ``inv``: base * (1 + lr_gamma * s) ** -lr_power (Caffe's "inv").

    All are relative to ``learning_rate``, so overriding it scales the whole schedule. During the
    first ``warmup_steps`` steps the rate ramps linearly to the schedule's value instead.
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.0
    batch_size: int = 128
    epochs: int | None = None
    iterations: int | None = None
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_milestones: tuple[int, ...] = ()  # steps at which "step" multiplies the LR by lr_gamma
    lr_gamma: float = 0.1  # step: factor per milestone; exponential: factor per decay; inv: Caffe gamma
    lr_power: float = 1.0  # inv: the exponent
    lr_decay_steps: int = 1  # exponential: steps between two decays
    warmup_steps: int = 0
    eval_every: int | None = None
    jit_compile: bool | None = None  # None: XLA only for models without convolutions
    steps_per_execution: int = 50

    # Fields that do not change results; excluded from the hash and from work-dir compatibility.
    SPEED_FIELDS = ("jit_compile", "steps_per_execution")

    def validate(self) -> TrainConfig:
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _positive("learning_rate", self.learning_rate)
        _positive("momentum", self.momentum, allow_zero=True)
        _positive("batch_size", self.batch_size, integer=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        _positive("warmup_steps", self.warmup_steps, allow_zero=True, integer=True)
        _positive("steps_per_execution", self.steps_per_execution, integer=True)
        if self.jit_compile is not None and not isinstance(self.jit_compile, bool):
            raise ConfigError(expected("jit_compile", "True, False or None (automatic)", self.jit_compile))
        _positive("lr_gamma", self.lr_gamma)
        _positive("lr_power", self.lr_power)
        _positive("lr_decay_steps", self.lr_decay_steps, integer=True)
        if self.epochs is None and self.iterations is None:
            raise ConfigError(expected("training length", "epochs or iterations", None))
        if self.epochs is not None:
            _positive("epochs", self.epochs, integer=True)
        if self.iterations is not None:
            _positive("iterations", self.iterations, integer=True)
        if self.eval_every is not None:
            _positive("eval_every", self.eval_every, integer=True)
        for m in self.lr_milestones:
            _positive("lr_milestones", m, integer=True)
        if self.momentum and self.optimizer == "adam":
            raise ConfigError(expected("momentum with optimizer 'adam'", "0 (Adam has no momentum)", self.momentum))
        return self

    def total_steps(self, train_size: int) -> int:
        """Optimizer steps of one full training run (an epoch drops the last partial batch)."""
        if self.iterations is not None:
            return int(self.iterations)
        return int(self.epochs) * self.steps_per_epoch(train_size)

    def steps_per_epoch(self, train_size: int) -> int:
        steps = train_size // self.batch_size
        if steps < 1:
            raise ConfigError(expected("batch_size", f"at most the training set size {train_size}", self.batch_size))
        return steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        for name, default in _LATER_TRAIN_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        kwargs = _known_keys(cls, d)
        if "lr_milestones" in kwargs:
            kwargs["lr_milestones"] = tuple(int(m) for m in kwargs["lr_milestones"])
        return cls(**kwargs)


@dataclass(frozen=True)
class SearchConfig:
    """What to search for: model, data, how much to prune per level, how to rewind.

    * ``levels`` or ``target_sparsity``: stop after N pruning levels, or at the first level whose
      sparsity (over the pruned layers) reaches the target.
    * ``prune_fraction``: fraction of the *remaining* weights pruned per level (Dense layers; the
      papers use 0.2). ``prune_fraction_conv`` / ``prune_fraction_output`` override it for
      convolutions and for the output layer; ``keep_output=True`` leaves the output layer dense
      (OpenLTH's default for LeNet), ``False`` prunes it at ``prune_fraction_output``.
    * ``first_layer_density``: the first layer is never pruned below this density (``1.0`` keeps
      it dense). ``exclude``: layer names never pruned.
    * ``rewind``: "weights" (rewind to θ_k, the LTH), "lr" (learning-rate rewinding, Renda et al.:
      keep the trained weights, replay the schedule from step k), "finetune" (keep the trained
      weights, train at the final learning rate for the same number of steps).
    * ``controls``: extra branches at every level: "reinit" (same mask, fresh initialisation)
      and "random_prune" (random mask with the same per-layer densities).
    * ``tolerance``: a level "matches" the dense network when its test accuracy is at most this
      far below it; the best level is the sparsest matching one.
    """

    model: str
    dataset: str
    train: TrainConfig | None = None
    levels: int | None = None
    target_sparsity: float | None = None
    prune_fraction: float | None = None
    prune_fraction_conv: float | None = None
    prune_fraction_output: float | None = None
    keep_output: bool | None = None
    first_layer_density: float | None = None
    exclude: tuple[str, ...] = ()
    rewind: str = "weights"
    rewind_step: int = 0
    scope: str = "global"
    pattern: str = "unstructured"
    controls: tuple[str, ...] = ()
    seed: int = 0
    validation_size: int | None = None
    tolerance: float = 0.005
    deterministic: bool = True

    def validate(self) -> SearchConfig:
        """Check everything that does not need the model; raise a one-line ConfigError."""
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(expected("model", "a model name", self.model))
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(expected("dataset", "a dataset name", self.dataset))
        if self.levels is None and self.target_sparsity is None:
            raise ConfigError(expected("stopping rule", "levels or target_sparsity", None))
        if self.levels is not None and self.target_sparsity is not None:
            raise ConfigError(
                expected("stopping rule", "levels or target_sparsity, not both",
                         f"levels={self.levels}, target_sparsity={self.target_sparsity}")
            )
        if self.levels is not None:
            _positive("levels", self.levels, integer=True, allow_zero=True)
            if self.levels > MAX_LEVELS:
                raise ConfigError(expected("levels", f"at most {MAX_LEVELS}", self.levels))
        if self.target_sparsity is not None:
            _fraction("target_sparsity", self.target_sparsity)
        for name in ("prune_fraction", "prune_fraction_conv", "prune_fraction_output"):
            value = getattr(self, name)
            if value is not None:
                _fraction(name, value)
        if self.first_layer_density is not None:
            _fraction("first_layer_density", self.first_layer_density, closed_low=True, closed_high=True)
        _choice("rewind", self.rewind, REWIND_MODES)
        _positive("rewind_step", self.rewind_step, allow_zero=True, integer=True)
        _choice("scope", self.scope, SCOPES)
        _choice("pattern", self.pattern, PATTERNS)
        for c in self.controls:
            _choice("controls", c, CONTROLS)
        if len(set(self.controls)) != len(self.controls):
            raise ConfigError(expected("controls", "each control at most once", ",".join(self.controls)))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(expected("seed", "an integer", self.seed))
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise ConfigError(expected("tolerance", "a number in [0, 1)", self.tolerance))
        for name in self.exclude:
            if not isinstance(name, str) or not name:
                raise ConfigError(expected("exclude", "layer names", name))
        if self.validation_size is not None:
            _positive("validation_size", self.validation_size, integer=True)
        if self.train is not None:
            self.train.validate()
        if self.pattern in ONE_SHOT_PATTERNS:
            limit = ONE_SHOT_PATTERNS[self.pattern]
            if self.levels is not None and self.levels > 1:
                raise ConfigError(expected(f"levels with pattern {self.pattern}",
                                           "at most 1 (the pattern has a fixed density)", self.levels))
            if self.target_sparsity is not None and self.target_sparsity > 1 - limit:
                raise ConfigError(expected(f"target_sparsity with pattern {self.pattern}",
                                           f"at most {1 - limit:g} (unreachable)", self.target_sparsity))
        if self.target_sparsity is not None and self.prune_fraction is not None:
            if self.levels_needed() > MAX_LEVELS:
                raise ConfigError(expected("target_sparsity", f"reachable within {MAX_LEVELS} levels "
                                           f"at prune_fraction {self.prune_fraction}", self.target_sparsity))
        return self

    def levels_needed(self) -> int:
        """Levels to run: ``levels``, or the first L with (1-F)^L <= 1 - target."""
        if self.levels is not None:
            return int(self.levels)
        fraction = float(self.prune_fraction if self.prune_fraction is not None else 0.2)
        keep = 1.0 - fraction
        density = 1.0 - float(self.target_sparsity)
        # Small epsilon: 0.8**2 == 0.64 must count as reaching sparsity 0.36.
        return max(1, math.ceil(math.log(density) / math.log(keep) - 1e-9))

    @property
    def is_custom_model(self) -> bool:
        return self.model.startswith("custom:")

    @property
    def is_custom_dataset(self) -> bool:
        return self.dataset.startswith("custom:")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train.to_dict() if self.train is not None else None
        d["exclude"] = list(self.exclude)
        d["controls"] = list(self.controls)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchConfig:
        kwargs = _known_keys(cls, d)
        if kwargs.get("train") is not None and not isinstance(kwargs["train"], TrainConfig):
            kwargs["train"] = TrainConfig.from_dict(kwargs["train"])
        kwargs["exclude"] = tuple(kwargs.get("exclude", ()))
        kwargs["controls"] = tuple(kwargs.get("controls", ()))
        return cls(**kwargs)

    def identity_dict(self) -> dict[str, Any]:
        """The fields that decide the results (speed knobs removed); what the hash covers."""
        d = self.to_dict()
        if d["train"] is not None:
            for name in TrainConfig.SPEED_FIELDS:
                d["train"].pop(name, None)
        return d

    def hash(self) -> str:
        """Stable 16-hex-digit hash of :meth:`identity_dict` (canonical JSON)."""
        text = json.dumps(self.identity_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


SCHEDULE_UNITS: tuple[str, ...] = ("step", "epoch")


@dataclass(frozen=True)
class LRSchedule:
    """A published learning-rate schedule, in its source's units (the model registry's form).

    ``kind`` is one of :data:`LR_SCHEDULES` with :class:`TrainConfig`'s meaning; ``unit`` says
    whether ``milestones`` ("step"), ``decay_every`` ("exponential") and the rate ``gamma`` of
    "inv" count optimizer steps or epochs. Papers give schedules in epochs, and a run's steps per epoch depend on its dataset and
    batch size, so the conversion to TrainConfig's step-based fields happens per run
    (:meth:`train_fields`, called by :func:`resolve`). ``description`` is the source's schedule
    in words.
    """

    kind: str = "constant"
    unit: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    power: float = 1.0
    decay_every: int = 1
    description: str = ""

    def validate(self) -> LRSchedule:
        _choice("LR schedule kind", self.kind, LR_SCHEDULES)
        _choice("LR schedule unit", self.unit, SCHEDULE_UNITS)
        _positive("LR schedule gamma", self.gamma)
        _positive("LR schedule power", self.power)
        _positive("LR schedule decay_every", self.decay_every, integer=True)
        for m in self.milestones:
            _positive("LR schedule milestones", m, integer=True)
        return self

    def train_fields(self, steps_per_epoch: int | None = None) -> dict[str, Any]:
        """The :class:`TrainConfig` schedule fields of this schedule, counted in optimizer steps.

        Only the fields ``kind`` uses are set (the others keep TrainConfig's defaults and so stay
        out of the configuration hash). ``steps_per_epoch`` is needed for ``unit="epoch"``.
        """
        self.validate()
        scale = 1
        if self.unit == "epoch":
            if steps_per_epoch is None:
                raise ConfigError(expected("steps per epoch", "a number to convert a per-epoch LR schedule to steps",
                                           None))
            _positive("steps per epoch", steps_per_epoch, integer=True)
            scale = int(steps_per_epoch)
        fields: dict[str, Any] = {"lr_schedule": self.kind}
        if self.kind == "step":
            fields.update(lr_milestones=tuple(int(m) * scale for m in self.milestones), lr_gamma=float(self.gamma))
        elif self.kind == "exponential":
            fields.update(lr_gamma=float(self.gamma), lr_decay_steps=int(self.decay_every) * scale)
        elif self.kind == "inv":
            fields.update(lr_gamma=float(self.gamma) / scale, lr_power=float(self.power))
        return fields

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LRSchedule:
        kwargs = _known_keys(cls, d)
        if "milestones" in kwargs:
            kwargs["milestones"] = tuple(int(m) for m in kwargs["milestones"])
        return cls(**kwargs).validate()


@dataclass(frozen=True)
class ModelDefaults:
    """The subset of a model registry entry the configuration needs (for custom models too)."""

    train: TrainConfig
    prune_fraction: float = 0.2
    prune_fraction_conv: float | None = None
    prune_fraction_output: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The published schedule; :func:`resolve` applies it unless the user sets one.
    lr_schedule: LRSchedule | None = None


def defaults_from_spec(spec: Any) -> ModelDefaults:
    """Translate ``edge_lottery.models.ModelSpec.defaults`` into :class:`ModelDefaults`."""
    d = spec.defaults
    optimizer = str(d.optimizer).lower()
    momentum = float(getattr(d, "momentum", 0.0) or 0.0)
    if optimizer == "sgd" and momentum:
        optimizer = "momentum"
    epochs = getattr(d, "epochs", None)
    iterations = getattr(d, "iterations", None)
    schedule = getattr(d, "lr_schedule", None)
    train = TrainConfig(
        optimizer=optimizer if optimizer in OPTIMIZERS else "sgd",
        learning_rate=float(d.learning_rate),
        momentum=momentum,
        batch_size=int(d.batch_size),
        epochs=int(epochs) if epochs else None,
        iterations=int(iterations) if (iterations and not epochs) else None,
        weight_decay=float(getattr(d, "weight_decay", 0.0) or 0.0),
    )
    return ModelDefaults(
        train=train,
        prune_fraction=float(getattr(d, "prune_fraction_dense", 0.2) or 0.2),
        prune_fraction_conv=getattr(d, "prune_fraction_conv", None),
        prune_fraction_output=getattr(d, "prune_fraction_output", None),
        source=str(getattr(d, "source", "")),
        lr_schedule=schedule if isinstance(schedule, LRSchedule) else None,
    )


# The defaults for a user-supplied Keras model (no registry entry): OpenLTH's LeNet recipe.
CUSTOM_DEFAULTS = ModelDefaults(train=TrainConfig(optimizer="sgd", learning_rate=0.1, batch_size=128, epochs=10))


def resolve(config: SearchConfig, defaults: ModelDefaults, *, train_overrides: Mapping[str, Any] | None = None,
            train_size: int | None = None) -> SearchConfig:
    """Fill every ``None`` of ``config`` from the model's defaults; return a validated config.

    ``train_overrides`` (e.g. from CLI flags) replace single fields of the default TrainConfig;
    setting ``epochs`` clears a default ``iterations`` and vice versa.

    The model's published learning-rate schedule (``defaults.lr_schedule``) is applied when the
    training configuration comes from the defaults (``config.train`` is None) and no override sets
    a schedule field (:data:`LR_SCHEDULE_FIELDS`); a per-epoch schedule is converted to steps with
    the run's steps per epoch, which needs ``train_size`` (the number of training examples).
    """
    config.validate()
    train = config.train if config.train is not None else defaults.train
    over = {k: v for k, v in (train_overrides or {}).items() if v is not None}
    if over:
        if "epochs" in over and "iterations" not in over:
            over["iterations"] = None
        if "iterations" in over and "epochs" not in over:
            over["epochs"] = None
        train = dataclasses.replace(train, **over)
    train.validate()
    if config.train is None and defaults.lr_schedule is not None and not set(over) & set(LR_SCHEDULE_FIELDS):
        schedule = defaults.lr_schedule
        per_epoch = train.steps_per_epoch(train_size) if (schedule.unit == "epoch" and train_size is not None) else None
        train = dataclasses.replace(train, **schedule.train_fields(per_epoch)).validate()
    pf = config.prune_fraction if config.prune_fraction is not None else defaults.prune_fraction
    pf_conv = config.prune_fraction_conv
    if pf_conv is None:
        pf_conv = defaults.prune_fraction_conv if defaults.prune_fraction_conv else pf
    keep_output = config.keep_output
    pf_out = config.prune_fraction_output
    if pf_out is None:
        pf_out = defaults.prune_fraction_output if defaults.prune_fraction_output else None
    if keep_output is None:
        keep_output = pf_out is None
    if pf_out is None:
        pf_out = pf / 2  # the LTH paper's ratio (20 % hidden, 10 % output)
    first = config.first_layer_density if config.first_layer_density is not None else 0.0
    resolved = dataclasses.replace(
        config, train=train, prune_fraction=float(pf), prune_fraction_conv=float(pf_conv),
        prune_fraction_output=float(pf_out), keep_output=bool(keep_output), first_layer_density=float(first),
        validation_size=config.validation_size,
    )
    resolved.validate()
    if resolved.rewind_step > 0:
        # The training length depends on the dataset; the search re-checks against total steps.
        pass
    return resolved


def validate_against_weights(config: SearchConfig, weights: Mapping[str, Any], *, first_layer_id: str | None,
                             total_steps: int, layer_names: tuple[str, ...]) -> None:
    """Checks that need the model, run before any training step.

    ``weights`` maps prunable weight ids ("<layer>/<attr>") to arrays (after exclusions).
    """
    for name in config.exclude:
        if name not in layer_names:
            raise ConfigError(expected("exclude", "layer names of the model (" + ", ".join(layer_names) + ")", name))
    if not weights:
        raise ConfigError(expected(f"prunable layers of model {config.model!r}",
                                   "at least one Dense/Conv/Embedding layer not excluded", "none"))
    if config.rewind_step >= total_steps:
        raise ConfigError(expected("rewind_step", f"less than the training length ({total_steps} steps)",
                                   config.rewind_step))
    from edge_lottery import masks as masks_lib

    try:
        masks_lib.check_pattern_fits(dict(weights), config.pattern)
    except ConfigError as exc:
        # The usual case is a small output layer; say how to keep it out of the pattern.
        raise ConfigError(f"{exc}; keep that layer dense with --keep-output or --exclude LAYER") from None
    except Exception as exc:  # masks.py raises ConfigError; anything else is still a user error
        raise ConfigError(f"pattern {config.pattern!r}: {exc}") from None
    if config.target_sparsity is not None:
        import numpy as np

        total = sum(int(np.size(v)) for v in weights.values())
        zeros = sum(int(np.size(v)) - int(np.count_nonzero(v)) for v in weights.values())
        if zeros / total >= config.target_sparsity:
            raise ConfigError(expected("target_sparsity", f"above the model's current sparsity {zeros / total:.4f}",
                                       f"{config.target_sparsity} (already passed)"))
    if config.target_sparsity is not None and first_layer_id is not None and config.first_layer_density:
        sizes = {k: int(v.size) for k, v in weights.items()}
        total = sum(sizes.values())
        floor = sizes.get(first_layer_id, 0) * config.first_layer_density / total
        if 1 - config.target_sparsity < floor:
            raise ConfigError(expected("target_sparsity",
                                       f"at most {1 - floor:.4f} with first_layer_density "
                                       f"{config.first_layer_density} (unreachable)", config.target_sparsity))
