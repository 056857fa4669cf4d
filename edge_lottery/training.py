"""One training run of the search: optimizer, LR schedule, data order, ``fit`` in segments.

Why not a single ``model.fit(x, y, epochs=...)``: the search needs (1) the exact optimizer step k
as a point where the weights can be captured (θ_k), (2) runs that start at step k with the data
order the dense run saw from step k on (OpenLTH skips ahead in the data loader), (3) validation at
a fixed step grid for the early-stopping step, and (4) time per epoch rather than per ``fit`` call
(lth-and-tfmot-notes §11: ``fit`` can stall after its last epoch). So a run is a list of
"virtual epochs" of ``eval_every`` steps, fed from a deterministic index sequence, executed by as
few ``fit`` calls as the grid allows (usually one). ``jit_compile`` and ``steps_per_execution``
are passed to ``compile``; tf.data autotuning is switched off (the stall).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_lottery import _tf_env  # noqa: F401
from edge_lottery.config import TrainConfig

log = logging.getLogger(__name__)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def _keras() -> Any:
    import tf_keras

    return tf_keras


# ---- learning rate -------------------------------------------------------------------------
def lr_at(train: TrainConfig, step: float, total_steps: int) -> float:
    """The learning rate of ``train``'s schedule at ``step`` (pure Python; mirrors the TF one)."""
    base = float(train.learning_rate)
    if train.warmup_steps and step < train.warmup_steps:
        return base * (step + 1) / train.warmup_steps
    if train.lr_schedule == "cosine":
        span = max(total_steps - train.warmup_steps, 1)
        t = min(max(step - train.warmup_steps, 0), span) / span
        return base * 0.5 * (1 + math.cos(math.pi * t))
    if train.lr_schedule == "step":
        return base * train.lr_gamma ** sum(1 for m in train.lr_milestones if step >= m)
    if train.lr_schedule == "exponential":
        return base * train.lr_gamma ** math.floor(step / train.lr_decay_steps)
    if train.lr_schedule == "inv":
        return base * (1.0 + train.lr_gamma * step) ** -train.lr_power
    return base


def make_schedule(train: TrainConfig, total_steps: int) -> Any:
    """The run's serialisable tf_keras LearningRateSchedule.

    It is always a schedule object (not a float) so that one compiled model serves every level:
    fine-tuning switches it to a constant rate through :func:`reset_optimizer` without a
    recompile (a recompile retraces and, with XLA, recompiles the train step: seconds per level).
    """
    return _schedule_class()(
        learning_rate=train.learning_rate, kind=train.lr_schedule, total_steps=total_steps,
        warmup_steps=train.warmup_steps, milestones=list(train.lr_milestones), gamma=train.lr_gamma,
        power=train.lr_power, decay_steps=train.lr_decay_steps,
    )


_SCHEDULE_CLASS: Any = None


def _schedule_class() -> Any:
    global _SCHEDULE_CLASS
    if _SCHEDULE_CLASS is not None:
        return _SCHEDULE_CLASS
    tf, keras = _tf(), _keras()

    class LotteryLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
        """Warmup + constant / cosine / step / exponential / inv decay (TrainConfig's formulas),
        driven by ``optimizer.iterations``.

        Because the schedule reads the optimizer step, setting ``iterations = k`` on a fresh
        optimizer resumes the schedule at k (weight rewinding). ``override`` > 0 replaces the
        schedule by a constant rate (fine-tuning).
        """

        def __init__(self, learning_rate: float, kind: str, total_steps: int, warmup_steps: int = 0,
                     milestones: Sequence[int] = (), gamma: float = 0.1, power: float = 1.0,
                     decay_steps: int = 1):
            self.learning_rate = float(learning_rate)
            self.kind = kind
            self.total_steps = int(total_steps)
            self.warmup_steps = int(warmup_steps)
            self.milestones = [int(m) for m in milestones]
            self.gamma = float(gamma)
            self.power = float(power)
            self.decay_steps = int(decay_steps)
            self.override = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="lr_override")

        def __call__(self, step: Any) -> Any:
            # Whole decays counted in integers: a float32 quotient can round up to the next one.
            decays = tf.math.floordiv(tf.cast(step, tf.int64), self.decay_steps)
            step = tf.cast(step, tf.float32)
            base = tf.constant(self.learning_rate, tf.float32)
            if self.kind == "cosine":
                span = float(max(self.total_steps - self.warmup_steps, 1))
                t = tf.clip_by_value(step - self.warmup_steps, 0.0, span) / span
                lr = base * 0.5 * (1.0 + tf.cos(math.pi * t))
            elif self.kind == "step":
                n = tf.add_n([tf.cast(step >= m, tf.float32) for m in self.milestones] or [tf.constant(0.0)])
                lr = base * tf.pow(tf.constant(self.gamma, tf.float32), n)
            elif self.kind in ("exponential", "inv"):
                # float64: gamma ** n in float32 drifts (0.999 ** 1000 is 1.5e-5 off), unlike lr_at.
                if self.kind == "exponential":
                    factor = tf.pow(tf.constant(self.gamma, tf.float64), tf.cast(decays, tf.float64))
                else:
                    factor = tf.pow(1.0 + self.gamma * tf.cast(step, tf.float64), tf.constant(-self.power, tf.float64))
                lr = tf.cast(self.learning_rate * factor, tf.float32)
            else:
                lr = base
            if self.warmup_steps:
                warm = base * (step + 1.0) / float(self.warmup_steps)
                lr = tf.where(step < self.warmup_steps, warm, lr)
            return tf.where(self.override > 0.0, self.override, lr)

        def get_config(self) -> dict[str, Any]:
            return {"learning_rate": self.learning_rate, "kind": self.kind, "total_steps": self.total_steps,
                    "warmup_steps": self.warmup_steps, "milestones": self.milestones, "gamma": self.gamma,
                    "power": self.power, "decay_steps": self.decay_steps}

    _SCHEDULE_CLASS = LotteryLRSchedule
    return _SCHEDULE_CLASS


