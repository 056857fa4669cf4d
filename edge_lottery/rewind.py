"""Capture θ_k during dense training, and decide where each level's retraining starts.

Rewinding (Frankle et al. 2019/2020) resets the surviving weights to their values at optimizer step
k of the dense run and retrains from k with a fresh optimizer whose step counter is k, so the
learning-rate schedule resumes where it was. Learning-rate rewinding (Renda et al. 2020) keeps the
previous level's trained weights and replays the same schedule segment (steps k..T; from scratch
when k = 0). Fine-tuning keeps the trained weights and trains for the same number of steps at the
schedule's final learning rate. The two controls (random re-initialisation, random pruning) start
like the ticket but change the initial weights or the mask.

θ_k holds *all* non-mask variables (kernels, biases, BatchNorm statistics), copied with
``np.copy`` semantics by :func:`edge_lottery.tfmot_masks.snapshot` (wrapping shares variables with
the source model, lth-and-tfmot-notes §2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lottery import _tf_env  # noqa: F401
from edge_lottery.config import TrainConfig
from edge_lottery.errors import ConfigError, expected
from edge_lottery.training import lr_at

REWIND_MODES = ("weights", "lr", "finetune")


def rewind_point_callback(k: int) -> Any:
    """A Keras callback that snapshots the model when ``optimizer.iterations == k``.

    k = 0 is captured in ``on_train_begin``. Otherwise the capture happens at the end of a batch
    execution or epoch where the step equals k; :func:`edge_lottery.training.run_training` puts an
    epoch boundary at k (``split_at``), so this works with any ``steps_per_execution``. Missing k
    is an error at ``on_train_end``, never a silently wrong ticket.
    """
    import tf_keras

    from edge_lottery import tfmot_masks

    class RewindPoint(tf_keras.callbacks.Callback):
        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = int(step)
            self.snapshot: dict[str, np.ndarray] | None = None

        def on_train_begin(self, logs: Any = None) -> None:
            # A run may consist of several fit calls; only the first (no snapshot yet) resets.
            self._maybe_capture()

        def _maybe_capture(self) -> None:
            if self.snapshot is None and int(self.model.optimizer.iterations.numpy()) == self.step:
                self.snapshot = tfmot_masks.snapshot(self.model)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._maybe_capture()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._maybe_capture()

        def on_train_end(self, logs: Any = None) -> None:
            if self.snapshot is None and int(self.model.optimizer.iterations.numpy()) > self.step:
                raise RuntimeError(f"rewind point k={self.step} was passed without a snapshot")

    return RewindPoint(k)


@dataclass(frozen=True)
class StartState:
    """Where a retraining run starts: its weights (all non-mask variables), first step, LR override."""

    weights: Mapping[str, np.ndarray]
    start_step: int
    constant_lr: float | None
    description: str


def start_state(mode: str, branch: str, *, theta_k: Mapping[str, np.ndarray], k: int,
                previous: Mapping[str, np.ndarray], fresh: Mapping[str, np.ndarray] | None,
                train: TrainConfig, total_steps: int) -> StartState:
    """The start of a level's training run for rewind ``mode`` and ``branch``.

    * ticket / random_prune: weights → θ_k at step k; lr → previous level's trained weights at step k;
      finetune → previous trained weights, constant final LR, T - k steps.
    * reinit: fresh initial weights (another seed) trained from step k like weight rewinding, in
      every mode (OpenLTH's reinitialisation control).
    """
    if mode not in REWIND_MODES:
        raise ConfigError(expected("rewind", "one of " + ", ".join(REWIND_MODES), mode))
    if branch == "reinit":
        if fresh is None:
            raise ValueError("reinit needs fresh initial weights")
        return StartState(fresh, k, None, f"fresh initialisation, schedule from step {k}")
    if mode == "weights":
        return StartState(theta_k, k, None, f"θ_{k}, schedule from step {k}")
    if mode == "lr":
        return StartState(previous, k, None, f"previous level's weights, schedule replayed from step {k}")
    final_lr = lr_at(train, total_steps - 1, total_steps)
    return StartState(previous, k, final_lr, f"previous level's weights, constant LR {final_lr:g}")
