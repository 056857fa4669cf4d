"""Pruning masks for the lottery ticket search: scores, thresholds, patterns, random controls.

Pure numpy on purpose: mask arithmetic is the part of the search that must be exactly right, so it
lives where it can be tested in milliseconds (with hypothesis) and without TensorFlow. TFMOT only
*carries* the masks computed here (see :mod:`edge_lottery.tfmot_masks`); TFMOT's own mask update
is per layer and cannot do global thresholds, output-channel blocks on conv kernels or neuron
pruning, which is why the selection is our own code.

Conventions
-----------
Masks and weights are dicts keyed by a weight id ``"<layer name>/<attribute>"`` (``"fc1/kernel"``)
holding arrays in Keras layout. Every tensor is viewed as a matrix ``[inputs, outputs]``: the last
axis is the output axis and all others are flattened (C order) into the input axis. For a Dense
kernel ``[in, out]`` that is the kernel itself; for a Conv kernel ``[kh, kw, in, out]`` it is
``[kh*kw*in, out]``, the transpose of TFLite's ``[out, kh*kw*in]``, with ``in`` fastest, so
consecutive inputs of TFLite's 1x16 blocks are consecutive rows here.

A block is ``(outputs, inputs)`` consecutive elements of that matrix: ``block16x1`` is 16
consecutive output channels x 1 input (what the sparse delegate runs fastest),
``block1x16`` is 1 output x 16 consecutive inputs (TFLite's converter layout). Blocks tile the
matrix from index 0; the last block along an axis may be partial and competes with the mean of its
elements, so it is neither favoured nor penalised for its size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edge_lottery.errors import ConfigError, expected

PATTERNS = ("unstructured", "block16x1", "block16x4", "block1x16", "2:4", "neuron")
SCOPES = ("global", "layerwise")

# (outputs, inputs) per block; "neuron" is a whole output column and is resolved per tensor.
_BLOCKS: dict[str, tuple[int, int]] = {
    "unstructured": (1, 1),
    "block16x1": (16, 1),
    "block16x4": (16, 4),
    "block1x16": (1, 16),
}
_NM: dict[str, tuple[int, int]] = {"2:4": (2, 4)}


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------
def _check_pattern(pattern: object) -> str:
    if pattern not in PATTERNS:
        raise ConfigError(expected("pattern", f"one of {', '.join(PATTERNS)}", pattern))
    return pattern  # type: ignore[return-value]


def _check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise ConfigError(expected("scope", f"one of {', '.join(SCOPES)}", scope))
    return scope  # type: ignore[return-value]


def _check_fraction(name: str, value: object, *, allow_zero: bool) -> float:
    lo = "[0, 1)" if allow_zero else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(expected(name, f"a number in {lo}", value))
    v = float(value)
    ok = (0.0 <= v < 1.0) if allow_zero else (0.0 < v < 1.0)
    if not ok or math.isnan(v):
        raise ConfigError(expected(name, f"a number in {lo}", value))
    return v


def _as_array(what: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        raise ConfigError(expected(what, "an array of rank >= 1", f"a scalar {value!r}"))
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ConfigError(expected(what, "a numeric array", f"dtype {arr.dtype}"))
    return arr


def _check_binary(what: str, arr: np.ndarray) -> None:
    if arr.dtype == np.bool_:
        return
    if not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)].ravel()[:3].tolist()
        raise ConfigError(expected(what, "a 0/1 mask", f"values such as {bad}"))


def _check_same_layout(
    what: str, ref: Mapping[str, np.ndarray], other: Mapping[str, object], *, binary: bool
) -> dict[str, np.ndarray]:
    """``other`` must have exactly ``ref``'s ids and shapes; returns it as arrays."""
    missing = [k for k in ref if k not in other]
    extra = [k for k in other if k not in ref]
    if missing or extra:
        raise ConfigError(
            expected(f"{what} weight ids", sorted(ref), f"missing {missing}, extra {extra}")
        )
    out = {}
    for key, w in ref.items():
        arr = _as_array(f"{what}[{key!r}]", other[key])
        if arr.shape != w.shape:
            raise ConfigError(expected(f"{what}[{key!r}] shape", tuple(w.shape), tuple(arr.shape)))
        if binary:
            _check_binary(f"{what}[{key!r}]", arr)
        out[key] = arr
    return out


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
def block_shape(pattern: str) -> tuple[int, int] | None:
    """``(outputs, inputs)`` per block of ``pattern``; ``None`` for n:m patterns.

    ``neuron`` returns ``(1, -1)``: one output column spanning all inputs of its tensor.
    """
    _check_pattern(pattern)
    if pattern in _NM:
        return None
    if pattern == "neuron":
        return (1, -1)
    return _BLOCKS[pattern]


