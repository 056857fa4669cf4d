"""Invariants of the lottery ticket search, on one small real search (digits, LeNet-300-100, TFMOT).

One module-scoped search (2 levels, both controls, rewind step k=5) is checked from many angles;
separate short searches cover k=0, learning-rate rewinding, block patterns and user models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tf_keras

import edge_lottery  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from edge_lottery import masks as masks_lib
from edge_lottery.errors import WorkDirError
from edge_lottery.search import SUMMARY_FIELDS, LotteryTicketSearch
from edge_lottery.workdir import open_search

FAST = {"jit_compile": False, "steps_per_execution": 10}
MAIN = {"levels": 2, "epochs": 2, "controls": ("reinit", "random_prune"), "rewind_step": 5, **FAST}


class StartWeights(tf_keras.callbacks.Callback):
    """Records every run's weights and masks right before its first training step."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        self.lrs: dict[tuple[str, int], float] = {}
        self.steps: dict[tuple[str, int], int] = {}

    def on_level_begin(self, branch: str, level: int, model) -> None:
        from edge_lottery import tfmot_masks

        self.starts[(branch, level)] = tfmot_masks.snapshot(model, masks=True)
        self.lrs[(branch, level)] = float(np.asarray(model.optimizer.learning_rate))
        self.steps[(branch, level)] = int(model.optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("search") / "work"
    rec = StartWeights()
    lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, callbacks=[rec], **MAIN)
    result = lts.run()
    return lts, result, rec, work


def _level(work: Path, level: int, branch: str = "ticket"):
    d = work / f"level_{level}" if branch == "ticket" else work / "controls" / branch / f"level_{level}"
    with np.load(d / "masks.npz") as m, np.load(d / "weights.npz") as w:
        return {k: m[k] for k in m.files}, {k: w[k] for k in w.files}


