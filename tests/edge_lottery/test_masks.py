"""Invariants of edge_lottery.masks (pure numpy, no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_lottery import masks as M
from edge_lottery.errors import ConfigError

BLOCKY = ("unstructured", "block16x1", "block16x4", "block1x16", "neuron")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# Independent reference implementations (loops, written from the definitions)
# ------------------------------------------------------------------------------------------
def ref_blocks(shape, pattern):
    """List of (row slice, col slice) of the [inputs, outputs] matrix, one per block."""
    n_out = shape[-1]
    n_in = int(np.prod(shape[:-1]))
    if pattern == "neuron":
        bo, bi = 1, n_in
    else:
        bo, bi = {"unstructured": (1, 1), "block16x1": (16, 1), "block16x4": (16, 4), "block1x16": (1, 16)}[
            pattern
        ]
    return [
        (slice(r, min(r + bi, n_in)), slice(c, min(c + bo, n_out)))
        for r in range(0, n_in, bi)
        for c in range(0, n_out, bo)
    ]


def ref_is_blocky(mask, pattern):
    mat = mask.reshape(-1, mask.shape[-1])
    return all(len(np.unique(mat[r, c])) == 1 for r, c in ref_blocks(mask.shape, pattern))


def max_block(shape, pattern):
    return max((r.stop - r.start) * (c.stop - c.start) for r, c in ref_blocks(shape, pattern))


def live_blocks(mask, pattern):
    mat = mask.reshape(-1, mask.shape[-1])
    return sum(bool(mat[r, c].any()) for r, c in ref_blocks(mask.shape, pattern))


def guarded(mask, pattern):
    """Size of the one block the collapse guard may have kept (0 if the layer has more)."""
    return float(mask.sum()) if live_blocks(mask, pattern) == 1 else 0.0


# ------------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------------
@st.composite
def weight_sets(draw, pattern="unstructured"):
    """1-3 tensors (Dense or Conv) that can take ``pattern``, with random normal values."""
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        if draw(st.booleans()):
            shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        else:
            shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 24)))
        scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
        out[f"l{i}/kernel"] = (scale * rng.normal(size=shape)).astype(np.float32)
    try:
        M.check_pattern_fits(out, pattern)
    except ConfigError:
        assume(False)
    return out


def run_levels(weights, levels, **kw):
    history = [None]
    for _ in range(levels):
        history.append(M.compute_masks(weights, history[-1], **kw))
    return history[1:]


# ------------------------------------------------------------------------------------------
# Nesting, density and block structure
# ------------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), pattern=st.sampled_from(BLOCKY), scope=st.sampled_from(M.SCOPES),
       fraction=st.sampled_from([0.2, 0.5, 0.8]), levels=st.integers(1, 4))
def test_masks_nested_shapes_binary_blocky(data, pattern, scope, fraction, levels):
    weights = data.draw(weight_sets(pattern))
    history = run_levels(weights, levels, fraction=fraction, scope=scope, pattern=pattern)
    previous = {k: np.ones_like(v) for k, v in weights.items()}
    for masks in history:
        assert list(masks) == list(weights)
        for key, m in masks.items():
            assert m.shape == weights[key].shape and m.dtype == np.float32
            assert set(np.unique(m)) <= {0.0, 1.0}
            assert M.is_block_pattern(m, pattern)
            assert ref_is_blocky(m, pattern)
        assert M.is_nested(masks, previous)
        assert all(np.all(masks[key] <= previous[key]) for key in masks)
        previous = masks


@FAST
@given(data=st.data(), pattern=st.sampled_from(BLOCKY), fraction=st.sampled_from([0.2, 0.5]),
       levels=st.integers(1, 5))
def test_layerwise_density_follows_geometric_schedule(data, pattern, fraction, levels):
    """Each level prunes F x remaining within half a block; after L levels the error is bounded by
    (B/2) * sum((1-F)^i), i.e. within one block for the first levels. The collapse guard may keep
    a layer's last block, after which the schedule no longer applies to that layer."""
    weights = data.draw(weight_sets(pattern))
    history = run_levels(weights, levels, fraction=fraction, scope="layerwise", pattern=pattern)
    for key, w in weights.items():
        b = max_block(w.shape, pattern)
        remaining = float(w.size)
        for level, masks in enumerate(history, start=1):
            kept = float(masks[key].sum())
            assert remaining - kept <= fraction * remaining + b / 2 + 1e-9
            assert remaining - kept + guarded(masks[key], pattern) >= fraction * remaining - b / 2 - 1e-9
            if guarded(masks[key], pattern):
                break
            remaining = kept
            bound = b / 2 * sum((1 - fraction) ** i for i in range(level))
            assert abs(kept - w.size * (1 - fraction) ** level) <= bound + 1e-9
            if sum((1 - fraction) ** i for i in range(level)) <= 2:  # always for F >= 0.5
                assert abs(kept - w.size * (1 - fraction) ** level) <= b  # within one block