def make_optimizer(train: TrainConfig, total_steps: int, *, decoupled_weight_decay: bool = False) -> Any:
    """An optimizer for ``train`` (see :func:`reset_optimizer` for starting a run afresh)."""
    keras = _keras()
    lr = make_schedule(train, total_steps)
    wd = float(train.weight_decay) if (decoupled_weight_decay and train.weight_decay) else None
    if train.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)
    momentum = float(train.momentum) if train.optimizer == "momentum" else 0.0
    return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, weight_decay=wd)


def reset_optimizer(model: Any, step: int, constant_lr: float | None = None) -> None:
    """Make the compiled optimizer equivalent to a fresh one at ``step``.

    Every slot (momentum, Adam moments) is zeroed, as in a newly created optimizer (OpenLTH
    creates one per training run), and ``iterations`` is set to ``step`` so the schedule resumes
    there. ``constant_lr`` switches the schedule to a constant rate (fine-tuning).
    """
    opt = model.optimizer
    opt.build(model.trainable_variables)
    for var in opt.variables:
        var.assign(np.zeros(var.shape, dtype=var.dtype.as_numpy_dtype))
    opt.iterations.assign(int(step))
    schedule = opt._learning_rate  # the LotteryLRSchedule given in make_optimizer
    if hasattr(schedule, "override"):
        schedule.override.assign(float(constant_lr or 0.0))
    elif constant_lr is not None:
        raise ValueError("constant_lr needs an optimizer made by make_optimizer")


def set_optimizer_step(model: Any, step: int) -> None:
    """Build the optimizer's variables and set ``iterations`` so schedules resume at ``step``."""
    opt = model.optimizer
    opt.build(model.trainable_variables)
    opt.iterations.assign(int(step))


# ---- data ------------------------------------------------------------------------------------
def batch_indices(train_size: int, batch_size: int, seed: int, start: int, end: int) -> np.ndarray:
    """Example indices of optimizer steps ``start..end-1``: shape (end-start, batch_size).

    Epoch e is a permutation drawn from ``default_rng([seed, e])`` cut into full batches, so the
    batch of any step is known without replaying the ones before it (resume, rewinding).
    """
    per_epoch = train_size // batch_size
    out = np.empty((max(end - start, 0), batch_size), dtype=np.int32)
    step = start
    row = 0
    while step < end:
        epoch, pos = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(train_size)[: per_epoch * batch_size]
        perm = perm.reshape(per_epoch, batch_size)
        take = min(per_epoch - pos, end - step)
        out[row: row + take] = perm[pos: pos + take]
        row += take
        step += take
    return out