def _theta_k(work: Path):
    with np.load(work / "rewind_point.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, int(arrays.pop("__step__"))


def test_masks_nested_and_pruned_weights_zero(main_run):
    _, result, _, work = main_run
    previous = None
    for level in range(3):
        masks, weights = _level(work, level)
        for wid, mask in masks.items():
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert np.all(weights[wid][mask == 0] == 0), (level, wid)
        if previous is not None:
            assert masks_lib.is_nested(masks, previous)
            assert masks_lib.density(masks) < masks_lib.density(previous)
        previous = masks
    for branch in ("reinit", "random_prune"):
        for level in (1, 2):
            masks, weights = _level(work, level, branch)
            for wid, mask in masks.items():
                assert np.all(weights[wid][mask == 0] == 0)


def test_density_follows_prune_fraction(main_run):
    lts, _, _, work = main_run
    cfg = lts.config
    for level in (1, 2):
        prev, _ = _level(work, level - 1)
        new, _ = _level(work, level)
        # fc1 + fc2 share one global ranking at F; the output layer is pruned alone at F_out.
        pool = [k for k in new if not k.startswith("output/")]
        before = sum(int(prev[k].sum()) for k in pool)
        after = sum(int(new[k].sum()) for k in pool)
        assert abs(after - round(before * (1 - cfg.prune_fraction))) <= len(pool)
        out_before, out_after = int(prev["output/kernel"].sum()), int(new["output/kernel"].sum())
        assert abs(out_after - round(out_before * (1 - cfg.prune_fraction_output))) <= 1
    total = sum(m.size for m in new.values())
    pool_size = sum(new[k].size for k in pool)
    expected = (pool_size * (1 - cfg.prune_fraction) ** 2 + new["output/kernel"].size * (1 - cfg.prune_fraction_output) ** 2)
    assert abs(masks_lib.density(new) * total - expected) <= 2 * len(new)


def test_rewound_weights_equal_theta_k_bit_for_bit(main_run):
    _, _, rec, work = main_run
    theta_k, k = _theta_k(work)
    assert k == 5
    for branch in ("ticket", "random_prune"):
        for level in (1, 2):
            start = rec.starts[(branch, level)]
            masks, _ = _level(work, level, branch)
            for key, value in theta_k.items():
                got = start[key]
                if key in masks:
                    np.testing.assert_array_equal(start[key + "#mask"], masks[key])
                    expect = value * masks[key]
                    assert np.array_equal(got, expect), (branch, level, key)
                else:
                    assert np.array_equal(got, value), (branch, level, key)
    # θ_k is not θ_0 (5 Adam steps were taken) and the reinit control starts elsewhere.
    assert not np.array_equal(rec.starts[("ticket", 0)]["fc1/kernel"], theta_k["fc1/kernel"])
    reinit = rec.starts[("reinit", 1)]
    ticket_masks, _ = _level(work, 1)
    assert np.array_equal(reinit["fc1/kernel#mask"], ticket_masks["fc1/kernel"])
    assert not np.array_equal(reinit["fc1/kernel"], theta_k["fc1/kernel"] * ticket_masks["fc1/kernel"])


def test_random_prune_has_ticket_layer_densities(main_run):
    _, _, _, work = main_run
    for level in (1, 2):
        ticket, _ = _level(work, level)
        control, _ = _level(work, level, "random_prune")
        assert not all(np.array_equal(ticket[k], control[k]) for k in ticket)
        for k in ticket:
            assert abs(int(ticket[k].sum()) - int(control[k].sum())) <= 1, k


def test_summary_plot_and_tensorboard(main_run):
    lts, result, _, work = main_run
    summary = json.loads((work / "summary.json").read_text())
    rows = summary["levels"]
    assert [(r["level"], r["branch"]) for r in rows] == [
        (0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_prune"),
        (2, "ticket"), (2, "reinit"), (2, "random_prune")]
    for row in rows:
        for name in SUMMARY_FIELDS:
            assert name in row and row[name] is not None, name
        assert 0 < row["test_accuracy"] <= 1
        assert row["start_step"] == (0 if row["level"] == 0 else 5)
        assert row["end_step"] == lts.total_steps
    assert summary["hyperparameters"]["optimizer"] == "adam"
    assert summary["dataset"]["sha256"] == lts.dataset.sha256
    assert summary["model"]["name"] == "lenet_300_100"
    assert {"tensorflow", "tensorflow-model-optimization", "edge-lottery"} <= set(summary["versions"])
    assert summary["finished"] is True
    png = (work / "accuracy_vs_density.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert any((work / "tensorboard" / "ticket" / "level_1").rglob("events.out.tfevents*"))
    search_json = json.loads((work / "search.json").read_text())
    assert search_json["format"] == "edge-lottery-search/1"
    assert search_json["config_hash"] == lts.config.hash()
    assert result.best.level in (0, 1, 2)


def test_tickets_and_reader_give_the_trained_models(main_run):
    lts, result, _, work = main_run
    import tf_keras

    ticket = result.ticket(2)
    assert result.levels[2].ticket().masks.keys() == ticket.masks.keys()
    assert result.controls["reinit"][0].ticket().branch == "reinit"
    model = ticket.model()
    assert isinstance(model, tf_keras.Model)
    assert not any("prune_low_magnitude" in layer.name for layer in model.layers)
    kernel = model.get_layer("fc1").kernel.numpy()
    assert np.all(kernel[ticket.masks["fc1/kernel"] == 0] == 0)
    logits = model.predict(lts.dataset.x_test, verbose=0)
    acc = float(np.mean(np.argmax(logits, axis=1) == lts.dataset.y_test))
    assert acc == pytest.approx(result.levels[2].test_accuracy, abs=1e-6)
    record = open_search(work)
    assert record.model_name == "lenet_300_100" and record.dataset_name == "digits"
    assert [r["level"] for r in record.levels] == [0, 1, 2]
    assert record.best_level == result.best.level
    again = record.load_model(2)
    assert np.array_equal(again.get_layer("fc1").kernel.numpy(), kernel)
    wrapped = ticket.wrapped_model()
    from edge_lottery import tfmot_masks

    assert tfmot_masks.is_wrapped(wrapped)
    assert np.array_equal(tfmot_masks.get_masks(wrapped)["fc2/kernel"], ticket.masks["fc2/kernel"])


def _tree_state(root: Path) -> dict[str, tuple[float, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_finished_rerun_is_a_noop(main_run):
    lts, result, _, work = main_run
    before = _tree_state(work)
    again = LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, **MAIN).run()
    assert _tree_state(work) == before
    assert again.summary == result.summary


def test_foreign_changed_or_corrupted_work_dirs_are_refused(main_run, tmp_path):
    _, _, _, work = main_run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WorkDirError, match="other files"):
        LotteryTicketSearch("lenet_300_100", "digits", work_dir=foreign, **MAIN).run()
    assert (foreign / "notes.txt").read_text() == "mine" and len(os.listdir(foreign)) == 1

    with pytest.raises(WorkDirError, match="prune_fraction"):
        LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, **{**MAIN, "prune_fraction": 0.5}).run()

    stray = tmp_path / "stray"
    shutil.copytree(work, stray)
    (stray / "level_1" / "extra.bin").write_bytes(b"x")
    with pytest.raises(WorkDirError, match="foreign"):
        LotteryTicketSearch("lenet_300_100", "digits", work_dir=stray, **MAIN).run()

    corrupt = tmp_path / "corrupt"
    shutil.copytree(work, corrupt)
    path = corrupt / "level_1" / "weights.npz"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    before = _tree_state(corrupt)
    with pytest.raises(WorkDirError, match="corrupted"):
        LotteryTicketSearch("lenet_300_100", "digits", work_dir=corrupt, **MAIN).run()
    assert _tree_state(corrupt) == before


def test_learning_rate_rewinding_starts_from_trained_weights(tmp_path):
    rec = StartWeights()
    work = tmp_path / "lr"
    LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, callbacks=[rec], levels=2, epochs=1,
                        rewind="lr", scope="layerwise", **FAST).run()
    for level in (1, 2):
        _, trained_prev = _level(work, level - 1)
        masks, _ = _level(work, level)
        start = rec.starts[("ticket", level)]
        for key, value in trained_prev.items():
            expect = value * masks[key] if key in masks else value
            assert np.array_equal(start[key], expect), (level, key)
    # layer-wise scope: every layer keeps (1-F)^L of its own weights, within one weight.
    masks, _ = _level(work, 2)
    for key, mask in masks.items():
        rate = 0.1 if key.startswith("output/") else 0.2
        expect = mask.size * (1 - rate) ** 2
        assert abs(mask.sum() - expect) <= 2, key


def test_finetune_keeps_trained_weights_at_the_final_learning_rate(tmp_path):
    from edge_lottery.config import TrainConfig
    from edge_lottery.training import lr_at

    rec = StartWeights()
    work = tmp_path / "ft"
    lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, callbacks=[rec], levels=1, epochs=2,
                              rewind="finetune", rewind_step=4, lr_schedule="cosine", warmup_steps=3, **FAST)
    lts.run()
    assert isinstance(lts.train, TrainConfig) and lts.train.lr_schedule == "cosine"
    total = lts.total_steps
    assert rec.steps[("ticket", 0)] == 0 and rec.steps[("ticket", 1)] == 4
    assert rec.lrs[("ticket", 0)] == pytest.approx(lr_at(lts.train, 0, total), rel=1e-5)
    final = lr_at(lts.train, total - 1, total)
    assert 0 < final < 0.01 * lts.train.learning_rate
    assert rec.lrs[("ticket", 1)] == pytest.approx(final, rel=1e-4)
    _, trained0 = _level(work, 0)
    masks, _ = _level(work, 1)
    start = rec.starts[("ticket", 1)]
    for key, value in trained0.items():
        assert np.array_equal(start[key], value * masks[key] if key in masks else value), key
    rows = json.loads((work / "summary.json").read_text())["levels"]
    assert rows[1]["start_step"] == 4 and rows[1]["end_step"] == total