@FAST
@given(data=st.data(), pattern=st.sampled_from(BLOCKY), fraction=st.sampled_from([0.2, 0.5]),
       levels=st.integers(1, 5))
def test_global_density_follows_geometric_schedule(data, pattern, fraction, levels):
    weights = data.draw(weight_sets(pattern))
    history = run_levels(weights, levels, fraction=fraction, scope="global", pattern=pattern)
    b = max(max_block(w.shape, pattern) for w in weights.values())
    total = sum(w.size for w in weights.values())
    remaining = float(total)
    for level, masks in enumerate(history, start=1):
        kept = M.density(masks) * total
        given_back = sum(guarded(m, pattern) for m in masks.values())
        assert remaining - kept <= fraction * remaining + b / 2 + 1e-6
        assert remaining - kept + given_back >= fraction * remaining - b / 2 - 1e-6
        if given_back:
            break  # the guard kept blocks; later levels follow the schedule from there on
        remaining = kept
        bound = b / 2 * sum((1 - fraction) ** i for i in range(level))
        assert abs(kept - total * (1 - fraction) ** level) <= bound + 1e-6


def test_lenet_shaped_density_exact_for_unstructured():
    """Big layers: 5 levels of 20 % land on 0.8^5 within a couple of weights per layer."""
    rng = np.random.default_rng(1)
    w = {"fc1/kernel": rng.normal(size=(784, 300)), "fc2/kernel": rng.normal(size=(300, 100))}
    for scope in M.SCOPES:
        masks = run_levels(w, 5, fraction=0.2, scope=scope)[-1]
        assert M.density(masks) == pytest.approx(0.8**5, abs=3 / (784 * 300 + 300 * 100))
        if scope == "layerwise":
            for key, d in M.layer_densities(masks).items():
                assert d * w[key].size == pytest.approx(0.8**5 * w[key].size, abs=2)


def block_scores(weight, mask, pattern):
    mat, alive = np.abs(weight).reshape(-1, weight.shape[-1]), mask.reshape(-1, weight.shape[-1])
    out = []
    for r, c in ref_blocks(weight.shape, pattern):
        a = alive[r, c] > 0
        if not a.any():
            continue
        vals = mat[r, c][a]
        out.append((np.sqrt((vals**2).sum()) if pattern == "neuron" else vals.mean(), (r, c)))
    return out


@FAST
@given(data=st.data(), pattern=st.sampled_from(BLOCKY), fraction=st.sampled_from([0.3, 0.6]))
def test_global_threshold_is_one_threshold(data, pattern, fraction):
    """Every pruned block scores <= every kept block, across layers (one global threshold)."""
    weights = data.draw(weight_sets(pattern))
    previous = run_levels(weights, 1, fraction=0.3, scope="global", pattern=pattern)[0]
    masks = M.compute_masks(weights, previous, fraction=fraction, scope="global", pattern=pattern)
    pruned, kept = [], []
    for key, w in weights.items():
        new = masks[key].reshape(-1, w.shape[-1])
        for score, (r, c) in block_scores(w, previous[key], pattern):
            if not new[r, c].any():
                pruned.append(score)
            elif not guarded(masks[key], pattern):  # the collapse guard's block is exempt
                kept.append(score)
    if pruned and kept:
        assert max(pruned) <= min(kept) + 1e-6


