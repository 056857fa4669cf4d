"""SearchConfig / TrainConfig: serialisation, hashing and every check that must fail before training."""

from __future__ import annotations

import dataclasses

import pytest

from edge_lottery import masks as masks_lib
from edge_lottery.config import (
    CUSTOM_DEFAULTS,
    PATTERNS,
    SCOPES,
    SearchConfig,
    TrainConfig,
    defaults_from_spec,
    resolve,
)
from edge_lottery.errors import ConfigError, DataError, ModelError


def base(**kw) -> SearchConfig:
    return SearchConfig(model="lenet_300_100", dataset="digits", **{"levels": 2, **kw})


def test_registries_agree_with_masks_module():
    assert PATTERNS == masks_lib.PATTERNS
    assert SCOPES == masks_lib.SCOPES


def test_roundtrip_and_stable_hash():
    cfg = base(controls=("reinit",), exclude=("fc2",), train=TrainConfig(epochs=3, lr_milestones=(10, 20)))
    again = SearchConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.hash() == cfg.hash() and len(cfg.hash()) == 16
    assert base(seed=1).hash() != cfg.hash()
    # speed knobs do not change what is computed, so they do not change the hash
    fast = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, jit_compile=False, steps_per_execution=3))
    assert fast.hash() == cfg.hash()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prune_fraction": 1.5}, "prune_fraction: expected a number in (0, 1), received 1.5"),
        ({"prune_fraction": 0.0}, "prune_fraction: expected a number in (0, 1)"),
        ({"prune_fraction_output": -0.1}, "prune_fraction_output"),
        ({"rewind": "sideways"}, "rewind: expected one of weights, lr, finetune, received 'sideways'"),
        ({"scope": "local"}, "scope: expected one of global, layerwise"),
        ({"pattern": "3:4"}, "pattern: expected one of unstructured"),
        ({"controls": ("shuffle",)}, "controls: expected one of reinit, random_prune"),
        ({"rewind_step": -1}, "rewind_step"),
        ({"levels": None, "target_sparsity": 1.0}, "target_sparsity: expected a number in (0, 1)"),
        ({"levels": None, "target_sparsity": 0.6, "pattern": "2:4"}, "unreachable"),
        ({"levels": 3, "pattern": "2:4"}, "levels with pattern 2:4"),
        ({"levels": None, "target_sparsity": 0.999999999, "prune_fraction": 0.01}, "reachable within"),
        ({"levels": 2, "target_sparsity": 0.5}, "not both"),
        ({"levels": None}, "stopping rule"),
    ],
)
def test_invalid_configs_fail_with_one_line(kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        base(**kwargs).validate()
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"optimizer": "rmsprop"}, "optimizer: expected one of sgd, momentum, adam"),
        ({"batch_size": 0}, "batch_size: expected a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"epochs": None, "iterations": None}, "training length"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum with optimizer 'adam'"),
    ],
)
def test_invalid_train_configs(kwargs, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        TrainConfig(**{"epochs": 1, **kwargs}).validate()
    assert fragment in str(info.value)


def test_levels_needed_for_target():
    assert base(levels=None, target_sparsity=0.36, prune_fraction=0.2).levels_needed() == 2
    assert base(levels=None, target_sparsity=0.37, prune_fraction=0.2).levels_needed() == 3
    assert base(levels=None, target_sparsity=0.9, prune_fraction=0.2).levels_needed() == 11


def test_resolve_fills_paper_defaults_and_applies_overrides():
    from edge_lottery.models import get_model_spec

    defaults = defaults_from_spec(get_model_spec("lenet_300_100"))
    cfg = resolve(base(), defaults)
    assert cfg.train.optimizer == "adam" and cfg.train.learning_rate == pytest.approx(1.2e-3)
    assert cfg.train.batch_size == 60 and cfg.train.iterations == 50_000
    assert cfg.prune_fraction == 0.2 and cfg.prune_fraction_output == 0.1 and cfg.keep_output is False
    short = resolve(base(keep_output=True), defaults, train_overrides={"epochs": 2, "batch_size": 32})
    assert short.train.epochs == 2 and short.train.iterations is None and short.train.batch_size == 32
    assert short.keep_output is True
    assert resolve(base(), CUSTOM_DEFAULTS).train.optimizer == "sgd"


def test_model_dependent_checks_fail_before_training(tmp_path):
    from edge_lottery.search import LotteryTicketSearch

    work = tmp_path / "never"
    cases = [
        ({"pattern": "block16x1"}, ConfigError, "at least one full block"),  # 10-unit output layer
        ({"pattern": "2:4", "levels": 1}, ConfigError, "divisible by 4"),  # digits: 64 inputs ok, output 100 ok
        ({"exclude": ("fc1", "fc2", "output")}, ConfigError, "prunable layers"),
        ({"exclude": ("nope",)}, ConfigError, "exclude"),
        ({"rewind_step": 10_000, "epochs": 1}, ConfigError, "rewind_step: expected less than the training length"),
        ({"levels": None, "target_sparsity": 0.999, "first_layer_density": 1.0}, ConfigError, "unreachable"),
    ]
    for kwargs, error, fragment in cases:
        if kwargs.get("pattern") == "2:4":
            continue  # lenet_300_100 on digits fits 2:4 (64, 300, 100 inputs): covered by masks tests
        with pytest.raises(error) as info:
            LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, **{"levels": 1, **kwargs})
        assert fragment in str(info.value), (kwargs, str(info.value))
        assert "\n" not in str(info.value)
    assert not work.exists()  # nothing written, nothing trained
    with pytest.raises(ModelError, match="one of lenet_300_100"):
        LotteryTicketSearch("lenet_9000", "digits", work_dir=work, levels=1)
    with pytest.raises(DataError, match="one of digits"):
        LotteryTicketSearch("lenet_300_100", "digitz", work_dir=work, levels=1)
    with pytest.raises(ConfigError, match="argument"):
        LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, levels=1, epoch=3)


