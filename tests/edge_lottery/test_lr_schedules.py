"""Learning-rate schedules: formulas at known steps, TF schedule == pure-Python ``lr_at``, the model
registry's published schedules reaching the TrainConfig of a search, errors, old records."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import edge_lottery  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from edge_lottery.config import (
    LR_SCHEDULES,
    LRSchedule,
    SearchConfig,
    TrainConfig,
    defaults_from_spec,
    resolve,
)
from edge_lottery.errors import ConfigError
from edge_lottery.models import MODELS, get_model_spec
from edge_lottery.training import lr_at, make_schedule

TOTAL = 1000


def train(**kw) -> TrainConfig:
    return TrainConfig(**{"iterations": TOTAL, "learning_rate": 0.5, **kw}).validate()


CASES = {
    "constant": train(),
    "cosine": train(lr_schedule="cosine"),
    "cosine+warmup": train(lr_schedule="cosine", warmup_steps=10),
    "step": train(lr_schedule="step", lr_milestones=(100, 250), lr_gamma=0.2),
    "exponential/epoch": train(lr_schedule="exponential", lr_gamma=0.9, lr_decay_steps=37),
    "exponential/step": train(lr_schedule="exponential", lr_gamma=0.999),
    "inv": train(lr_schedule="inv", lr_gamma=1e-3, lr_power=0.75),
    "inv+warmup": train(lr_schedule="inv", lr_gamma=1e-3, lr_power=0.75, warmup_steps=5),
}


def test_every_schedule_kind_has_a_case():
    assert {name.split("+")[0].split("/")[0] for name in CASES} == set(LR_SCHEDULES)


@pytest.mark.parametrize(
    ("name", "step", "value"),
    [
        ("constant", 0, 0.5), ("constant", 999, 0.5),
        ("cosine", 0, 0.5), ("cosine", 500, 0.25), ("cosine", 1000, 0.0),
        ("cosine+warmup", 0, 0.05), ("cosine+warmup", 4, 0.25), ("cosine+warmup", 10, 0.5),
        ("step", 99, 0.5), ("step", 100, 0.1), ("step", 249, 0.1), ("step", 250, 0.02), ("step", 999, 0.02),
        ("exponential/epoch", 36, 0.5), ("exponential/epoch", 37, 0.45), ("exponential/epoch", 74, 0.5 * 0.81),
        ("exponential/step", 0, 0.5), ("exponential/step", 10, 0.5 * 0.999 ** 10),
        ("inv", 0, 0.5), ("inv", 1000, 0.5 * 2 ** -0.75), ("inv", 3000, 0.5 * 4 ** -0.75),
        ("inv+warmup", 0, 0.1), ("inv+warmup", 5, 0.5 * 1.005 ** -0.75),
    ],
)
def test_lr_at_known_steps(name, step, value):
    assert lr_at(CASES[name], step, TOTAL) == pytest.approx(value, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", list(CASES))
def test_tf_schedule_equals_lr_at(name):
    cfg = CASES[name]
    schedule = make_schedule(cfg, TOTAL)
    steps = np.unique(np.r_[np.arange(0, 60), np.arange(60, 1200, 7), [36, 37, 73, 74, 99, 100, 249, 250]])
    import tensorflow as tf

    got = np.array([float(schedule(tf.constant(int(s), tf.int64))) for s in steps])
    want = np.array([lr_at(cfg, int(s), TOTAL) for s in steps])
    # float32 in TF: relative agreement, plus an absolute slack of 1e-7 of the base rate where
    # cosine's 1 + cos(pi t) cancels near the end of training.
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7 * cfg.learning_rate)
    # get_config / from_config (what Keras saves with an optimizer) rebuilds the same schedule.
    again = type(schedule).from_config(schedule.get_config())
    assert float(again(tf.constant(123, tf.int64))) == float(schedule(tf.constant(123, tf.int64)))


# ---- the registry's schedules --------------------------------------------------------------
def _resolved(model: str, train_size: int, **overrides) -> TrainConfig:
    defaults = defaults_from_spec(get_model_spec(model))
    cfg = resolve(SearchConfig(model=model, dataset="digits", levels=1), defaults,
                  train_overrides=overrides or None, train_size=train_size)
    return cfg.train


def test_every_registry_schedule_is_structured_and_described():
    for name in MODELS:
        schedule = get_model_spec(name).defaults.lr_schedule
        assert isinstance(schedule, LRSchedule) and schedule.validate() is schedule
        assert schedule.description, name
        assert LRSchedule.from_dict(schedule.to_dict()) == schedule


def test_ds_cnn_piecewise_schedule_in_epochs():
    t = _resolved("ds_cnn", 1000)  # batch 100: 10 steps per epoch
    assert (t.lr_schedule, t.lr_milestones, t.epochs) == ("step", (120, 240), 36)
    total = t.total_steps(1000)
    for step, lr in ((0, 5e-4), (119, 5e-4), (120, 1e-4), (239, 1e-4), (240, 2e-5), (total - 1, 2e-5)):
        assert lr_at(t, step, total) == pytest.approx(lr, rel=1e-12), step
    # A smaller batch doubles the steps per epoch; the milestones stay at epochs 12 and 24.
    assert _resolved("ds_cnn", 1000, batch_size=50).lr_milestones == (240, 480)


def test_mobilenet_piecewise_schedule_in_epochs():
    t = _resolved("mobilenet_v1_025", 320)  # batch 32: 10 steps per epoch
    total = t.total_steps(320)
    got = [lr_at(t, s, total) for s in (0, 199, 200, 299, 300, total - 1)]
    assert got == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4], rel=1e-12)


def test_resnet8_decays_once_per_epoch():
    t = _resolved("resnet8", 100)  # batch 32: 3 steps per epoch (the last partial batch is dropped)
    assert (t.lr_schedule, t.lr_decay_steps, t.lr_gamma) == ("exponential", 3, 0.99)
    total = t.total_steps(100)
    for epoch in (0, 1, 7, 499):
        for step in range(3 * epoch, 3 * epoch + 3):
            assert lr_at(t, step, total) == pytest.approx(1e-3 * 0.99 ** epoch, rel=1e-12)


def test_lenet5_caffe_inv_schedule():
    t = _resolved("lenet5", 1000)
    assert (t.lr_schedule, t.lr_gamma, t.lr_power, t.iterations) == ("inv", 1e-4, 0.75, 10_000)
    for step in (0, 1, 5000, 9999):
        assert lr_at(t, step, 10_000) == pytest.approx(0.01 * (1 + 1e-4 * step) ** -0.75, rel=1e-12)
    # The same per-step schedule does not depend on the training set size.
    assert _resolved("lenet5", 50) == t


def test_constant_registry_models_keep_their_hash_fields():
    t = _resolved("lenet_300_100", 1000)
    assert t.lr_schedule == "constant" and "lr_power" not in t.to_dict() and "lr_decay_steps" not in t.to_dict()


def test_overrides_and_explicit_train_configs():
    # A learning-rate override scales the published schedule (its factors are relative).
    t = _resolved("ds_cnn", 1000, learning_rate=1e-2)
    assert lr_at(t, 120, t.total_steps(1000)) == pytest.approx(2e-3, rel=1e-12)
    # Setting any schedule field replaces the published schedule entirely.
    own = _resolved("ds_cnn", 1000, lr_schedule="cosine")
    assert (own.lr_schedule, own.lr_milestones, own.lr_gamma) == ("cosine", (), 0.1)
    assert _resolved("ds_cnn", 1000, lr_schedule="constant").lr_schedule == "constant"
    # An explicit TrainConfig is taken as given (it replaces every default, the schedule too).
    defaults = defaults_from_spec(get_model_spec("resnet8"))
    mine = TrainConfig(optimizer="adam", learning_rate=1e-3, epochs=2)
    cfg = resolve(SearchConfig(model="resnet8", dataset="digits", levels=1, train=mine), defaults, train_size=100)
    assert cfg.train == mine


def test_search_trains_with_the_published_schedule(tmp_path):
    from edge_lottery.search import LotteryTicketSearch

    lts = LotteryTicketSearch("ds_cnn", "digits", work_dir=tmp_path / "never", levels=1, epochs=30)
    per_epoch = lts.train.steps_per_epoch(len(lts.dataset.x_train))
    assert lts.train.lr_schedule == "step" and lts.train.lr_milestones == (12 * per_epoch, 24 * per_epoch)
    assert lts.config.hash() != dataclasses.replace(
        lts.config, train=dataclasses.replace(lts.train, lr_schedule="constant", lr_milestones=())).hash()
    import tensorflow as tf

    from edge_lottery.training import make_optimizer

    schedule = make_optimizer(lts.train, lts.total_steps)._learning_rate
    for step, lr in ((0, 5e-4), (12 * per_epoch - 1, 5e-4), (12 * per_epoch, 1e-4), (24 * per_epoch, 2e-5)):
        assert float(schedule(tf.constant(step, tf.int64))) == pytest.approx(lr, rel=1e-6), step


# ---- errors and old records ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"lr_schedule": "linear"}, "lr_schedule: expected one of constant, cosine, step, exponential, inv, "
                                    "received 'linear'"),
        ({"lr_schedule": "inv", "lr_power": 0}, "lr_power: expected a positive number, received 0"),
        ({"lr_schedule": "exponential", "lr_decay_steps": 0}, "lr_decay_steps: expected a positive integer"),
        ({"lr_schedule": "exponential", "lr_decay_steps": 2.5}, "lr_decay_steps: expected a positive integer"),
        ({"lr_schedule": "inv", "lr_gamma": -1e-4}, "lr_gamma: expected a positive number"),
    ],
)
def test_bad_schedule_values_fail_with_one_line(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        train(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_registry_schedules_fail_with_one_line():
    for schedule, fragment in (
        (LRSchedule(kind="poly"), "LR schedule kind: expected one of constant"),
        (LRSchedule(kind="step", unit="week"), "LR schedule unit: expected one of step, epoch, received 'week'"),
        (LRSchedule(kind="step", unit="epoch", milestones=(3,)), "steps per epoch: expected a number"),
    ):
        with pytest.raises(ConfigError) as info:
            schedule.train_fields()
        assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="LRSchedule keys"):
        LRSchedule.from_dict({"kind": "step", "epochs": 3})
    # resolve needs the training set size to convert a per-epoch schedule.
    with pytest.raises(ConfigError, match="steps per epoch"):
        resolve(SearchConfig(model="resnet8", dataset="digits", levels=1), defaults_from_spec(get_model_spec("resnet8")))


def test_records_written_before_the_new_fields_load_with_the_same_hash():
    # A TrainConfig dict as recorded before lr_power / lr_decay_steps existed.
    old = {"optimizer": "adam", "learning_rate": 0.0012, "momentum": 0.0, "batch_size": 60, "epochs": None,
           "iterations": 50000, "weight_decay": 0.0, "lr_schedule": "step", "lr_milestones": [100],
           "lr_gamma": 0.1, "warmup_steps": 0, "eval_every": None, "jit_compile": True, "steps_per_execution": 50}
    cfg = SearchConfig.from_dict({"model": "lenet_300_100", "dataset": "digits", "levels": 2, "train": old})
    assert cfg.train.lr_power == 1.0 and cfg.train.lr_decay_steps == 1
    assert cfg.train.to_dict() == old
    # The hash the code before these fields gave this configuration (computed with that code).
    assert cfg.hash() == "5f8ad18293b3d2fc"
    new = dataclasses.replace(cfg.train, lr_schedule="inv", lr_milestones=(), lr_power=0.75)
    assert TrainConfig.from_dict(new.to_dict()) == new and new.to_dict()["lr_power"] == 0.75
    assert not math.isnan(lr_at(new, 10, 100))