def test_global_scope_lets_a_large_layer_keep_more():
    rng = np.random.default_rng(0)
    w = {"small/kernel": rng.normal(size=(50, 40)), "big/kernel": 4 * rng.normal(size=(50, 40))}
    g = M.layer_densities(M.compute_masks(w, None, fraction=0.5, scope="global"))
    lw = M.layer_densities(M.compute_masks(w, None, fraction=0.5, scope="layerwise"))
    assert g["big/kernel"] > 0.7 and g["small/kernel"] < 0.3
    assert g["big/kernel"] + g["small/kernel"] == pytest.approx(1.0, abs=1e-3)
    assert lw["big/kernel"] == lw["small/kernel"] == 0.5


@FAST
@given(data=st.data(), pattern=st.sampled_from(BLOCKY), scope=st.sampled_from(M.SCOPES),
       fraction=st.sampled_from([0.5, 0.9, 0.99]), levels=st.integers(1, 6))
def test_no_layer_is_ever_emptied(data, pattern, scope, fraction, levels):
    """Layer collapse guard: every layer keeps a live block, however hard it is pruned."""
    weights = data.draw(weight_sets(pattern))
    previous = None
    for masks in run_levels(weights, levels, fraction=fraction, scope=scope, pattern=pattern):
        for key, m in masks.items():
            assert live_blocks(m, pattern) >= 1, key
            if previous is not None and live_blocks(previous[key], pattern) == 1:
                np.testing.assert_array_equal(m, previous[key])  # the last block is never pruned
        previous = masks


def test_global_pruning_keeps_the_best_block_of_a_small_scale_layer():
    """MobileNet's case: a 1x1 conv whose weights are small next to the others' loses all its
    blocks to the global threshold; it keeps its best block and nothing else changes."""
    rng = np.random.default_rng(0)
    w = {"big/kernel": rng.normal(size=(1, 1, 256, 256)), "small/kernel": 0.01 * rng.normal(size=(1, 1, 64, 64))}
    w["small/kernel"][0, 0, 8:12, 32:48] = 0.05  # its best 16x4 block: outputs 32-47 x inputs 8-11
    masks = M.compute_masks(w, None, fraction=0.6, scope="global", pattern="block16x4")
    expected = np.zeros(w["small/kernel"].shape, np.float32)
    expected[0, 0, 8:12, 32:48] = 1
    np.testing.assert_array_equal(masks["small/kernel"], expected)
    big_pruned = w["big/kernel"].size - masks["big/kernel"].sum()
    assert abs(big_pruned - (0.6 * (65536 + 4096) - 4096)) <= 32  # the threshold is unchanged


def test_layerwise_pruning_keeps_the_last_of_two_blocks():
    """The first 1x1 conv of mobilenet_v1_025 (8->16) has two 16x4 blocks; 90 % would take both."""
    w = {"pw/kernel": np.concatenate([np.full((1, 1, 4, 16), 0.1), np.full((1, 1, 4, 16), 0.3)], axis=2)}
    first = M.compute_masks(w, None, fraction=0.9, scope="layerwise", pattern="block16x4")["pw/kernel"]
    assert first[0, 0, :4].sum() == 0 and first[0, 0, 4:].min() == 1
    second = M.compute_masks(w, {"pw/kernel": first}, fraction=0.9, scope="layerwise", pattern="block16x4")
    np.testing.assert_array_equal(second["pw/kernel"], first)