class TensorData:
    """The dataset's arrays as tensors, created once per search (not once per level)."""

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray, *, reconstruction: bool = False):
        tf = _tf()
        if reconstruction:  # autoencoders reconstruct their flattened input
            y_train, y_val, y_test = (a.reshape(len(a), -1) for a in (x_train, x_val, x_test))
        self.x = tf.constant(x_train)
        self.y = tf.constant(y_train)
        self.train_size = int(len(x_train))
        self.val = (x_val, y_val)
        self.test = (x_test, y_test)

    @staticmethod
    def _options() -> Any:
        tf = _tf()
        options = tf.data.Options()
        options.autotune.enabled = False  # avoids the post-fit stall (lth-and-tfmot-notes §11)
        options.deterministic = True
        return options

    def train_dataset(self, indices: np.ndarray) -> Any:
        tf = _tf()
        x, y = self.x, self.y
        ds = tf.data.Dataset.from_tensor_slices(indices)
        ds = ds.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
        return ds.prefetch(2).with_options(self._options())

    def eval_dataset(self, which: str, batch_size: int = 1000) -> Any:
        tf = _tf()
        x, y = self.val if which == "val" else self.test
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).with_options(self._options())


# ---- callbacks -------------------------------------------------------------------------------
def recorder(test_data: Any, metric: str | None) -> Any:
    """A callback recording validation metrics per virtual epoch, per-epoch time and test metrics at
    every new best validation loss (the early-stopping point)."""
    keras = _keras()

    class EvalRecorder(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.epoch_seconds: list[float] = []
            self.best: dict[str, float] | None = None

        def on_train_begin(self, logs: Any = None) -> None:
            self.history, self.epoch_seconds, self.best = [], [], None

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.epoch_seconds.append(time.perf_counter() - self._t0)
            logs = dict(logs or {})
            row = {"step": int(self.model.optimizer.iterations.numpy())}
            row.update({k: float(v) for k, v in logs.items()})
            self.history.append(row)
            if "val_loss" in row and (self.best is None or row["val_loss"] < self.best["val_loss"]):
                test = self.model.evaluate(test_data, verbose=0, return_dict=True)
                self.best = {**row, **{f"test_{k}": float(v) for k, v in test.items()}}

    return EvalRecorder()


@dataclass
class RunResult:
    """What one training run produced (the per-level metrics are derived from it)."""

    start_step: int
    end_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best: dict[str, float] | None = None
    test: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def eval_points(start: int, end: int, every: int, extra: Sequence[int] = ()) -> list[int]:
    """Steps after which validation runs: multiples of ``every`` in (start, end], ``end``, extras."""
    first = (start // every + 1) * every
    points = set(range(first, end + 1, every)) | {end}
    points |= {p for p in extra if start < p < end}
    return sorted(points)


def run_training(model: Any, data: TensorData, train: TrainConfig, *, seed: int, start_step: int, end_step: int,
                 eval_every: int, callbacks: Sequence[Any] = (), split_at: Sequence[int] = (),
                 metric: str | None = "accuracy") -> RunResult:
    """Train a compiled ``model`` from ``start_step`` to ``end_step`` (optimizer steps).

    The model's optimizer must already be at ``start_step`` (:func:`set_optimizer_step`).
    ``split_at`` adds validation points (e.g. the rewind step k, so a callback can capture θ_k at
    an epoch end regardless of ``steps_per_execution``).
    """
    points = eval_points(start_step, end_step, eval_every, split_at)
    # Group consecutive chunks of equal length into one fit call each.
    groups: list[tuple[int, int, int]] = []  # (first step, chunk length, number of chunks)
    prev = start_step
    for p in points:
        length = p - prev
        if groups and groups[-1][1] == length and groups[-1][0] + groups[-1][1] * groups[-1][2] == prev:
            groups[-1] = (groups[-1][0], length, groups[-1][2] + 1)
        else:
            groups.append((prev, length, 1))
        prev = p
    val = data.eval_dataset("val") if len(data.val[0]) else None  # no validation set: no early stopping
    test = data.eval_dataset("test")
    result = RunResult(start_step=start_step, end_step=end_step)
    t_start = time.perf_counter()
    epoch = 0
    for first, length, count in groups:
        rec = recorder(test, metric)
        indices = batch_indices(data.train_size, train.batch_size, seed, first, first + length * count)
        model.fit(
            data.train_dataset(indices), epochs=epoch + count, initial_epoch=epoch, steps_per_epoch=length,
            validation_data=val, callbacks=[rec, *callbacks], verbose=0,
        )
        epoch += count
        result.history.extend(rec.history)
        result.epoch_seconds.extend(rec.epoch_seconds)
        if rec.best is not None and (result.best is None or rec.best["val_loss"] < result.best["val_loss"]):
            result.best = rec.best
    result.seconds = time.perf_counter() - t_start
    steps_done = int(model.optimizer.iterations.numpy())
    if steps_done != end_step:
        raise RuntimeError(f"training ended at optimizer step {steps_done}, expected {end_step}")
    result.test = {k: float(v) for k, v in model.evaluate(test, verbose=0, return_dict=True).items()}
    return result