def as_matrix(array: np.ndarray) -> np.ndarray:
    """The ``[inputs, outputs]`` matrix view of a weight tensor (a reshape, no copy)."""
    arr = np.asarray(array)
    if arr.ndim == 0:
        raise ConfigError(expected("weight", "an array of rank >= 1", "a scalar"))
    return arr.reshape(-1, arr.shape[-1])


def _blocks_for(pattern: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """Block ``(outputs, inputs)`` resolved for one tensor shape."""
    if pattern == "neuron":
        n_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return (1, max(n_in, 1))
    return _BLOCKS[pattern]


def _nm_group_axis_len(shape: tuple[int, ...]) -> int:
    """Length of the axis n:m groups run along: the innermost input axis (TFLite's C_in)."""
    return shape[-2]


def check_pattern_fits(weights: Mapping[str, np.ndarray], pattern: str) -> None:
    """Raise ConfigError if some tensor's shape cannot take ``pattern``.

    Blocks need at least one full block (a 10-unit output layer cannot hold a 16x1 block); n:m
    needs the innermost input axis (Dense inputs, Conv C_in) divisible by m, because groups run
    along it exactly as in TFMOT's ``is_pruned_m_by_n`` and the TFLite layout.
    """
    _check_pattern(pattern)
    for key, value in weights.items():
        shape = tuple(np.shape(value))
        if len(shape) == 0:
            raise ConfigError(expected(f"weight {key!r}", "an array of rank >= 1", "a scalar"))
        if pattern in _NM:
            n, m = _NM[pattern]
            if len(shape) < 2 or shape[-2] % m != 0:
                got = shape[-2] if len(shape) >= 2 else "rank 1"
                raise ConfigError(
                    expected(
                        f"pattern {pattern} on {key!r} (shape {shape})",
                        f"an innermost input dimension divisible by {m}",
                        got,
                    )
                )
            continue
        bo, bi = _blocks_for(pattern, shape)
        n_out = shape[-1]
        n_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        if n_out < bo or n_in < bi:
            raise ConfigError(
                expected(
                    f"pattern {pattern} on {key!r} (shape {shape})",
                    f"at least one full block of {bo} outputs x {bi} inputs",
                    f"{n_out} outputs x {n_in} inputs",
                )
            )


def _pad_blocks(mat: np.ndarray, bo: int, bi: int) -> np.ndarray:
    """Zero-pad ``mat [I, O]`` to whole blocks and view it as ``[nI, bi, nO, bo]``."""
    n_in, n_out = mat.shape
    gi, go = -(-n_in // bi), -(-n_out // bo)
    if gi * bi == n_in and go * bo == n_out:
        padded = mat
    else:
        padded = np.zeros((gi * bi, go * bo), dtype=mat.dtype)
        padded[:n_in, :n_out] = mat
    return padded.reshape(gi, bi, go, bo)


def _expand_blocks(keep: np.ndarray, bo: int, bi: int, shape: tuple[int, ...]) -> np.ndarray:
    """Block decisions ``[nI, nO]`` -> element mask of ``shape``."""
    n_out = shape[-1]
    n_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    full = np.repeat(np.repeat(keep, bi, axis=0), bo, axis=1)[:n_in, :n_out]
    return full.reshape(shape)


@dataclass
class _LayerBlocks:
    """One tensor's candidate blocks: score, number of live elements, geometry."""

    key: str
    shape: tuple[int, ...]
    bo: int
    bi: int
    grid: tuple[int, int]
    score: np.ndarray  # [nI*nO] flattened block scores
    alive: np.ndarray  # [nI*nO] live elements per block


def _layer_blocks(key: str, score: np.ndarray, prev: np.ndarray, pattern: str) -> _LayerBlocks:
    shape = tuple(score.shape)
    bo, bi = _blocks_for(pattern, shape)
    s = as_matrix(score).astype(np.float64)
    a = as_matrix(prev).astype(np.float64)
    a_blocks = _pad_blocks(a, bo, bi)
    alive = a_blocks.sum(axis=(1, 3))
    if pattern == "neuron":
        # Neurons compete by the L2 norm of their live incoming weights (Li et al. filter norm).
        sq = _pad_blocks(s * s * a, bo, bi).sum(axis=(1, 3))
        blk = np.sqrt(sq)
    else:
        # Mean over live elements so that partial edge blocks compete fairly.
        tot = _pad_blocks(s * a, bo, bi).sum(axis=(1, 3))
        blk = np.divide(tot, alive, out=np.zeros_like(tot), where=alive > 0)
    return _LayerBlocks(key, shape, bo, bi, alive.shape, blk.ravel(), alive.ravel())


def _select(layers: list[_LayerBlocks], fraction: float) -> dict[str, np.ndarray]:
    """Prune the lowest-scoring live blocks of ``layers`` jointly (one threshold).

    The pruned element count is the prefix of blocks (ascending score) whose cumulative size is
    closest to ``fraction x live elements`` (ties: the smaller prefix). Ties between equal scores
    break on (layer position, block position), so the result is deterministic. A layer that
    would lose all its live blocks keeps its best one (see the collapse guard below).
    Returns per-layer boolean "keep" decisions over blocks.
    """
    scores, sizes, lidx, bidx = [], [], [], []
    for i, lb in enumerate(layers):
        live = np.flatnonzero(lb.alive > 0)
        scores.append(lb.score[live])
        sizes.append(lb.alive[live])
        lidx.append(np.full(live.size, i, dtype=np.int64))
        bidx.append(live)
    keep = {lb.key: lb.alive > 0 for lb in layers}
    if not scores:
        return keep
    sc = np.concatenate(scores)
    sz = np.concatenate(sizes)
    li = np.concatenate(lidx)
    bi = np.concatenate(bidx)
    if sc.size == 0:
        return keep
    target = fraction * float(sz.sum())
    # Candidates are concatenated in (layer, block) order, so a stable sort breaks ties on it.
    order = np.argsort(sc, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(sz[order])])
    k = int(np.argmin(np.abs(cum - target)))
    pruned = order[:k]
    for i, lb in enumerate(layers):
        mine = pruned[li[pruned] == i]
        if mine.size and mine.size == np.count_nonzero(lb.alive):
            # Never empty a layer: it would cut the network, so every later activation is a
            # constant (layer collapse, Tanaka et al. 2020). Global magnitude pruning does this
            # to wide layers whose initial scale is small (e.g. 256->256 1x1 convs in
            # MobileNet), layerwise pruning to layers of a few blocks. Keep the best one.
            mine = mine[:-1]
        keep[lb.key][bi[mine]] = False
    return keep


def nm_mask(w: np.ndarray, n: int, m: int, *, scores: np.ndarray | None = None) -> np.ndarray:
    """Keep the ``n`` largest |w| of every ``m`` consecutive inputs, for every output.

    Groups run along the innermost input axis (Dense inputs, Conv C_in), as in TFLite's
    ``[C_out, H, W, C_in]`` layout and TFMOT's ``is_pruned_m_by_n`` (where ``(2, 4)`` counts
    *zeros*; for 2:4 both readings coincide). Ties keep the earlier input.
    """
    arr = _as_array("w", w)
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer)) and 0 < n < m):
        raise ConfigError(expected("n:m", "integers with 0 < n < m", f"{n}:{m}"))
    if arr.ndim < 2 or arr.shape[-2] % m != 0:
        got = arr.shape[-2] if arr.ndim >= 2 else f"rank {arr.ndim}"
        raise ConfigError(
            expected(f"{n}:{m} on shape {arr.shape}", f"innermost input dim divisible by {m}", got)
        )
    s = np.abs(arr) if scores is None else np.asarray(scores)
    shape = arr.shape
    c_in, c_out = shape[-2], shape[-1]
    g = s.reshape(-1, c_in // m, m, c_out).astype(np.float64)
    # Stable sort of -score: larger first, earlier index first among equals.
    order = np.argsort(-g, axis=2, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(m).reshape(1, 1, m, 1), axis=2)
    return (ranks < n).astype(np.float32).reshape(shape)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def compute_masks(
    weights: Mapping[str, np.ndarray],
    previous: Mapping[str, np.ndarray] | None,
    *,
    fraction: float,
    scope: str = "global",
    pattern: str = "unstructured",
    layer_fractions: Mapping[str, float] | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Masks of the next pruning level: prune ``fraction`` of the weights that remain.

    Only live blocks are candidates, so the result is nested in ``previous``. ``global`` uses one
    magnitude ranking across all layers not listed in ``layer_fractions``; ``layerwise`` prunes
    ``fraction`` of each layer's own live weights; layers in ``layer_fractions`` are always pruned
    on their own at their own rate (0.0 keeps them as they are). ``scores`` replaces |w| as the
    ranking criterion (e.g. |w_final| - |w_init|); the block score is the mean over live
    elements, or the L2 norm of the column for ``neuron``.

    No layer is emptied: where the ranking would prune all of a layer's live blocks, its best block
    stays (an empty layer disconnects the network). Such a level prunes up to one block per layer
    less than ``fraction``, and a layer down to one block is pruned no further.

    ``2:4`` ignores ``fraction`` and ``scope``: it reaches density 0.5 in one step and cannot be
    applied on top of a previous 2:4 level.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError(expected("weights", "a non-empty mapping of weight id -> array", weights))
    fraction = _check_fraction("fraction", fraction, allow_zero=False)
    _check_scope(scope)
    _check_pattern(pattern)
    w = {}
    for key, value in weights.items():
        arr = _as_array(f"weights[{key!r}]", value)
        if not np.all(np.isfinite(arr)):
            raise ConfigError(expected(f"weights[{key!r}]", "finite values", "NaN or inf"))
        w[key] = arr
    prev = (
        {k: np.ones(a.shape, np.float32) for k, a in w.items()}
        if previous is None
        else {k: a.astype(np.float32) for k, a in _check_same_layout("previous", w, previous, binary=True).items()}
    )
    lf: dict[str, float] = {}
    for key, value in (layer_fractions or {}).items():
        if key not in w:
            raise ConfigError(expected("layer_fractions key", f"one of {sorted(w)}", key))
        lf[key] = _check_fraction(f"layer_fractions[{key!r}]", value, allow_zero=True)
    sc = w if scores is None else _check_same_layout("scores", w, scores, binary=False)
    sc = {k: np.abs(v) if scores is None else np.asarray(v, dtype=np.float64) for k, v in sc.items()}
    for key, arr in sc.items():
        if not np.all(np.isfinite(arr)):
            raise ConfigError(expected(f"scores[{key!r}]", "finite values", "NaN or inf"))

    active = {k: v for k, v in w.items() if lf.get(k, fraction) > 0.0}
    check_pattern_fits(active, pattern)

    out: dict[str, np.ndarray] = {}
    if pattern in _NM:
        n, m = _NM[pattern]
        for key in w:
            if key not in active:
                out[key] = prev[key].copy()
                continue
            if not np.all(prev[key] == 1):
                raise ConfigError(
                    expected(
                        f"previous mask of {key!r} for pattern {pattern}",
                        f"all ones ({pattern} is a one-shot pattern that reaches density "
                        f"{n / m:g} in one step; it cannot be applied again)",
                        f"density {float(prev[key].mean()):.4g}",
                    )
                )
            out[key] = nm_mask(w[key], n, m, scores=sc[key])
        return out

    layers = {k: _layer_blocks(k, sc[k], prev[k], pattern) for k in w}
    keep: dict[str, np.ndarray] = {}
    order = sorted(w)  # tie-break order independent of dict insertion order
    if scope == "global":
        joint = [layers[k] for k in order if k not in lf]
        keep.update(_select(joint, fraction))
    for k in order:
        if k in lf or scope == "layerwise":
            rate = lf.get(k, fraction)
            keep.update(_select([layers[k]], rate) if rate > 0 else {k: layers[k].alive > 0})
    for key in w:
        lb = layers[key]
        blocks = keep[key].reshape(lb.grid)
        out[key] = (_expand_blocks(blocks, lb.bo, lb.bi, lb.shape) * prev[key]).astype(np.float32)
    return out


def random_masks_like(
    masks: Mapping[str, np.ndarray], pattern: str, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Random-pruning control: per layer the same density (within one block) at random positions.

    The result has ``pattern``'s structure, so a random control is compared with a ticket of the
    same shape of sparsity. For ``2:4`` each group keeps ``n`` random inputs (layers that are
    all ones stay all ones).
    """
    _check_pattern(pattern)
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(expected("rng", "a numpy.random.Generator", type(rng).__name__))
    out: dict[str, np.ndarray] = {}
    for key, value in masks.items():
        mask = _as_array(f"masks[{key!r}]", value)
        _check_binary(f"masks[{key!r}]", mask)
        mask = mask.astype(np.float32)
        live = float(mask.sum())
        if live == mask.size:
            out[key] = np.ones(mask.shape, np.float32)
            continue
        if pattern in _NM:
            n, m = _NM[pattern]
            check_pattern_fits({key: mask}, pattern)
            out[key] = nm_mask(mask, n, m, scores=rng.random(mask.shape))
            continue
        check_pattern_fits({key: mask}, pattern)
        bo, bi = _blocks_for(pattern, mask.shape)
        sizes = _pad_blocks(np.ones(as_matrix(mask).shape), bo, bi).sum(axis=(1, 3))
        flat = sizes.ravel()
        perm = rng.permutation(flat.size)
        cum = np.concatenate([[0.0], np.cumsum(flat[perm])])
        k = max(int(np.argmin(np.abs(cum - live))), 1)  # a live layer stays live, as in _select
        keep = np.zeros(flat.size, dtype=bool)
        keep[perm[:k]] = True
        out[key] = _expand_blocks(keep.reshape(sizes.shape), bo, bi, mask.shape).astype(np.float32)
    return out


def density(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of prunable weights that remain, over all tensors together."""
    if not masks:
        raise ConfigError(expected("masks", "a non-empty mapping", masks))
    total = sum(int(np.size(m)) for m in masks.values())
    kept = sum(float(np.count_nonzero(m)) for m in masks.values())
    return kept / total


def layer_densities(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Fraction of weights that remain, per weight id."""
    return {k: float(np.count_nonzero(m)) / max(int(np.size(m)), 1) for k, m in masks.items()}


def is_nested(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> bool:
    """True when ``new`` has ``old``'s ids and shapes and keeps nothing that ``old`` pruned."""
    if set(new) != set(old):
        return False
    for key, a in new.items():
        a, b = np.asarray(a), np.asarray(old[key])
        if a.shape != b.shape or np.any((a != 0) & (b == 0)):
            return False
    return True


def is_block_pattern(mask: np.ndarray, pattern: str) -> bool:
    """True when ``mask`` is made of whole blocks of ``pattern`` (edge blocks may be partial).

    For ``2:4`` it checks that every group of 4 consecutive inputs keeps at most 2.
    """
    _check_pattern(pattern)
    arr = np.asarray(mask)
    if arr.ndim == 0:
        return False
    nz = arr != 0
    if pattern in _NM:
        n, m = _NM[pattern]
        if arr.ndim < 2 or arr.shape[-2] % m != 0:
            return False
        groups = nz.reshape(-1, arr.shape[-2] // m, m, arr.shape[-1])
        return bool(np.all(groups.sum(axis=2) <= n))
    bo, bi = _blocks_for(pattern, arr.shape)
    mat = as_matrix(nz).astype(np.int64)
    ones = _pad_blocks(mat, bo, bi).sum(axis=(1, 3))
    sizes = _pad_blocks(np.ones_like(mat), bo, bi).sum(axis=(1, 3))
    return bool(np.all((ones == 0) | (ones == sizes)))


@dataclass(frozen=True)
class Mask:
    """A checked mask of one weight tensor: 0/1 float32, the tensor's shape, an optional pattern.

    The search passes plain dicts of arrays; this type is for code that wants the checks made
    once at the boundary (loading masks from disk, user-supplied masks).
    """

    weight_id: str
    array: np.ndarray
    pattern: str = "unstructured"

    def __post_init__(self) -> None:
        arr = _as_array(f"mask {self.weight_id!r}", self.array)
        _check_binary(f"mask {self.weight_id!r}", arr)
        _check_pattern(self.pattern)
        arr = arr.astype(np.float32)
        arr.setflags(write=False)
        object.__setattr__(self, "array", arr)
        if not is_block_pattern(arr, self.pattern):
            raise ConfigError(
                expected(f"mask {self.weight_id!r}", f"whole {self.pattern} blocks", "a mask that splits blocks")
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def density(self) -> float:
        return float(np.count_nonzero(self.array)) / self.array.size

    def check_fits(self, weight: np.ndarray) -> None:
        """Raise ConfigError unless ``weight`` has this mask's shape."""
        if tuple(np.shape(weight)) != self.shape:
            raise ConfigError(expected(f"weight {self.weight_id!r} shape", self.shape, tuple(np.shape(weight))))

    def is_nested_in(self, other: Mask) -> bool:
        return self.shape == other.shape and not np.any((self.array != 0) & (other.array == 0))