# ------------------------------------------------------------------------------------------
# Orientation of blocks
# ------------------------------------------------------------------------------------------
def test_block16x1_is_sixteen_consecutive_outputs_of_one_input():
    # Dense kernel [in=2, out=32]: block (input 0, outputs 0-15) is large.
    w = np.full((2, 32), 0.1, np.float32)
    w[0, :16] = 5.0
    mask = M.compute_masks({"d/kernel": w}, None, fraction=0.75, scope="layerwise", pattern="block16x1")["d/kernel"]
    expected = np.zeros((2, 32), np.float32)
    expected[0, :16] = 1
    np.testing.assert_array_equal(mask, expected)
    # TFLite layout [out, in]: the kept block is 16 consecutive rows of one column.
    tfl = mask.T
    assert tfl[:16, 0].all() and not tfl[16:, 0].any() and not tfl[:, 1].any()


def test_block1x16_is_one_output_of_sixteen_consecutive_inputs():
    w = np.full((32, 2), 0.1, np.float32)
    w[16:, 1] = 5.0
    mask = M.compute_masks({"d/kernel": w}, None, fraction=0.75, scope="layerwise", pattern="block1x16")["d/kernel"]
    expected = np.zeros((32, 2), np.float32)
    expected[16:, 1] = 1
    np.testing.assert_array_equal(mask, expected)
    tfl = mask.T  # TFLite [out, in]: one row, 16 consecutive columns
    assert tfl[1, 16:].all() and tfl.sum() == 16


def test_conv_block1x16_runs_along_c_in_then_kernel_position():
    # Conv [kh=1, kw=2, cin=16, cout=2]: inputs are (kw, cin) with cin fastest.
    w = np.full((1, 2, 16, 2), 0.1, np.float32)
    w[0, 1, :, 0] = 3.0  # kernel position 1, all 16 input channels, output 0
    mask = M.compute_masks({"c/kernel": w}, None, fraction=0.75, scope="layerwise", pattern="block1x16")["c/kernel"]
    assert mask.sum() == 16 and mask[0, 1, :, 0].all()
    tfl = np.transpose(mask, (3, 0, 1, 2)).reshape(2, -1)  # TFLite [out, kh*kw*cin]
    assert tfl[0, 16:32].all() and tfl.sum() == 16


def test_edge_blocks_are_partial_and_compete_by_mean():
    # 20 outputs: one full 16-block and a 4-wide edge block with the larger mean.
    w = np.ones((1, 20), np.float32)
    w[0, 16:] = 2.0
    mask = M.compute_masks({"d/kernel": w}, None, fraction=0.5, scope="layerwise", pattern="block16x1")["d/kernel"]
    # Target: 10 elements. The full block has the lower mean and goes first; pruning it (16, off
    # by 6) is closer to the target than pruning nothing (off by 10).
    np.testing.assert_array_equal(mask[0], np.r_[np.zeros(16), np.ones(4)])
    assert M.is_block_pattern(mask, "block16x1")
    bad = mask.copy()
    bad[0, 17] = 0
    assert not M.is_block_pattern(bad, "block16x1") and not ref_is_blocky(bad, "block16x1")


def test_block16x4_groups_four_consecutive_inputs():
    w = np.full((8, 16), 0.1, np.float32)
    w[4:8, :] = 2.0
    mask = M.compute_masks({"d/kernel": w}, None, fraction=0.5, scope="layerwise", pattern="block16x4")["d/kernel"]
    assert mask[4:8].all() and not mask[:4].any()