def test_block_pattern_and_rewinding_to_init_k0(tmp_path):
    rec = StartWeights()
    work = tmp_path / "blocks"
    lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=work, callbacks=[rec], levels=2, epochs=1,
                              pattern="block16x1", keep_output=True, rewind_step=0, **FAST)
    lts.run()
    masks, weights = _level(work, 2)
    assert "output/kernel" not in masks  # kept dense: not wrapped at all
    for key, mask in masks.items():
        assert masks_lib.is_block_pattern(mask, "block16x1"), key
        assert np.all(weights[key][mask == 0] == 0)
    assert masks_lib.density(masks) == pytest.approx(0.64, abs=0.01)
    # k = 0: the rewind point is the initialisation, and every level starts from it bit for bit.
    theta, k = _theta_k(work)
    assert k == 0
    from edge_lottery import tfmot_masks
    from edge_lottery.models import build_model

    init = tfmot_masks.snapshot(build_model("lenet_300_100", lts.dataset.input_shape, 10, seed=0))
    assert all(np.array_equal(theta[key], init[key]) for key in init)
    for level in (1, 2):
        masks, _ = _level(work, level)
        start = rec.starts[("ticket", level)]
        for key in init:
            expect = init[key] * masks[key] if key in masks else init[key]
            assert np.array_equal(start[key], expect), (level, key)