def test_target_sparsity_already_passed_by_a_sparse_user_model(tmp_path):
    import numpy as np
    import tf_keras

    from edge_lottery.data import load_dataset
    from edge_lottery.search import LotteryTicketSearch

    ds = load_dataset("digits")
    model = tf_keras.Sequential([tf_keras.Input(shape=(8, 8, 1)), tf_keras.layers.Flatten(),
                                 tf_keras.layers.Dense(16, name="hidden"), tf_keras.layers.Dense(10, name="out")])
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.where(np.arange(kernel.shape[0] * kernel.shape[1]).reshape(kernel.shape) % 2 == 0,
                           0.0, kernel.numpy()))  # half of the pruned layer is already zero
    data = ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test))
    with pytest.raises(ConfigError, match="already passed"):
        LotteryTicketSearch(model, data, work_dir=tmp_path / "w", target_sparsity=0.4)
    assert not (tmp_path / "w").exists()


def test_first_layer_floor_output_rate_and_exclusions_in_next_masks(tmp_path):
    import numpy as np

    from edge_lottery import masks as masks_lib
    from edge_lottery.search import LotteryTicketSearch

    lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=tmp_path / "w", levels=3, prune_fraction=0.5,
                              first_layer_density=0.9)
    assert lts.excluded == () and set(lts.prunable) == {"fc1/kernel", "fc2/kernel", "output/kernel"}
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in lts.prunable.items()}
    weights["fc1/kernel"] *= 1e-3  # a global ranking would prune fc1 almost entirely
    ones = {k: np.ones(v.shape, np.float32) for k, v in weights.items()}
    new = lts.next_masks(weights, ones)
    dens = masks_lib.layer_densities(new)
    assert dens["fc1/kernel"] == pytest.approx(0.9, abs=1e-3)  # held at the floor
    assert dens["output/kernel"] == pytest.approx(0.9, abs=0.01)  # its own rate (registry default 10 %)
    assert dens["fc2/kernel"] == pytest.approx(0.5, abs=1e-3)  # the rest of the global pool
    assert masks_lib.is_nested(new, ones)
    again = lts.next_masks(weights, new)
    assert masks_lib.layer_densities(again)["fc1/kernel"] == pytest.approx(0.9, abs=1e-3)

    kept = LotteryTicketSearch("lenet_300_100", "digits", work_dir=tmp_path / "k", levels=1, keep_output=True,
                               exclude=("fc2",))
    assert set(kept.prunable) == {"fc1/kernel"} and set(kept.excluded) == {"fc2", "output"}