# ------------------------------------------------------------------------------------------
# 2:4 and neuron
# ------------------------------------------------------------------------------------------
@FAST
@given(seed=st.integers(0, 2**32 - 1), conv=st.booleans(), cin=st.sampled_from([4, 8, 12]), cout=st.integers(1, 9))
def test_two_four_keeps_two_largest_of_every_four_inputs(seed, conv, cin, cout):
    rng = np.random.default_rng(seed)
    shape = (3, 3, cin, cout) if conv else (cin, cout)
    w = rng.normal(size=shape).astype(np.float32)
    mask = M.compute_masks({"x/kernel": w}, None, fraction=0.2, pattern="2:4")["x/kernel"]
    groups = mask.reshape(-1, cin // 4, 4, cout)
    assert np.all(groups.sum(axis=2) == 2)
    assert M.density({"x": mask}) == 0.5 and M.is_block_pattern(mask, "2:4")
    a = np.abs(w).reshape(-1, cin // 4, 4, cout)
    kept_min = np.where(groups == 1, a, np.inf).min(axis=2)
    pruned_max = np.where(groups == 0, a, -np.inf).max(axis=2)
    assert np.all(kept_min >= pruned_max)
    np.testing.assert_array_equal(M.nm_mask(w, 2, 4), mask)


def test_two_four_is_one_shot_and_needs_divisible_inputs():
    w = {"x/kernel": np.random.default_rng(0).normal(size=(8, 4))}
    first = M.compute_masks(w, None, fraction=0.5, pattern="2:4")
    with pytest.raises(ConfigError, match="one-shot"):
        M.compute_masks(w, first, fraction=0.5, pattern="2:4")
    # An all-ones previous mask is "nothing pruned yet" and is accepted.
    ones = {"x/kernel": np.ones((8, 4))}
    np.testing.assert_array_equal(M.compute_masks(w, ones, fraction=0.5, pattern="2:4")["x/kernel"], first["x/kernel"])
    with pytest.raises(ConfigError, match=r"conv1/kernel.*divisible by 4.*3"):
        M.check_pattern_fits({"conv1/kernel": np.zeros((3, 3, 3, 8))}, "2:4")
    with pytest.raises(ConfigError, match="n:m"):
        M.nm_mask(np.zeros((4, 4)), 4, 4)


def test_neuron_prunes_whole_columns_by_l2_norm():
    # Column 0: one large weight (L2 3, mean 0.75); column 1: all ones (L2 2, mean 1).
    w = np.array([[3, 1, 5], [0, 1, 5], [0, 1, 5], [0, 1, 5]], np.float32)
    mask = M.compute_masks({"d/kernel": w}, None, fraction=0.34, scope="layerwise", pattern="neuron")["d/kernel"]
    np.testing.assert_array_equal(mask, np.array([[1, 0, 1]] * 4, np.float32))
    conv = np.random.default_rng(0).normal(size=(3, 3, 4, 10))
    m = M.compute_masks({"c/kernel": conv}, None, fraction=0.5, pattern="neuron")["c/kernel"]
    per_filter = m.reshape(-1, 10)
    assert np.all(per_filter.min(axis=0) == per_filter.max(axis=0))
    assert per_filter[0].sum() == 5


# ------------------------------------------------------------------------------------------
# Overrides, scores, controls
# ------------------------------------------------------------------------------------------
def test_layer_fractions_override_and_zero_keeps_layer():
    rng = np.random.default_rng(0)
    w = {"a/kernel": rng.normal(size=(30, 20)), "b/kernel": 10 * rng.normal(size=(30, 20)), "out/kernel": rng.normal(size=(20, 10))}
    prev = M.compute_masks(w, None, fraction=0.5, scope="global", layer_fractions={"out/kernel": 0.2})
    d = M.layer_densities(prev)
    assert d["out/kernel"] == pytest.approx(0.8)
    assert (d["a/kernel"] + d["b/kernel"]) / 2 == pytest.approx(0.5, abs=1e-3) and d["b/kernel"] > d["a/kernel"]
    nxt = M.compute_masks(w, prev, fraction=0.5, layer_fractions={"out/kernel": 0.0})
    np.testing.assert_array_equal(nxt["out/kernel"], prev["out/kernel"])
    assert M.density({k: nxt[k] for k in ("a/kernel", "b/kernel")}) == pytest.approx(0.25, abs=1e-3)
    # An override of 0.0 exempts a layer from the pattern's shape requirement.
    small = {"a/kernel": rng.normal(size=(4, 32)), "out/kernel": rng.normal(size=(32, 10))}
    m = M.compute_masks(small, None, fraction=0.5, pattern="block16x1", layer_fractions={"out/kernel": 0.0})
    assert m["out/kernel"].all()


def test_scores_replace_magnitudes():
    w = {"d/kernel": np.arange(1, 11, dtype=np.float32).reshape(10, 1)}
    scores = {"d/kernel": -np.arange(1, 11, dtype=np.float32).reshape(10, 1)}  # reversed ranking
    m = M.compute_masks(w, None, fraction=0.5, scores=scores)["d/kernel"].ravel()
    np.testing.assert_array_equal(m, np.r_[np.ones(5), np.zeros(5)])


def test_ties_are_deterministic():
    w = {"b/kernel": np.ones((16, 16)), "a/kernel": np.ones((16, 16))}
    m1 = M.compute_masks(w, None, fraction=0.3, pattern="block16x4")
    m2 = M.compute_masks(dict(reversed(list(w.items()))), None, fraction=0.3, pattern="block16x4")
    for k in w:
        np.testing.assert_array_equal(m1[k], m2[k])
    assert M.density(m1) == pytest.approx(0.7, abs=64 / 512)


@FAST
@given(data=st.data(), pattern=st.sampled_from([*BLOCKY, "2:4"]), seed=st.integers(0, 1000))
def test_random_control_matches_density_and_pattern(data, pattern, seed):
    if pattern == "2:4":
        rng = np.random.default_rng(seed)
        weights = {"l0/kernel": rng.normal(size=(8, 24)), "l1/kernel": rng.normal(size=(3, 3, 4, 6))}
        masks = M.compute_masks(weights, None, fraction=0.5, pattern="2:4")
    else:
        weights = data.draw(weight_sets(pattern))
        masks = run_levels(weights, 2, fraction=0.4, scope="global", pattern=pattern)[-1]
    rnd = M.random_masks_like(masks, pattern, np.random.default_rng(seed))
    for key, m in masks.items():
        r = rnd[key]
        assert r.shape == m.shape and M.is_block_pattern(r, pattern)
        b = max_block(m.shape, pattern if pattern != "2:4" else "unstructured")
        # A live layer stays live: a control of one block may be up to a block off.
        assert r.sum() > 0
        assert abs(r.sum() - m.sum()) <= (b if pattern != "2:4" and live_blocks(r, pattern) == 1 else b / 2)


def test_random_control_positions_differ():
    rng = np.random.default_rng(0)
    w = {"fc1/kernel": rng.normal(size=(64, 64)), "fc2/kernel": rng.normal(size=(64, 32))}
    masks = run_levels(w, 3, fraction=0.2)[-1]
    a = M.random_masks_like(masks, "unstructured", np.random.default_rng(1))
    b = M.random_masks_like(masks, "unstructured", np.random.default_rng(2))
    for key in w:
        assert a[key].sum() == masks[key].sum()
        assert not np.array_equal(a[key], masks[key]) and not np.array_equal(a[key], b[key])
    again = M.random_masks_like(masks, "unstructured", np.random.default_rng(1))
    assert all(np.array_equal(a[k], again[k]) for k in w)


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------
W = {"fc1/kernel": np.ones((8, 32), np.float32)}


@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, 1.5, -0.1, float("nan"), "0.2", True, None])
def test_fraction_validated(bad):
    with pytest.raises(ConfigError, match=r"fraction: expected a number in \(0, 1\), received"):
        M.compute_masks(W, None, fraction=bad)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"scope": "per-layer"}, r"scope: expected one of global, layerwise, received 'per-layer'"),
        ({"pattern": "4:8"}, r"pattern: expected one of .*2:4.*received '4:8'"),
        ({"layer_fractions": {"nope/kernel": 0.1}}, r"layer_fractions key: expected one of \['fc1/kernel'\]"),
        ({"layer_fractions": {"fc1/kernel": 1.0}}, r"layer_fractions\['fc1/kernel'\]: expected a number in \[0, 1\)"),
        ({"scores": {"fc1/kernel": np.ones((8, 31))}}, r"scores\['fc1/kernel'\] shape: expected \(8, 32\), received \(8, 31\)"),
        ({"pattern": "block16x4", "previous": None, "weights": {"head/kernel": np.ones((8, 10))}},
         r"pattern block16x4 on 'head/kernel'.*16 outputs x 4 inputs, received '10 outputs x 8 inputs'"),
    ],
)
def test_arguments_validated(kwargs, pattern):
    kwargs = dict(kwargs)
    weights = kwargs.pop("weights", W)
    previous = kwargs.pop("previous", None)
    with pytest.raises(ConfigError, match=pattern):
        M.compute_masks(weights, previous, fraction=0.2, **kwargs)