def test_user_keras_model_and_array_dataset(tmp_path):
    import tf_keras

    from edge_lottery.data import load_dataset

    ds = load_dataset("digits")
    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential([
        tf_keras.Input(shape=(8, 8, 1)), tf_keras.layers.Flatten(name="flat"),
        tf_keras.layers.Dense(32, activation="relu", name="hidden"), tf_keras.layers.Dense(10, name="logits")])
    before = [w.copy() for w in model.get_weights()]
    data = ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test))
    work = tmp_path / "user"
    result = LotteryTicketSearch(model, data, work_dir=work, target_sparsity=0.3, epochs=2, **FAST).run()
    # F = 0.2: level 1 reaches sparsity 0.2, level 2 0.36 >= 0.3, so the search stops after level 2.
    assert [r.level for r in result.levels] == [0, 1, 2] and result.summary["finished"] is True
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))  # untouched
    theta, _ = _theta_k(work)
    assert np.array_equal(theta["hidden/kernel"], before[0])  # θ_0 is the user's initial weights
    assert (work / "model.json").is_file()
    loaded = open_search(work).load_model(1)
    assert [layer.name for layer in loaded.layers] == ["flat", "hidden", "logits"]
    masks, weights = _level(work, 1)
    assert np.array_equal(loaded.get_layer("hidden").kernel.numpy(), weights["hidden/kernel"])
    assert result.levels[1].density == pytest.approx(0.8, abs=0.01)
    assert "logits/kernel" not in masks  # user models keep the output layer dense by default


def test_search_stops_when_only_guarded_blocks_are_left(tmp_path):
    """Neuron pruning of a 4-unit layer at 50 %: 2 units, then 1, which the collapse guard keeps;
    the search then stops short of its target (with a warning) instead of training level 3 with
    level 2's masks."""
    import tf_keras

    from edge_lottery.data import load_dataset

    ds = load_dataset("digits")
    tf_keras.utils.set_random_seed(4)
    model = tf_keras.Sequential([
        tf_keras.Input(shape=(8, 8, 1)), tf_keras.layers.Flatten(name="flat"),
        tf_keras.layers.Dense(4, activation="relu", name="hidden"), tf_keras.layers.Dense(10, name="logits")])
    data = ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test))
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("edge_lottery.search")  # the CLI stops edge_lottery propagating to root
    logger.addHandler(handler)
    try:
        result = LotteryTicketSearch(model, data, work_dir=tmp_path / "w", target_sparsity=0.9, pattern="neuron",
                                     prune_fraction=0.5, epochs=1, **FAST).run()
    finally:
        logger.removeHandler(handler)
    assert [r.level for r in result.levels] == [0, 1, 2] and result.summary["finished"] is True
    assert [r.density for r in result.levels] == pytest.approx([1.0, 0.5, 0.25])
    assert any("level 3 would prune nothing" in r.getMessage() for r in records)


@pytest.mark.parametrize(("model", "jit", "expected"), [
    ("lenet_300_100", None, True), ("ds_cnn", None, False), ("lenet_300_100", False, False)])
def test_xla_by_default_only_for_models_without_convolutions(tmp_path, model, jit, expected):
    """XLA's CPU convolutions ran 1.3-11x slower than TensorFlow's kernels (depthwise worst), its
    dense layers 2.2x faster: jit_compile=None picks per model, True/False are obeyed."""
    lts = LotteryTicketSearch(model, "digits", work_dir=tmp_path / "w", levels=0, epochs=1, jit_compile=jit,
                              steps_per_execution=10)
    lts.run()
    assert lts.train.jit_compile is jit
    assert lts._wrapped.jit_compile is expected


def test_global_pruning_of_mobilenet_1x1_convs_would_empty_the_widest():
    """docs/pruning-patterns.md's example, on the real initial weights: one global level of 68 %
    over mobilenet_v1_025's 1x1 convs leaves ds13_pointwise (256->256) with only the guard's block."""
    from edge_lottery.models import build_model

    model = build_model("mobilenet_v1_025", (96, 96, 3), 10, seed=0)
    w = {f"{ly.name}/kernel": ly.kernel.numpy() for ly in model.layers if ly.name.endswith("_pointwise")}
    masks = masks_lib.compute_masks(w, None, fraction=0.684, scope="global", pattern="block16x4")
    assert masks["ds13_pointwise/kernel"].sum() == 64  # one 16x4 block
    assert all(m.sum() > 64 for k, m in masks.items() if k != "ds13_pointwise/kernel")