def test_previous_validated():
    with pytest.raises(ConfigError, match=r"previous weight ids: expected \['fc1/kernel'\], received .*extra \['x'\]"):
        M.compute_masks(W, {"fc1/kernel": np.ones((8, 32)), "x": np.ones(2)}, fraction=0.2)
    with pytest.raises(ConfigError, match=r"previous\['fc1/kernel'\] shape"):
        M.compute_masks(W, {"fc1/kernel": np.ones((32, 8))}, fraction=0.2)
    with pytest.raises(ConfigError, match=r"previous\['fc1/kernel'\]: expected a 0/1 mask"):
        M.compute_masks(W, {"fc1/kernel": np.full((8, 32), 0.5)}, fraction=0.2)
    with pytest.raises(ConfigError, match="finite"):
        M.compute_masks({"fc1/kernel": np.full((2, 2), np.nan)}, None, fraction=0.2)
    with pytest.raises(ConfigError, match="weights"):
        M.compute_masks({}, None, fraction=0.2)


def test_block_shape_and_helpers():
    assert M.block_shape("block16x1") == (16, 1)
    assert M.block_shape("block16x4") == (16, 4)
    assert M.block_shape("block1x16") == (1, 16)
    assert M.block_shape("unstructured") == (1, 1)
    assert M.block_shape("2:4") is None
    assert M.block_shape("neuron") == (1, -1)
    with pytest.raises(ConfigError, match="pattern"):
        M.block_shape("8x1")
    a = {"x": np.array([1, 0, 1, 1.0])}
    assert M.density(a) == 0.75 and M.layer_densities(a) == {"x": 0.75}
    assert M.is_nested({"x": np.array([1, 0, 0, 1])}, a)
    assert not M.is_nested({"x": np.array([0, 1, 0, 0])}, a)
    assert not M.is_nested({"y": np.array([1, 0, 1, 1])}, a)


def test_mask_type_checks_itself():
    m = M.Mask("d/kernel", np.ones((4, 16)), pattern="block16x1")
    assert m.density == 1.0 and m.shape == (4, 16) and m.array.dtype == np.float32
    with pytest.raises(ValueError):
        m.array[0, 0] = 0  # read-only
    half = np.ones((4, 16))
    half[0] = 0
    assert M.Mask("d/kernel", half, "block16x1").is_nested_in(m)
    with pytest.raises(ConfigError, match="0/1"):
        M.Mask("d/kernel", np.full((2, 2), 0.3))
    bad = np.ones((4, 16))
    bad[0, 3] = 0
    with pytest.raises(ConfigError, match="block16x1"):
        M.Mask("d/kernel", bad, "block16x1")
    with pytest.raises(ConfigError, match=r"shape: expected \(4, 16\)"):
        m.check_fits(np.ones((16, 4)))


def test_masks_module_does_not_import_tensorflow():
    code = "import sys, edge_lottery.masks; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
