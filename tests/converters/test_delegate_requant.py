"""The vectorised int8 requantization epilogues (AVX-512, AVX2) equal the scalar reference bit for bit.

The kernels' epilogue is where int8 time goes for layers with few channels, so it is hand-vectorised
with a shortened (but exact) form of TFLite's SaturatingRoundingDoublingHighMul; this test holds
every kernel set this CPU can run against an independent Python model of TFLite's arithmetic, over
random and edge-case accumulators, multipliers and shifts, in all three rounding modes.
"""

from __future__ import annotations

import ctypes
import zlib

import numpy as np
import pytest

import converters.delegate as cd

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MODES = {"double_away": 0, "double_up": 1, "single": 2}


def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def _srdhm(a: int, b: int) -> int:
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    v = ab + nudge
    return v // 2**31 if v >= 0 else -((-v) // 2**31)  # truncation toward zero


def _rdbpot(x: int, e: int, away: bool) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if away and x < 0 else 0)
    return (x >> e) + (1 if rem > thr else 0)


def reference(acc: int, bias: int, mult: int, shift: int, mode: str, zp: int, lo: int, hi: int) -> int:
    x = _wrap32(acc + bias)
    if mode == "single":
        t = 31 - shift
        v = (x * mult + (1 << (t - 1))) >> t
        v = min(max(v, INT32_MIN), INT32_MAX)
    else:
        ls, rs = max(shift, 0), max(-shift, 0)
        v = _rdbpot(_srdhm(_wrap32(x << ls), mult), rs, mode == "double_away")
    return min(max(_wrap32(v + zp), lo), hi)  # the offset is added in (wrapping) int32, as in C


def _lib():
    lib = ctypes.CDLL(str(cd.library_path()))
    fn = lib.edge_sparse_delegate_requant_check
    p32 = ctypes.POINTER(ctypes.c_int32)
    fn.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, p32, p32, p32, p32, ctypes.c_int32,
                   ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_int8)]
    fn.restype = ctypes.c_char_p
    return fn


def _cases(rng: np.random.Generator, n: int):
    edge_acc = [0, 1, -1, 2, -2, INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1, 2**30, -(2**30), 2**16, -(2**16)]
    edge_mult = [0, 1, 2**30, 2**30 + 1, INT32_MAX, INT32_MAX - 1, 1 << 24]
    acc = np.concatenate([np.array(edge_acc * 7, np.int64),
                          rng.integers(INT32_MIN, INT32_MAX, n // 2, endpoint=True),
                          rng.integers(-(2**20), 2**20, n // 2)])
    m = len(acc)
    mult = rng.integers(2**30, 2**31, m)  # what QuantizeMultiplier produces for non-zero scales
    mult[: len(edge_mult) * 13] = np.repeat(edge_mult, 13)[: min(m, len(edge_mult) * 13)]
    shift = rng.integers(-31, 31, m)
    shift[:: 5] = rng.integers(-12, 3, len(shift[:: 5]))  # the shifts real models have
    shift[:64] = np.arange(64) % 62 - 31  # every shift at least once
    bias = np.where(rng.random(m) < 0.5, 0, rng.integers(-(2**24), 2**24, m))
    bias[:3] = [INT32_MAX, INT32_MIN, 1]  # acc + bias wraps like the C int32 addition
    return acc, bias, mult, shift


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shifts", ["all", "fusable"])
def test_vector_epilogue_equals_reference(isa, mode, shifts):
    """"fusable": every shift in [-22, -1], as real layers have, so the fused-rounding fast path runs
    (EdgeEpilogue.fused); "all": any shift, so it cannot."""
    fn = _lib()
    rng = np.random.default_rng(zlib.crc32(f"{isa}/{mode}/{shifts}".encode()))
    acc, bias, mult, shift = _cases(rng, 4000)
    if shifts == "fusable":
        shift = rng.integers(-22, 0, len(shift))
        shift[:44] = np.repeat([-1, -22], 22)
        # most accumulators of a real layer land inside the int8 range, many of them on a rounding
        # tie: aim at outputs in [-160, 160], a quarter of them at exact halves (+-2 around them)
        keep = 13 * 7  # the edge-case accumulators stay as they are
        target = rng.uniform(-160, 160, len(acc))
        target[::4] = np.round(target[::4]) + 0.5
        m = np.maximum(mult, 1).astype(np.float64)
        aimed = np.floor(target * 2.0 ** (31 - shift) / m).astype(np.int64) + rng.integers(-2, 3, len(acc)) - bias
        acc[keep:] = np.clip(aimed, INT32_MIN, INT32_MAX)[keep:]
    # keep the edge-case accumulators but let random lane positions see them (panels are 16 wide)
    perm = rng.permutation(len(acc))
    acc, bias, mult, shift = acc[perm], bias[perm], mult[perm], shift[perm]
    n = len(acc) - 5  # a partial last panel
    for zp, lo, hi in ((0, -128, 127), (-5, -5, 127), (17, -128, 90)):
        a32, b32 = acc.astype(np.int32), bias.astype(np.int32)
        m32, s32 = mult.astype(np.int32), shift.astype(np.int32)
        y = np.zeros(len(acc), np.int8)
        p32 = ctypes.POINTER(ctypes.c_int32)
        ran = fn(isa.encode(), MODES[mode], n, a32.ctypes.data_as(p32), b32.ctypes.data_as(p32),
                 m32.ctypes.data_as(p32), s32.ctypes.data_as(p32), zp, lo, hi,
                 y.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
        assert ran is not None
        ran = ran.decode()
        if isa != "scalar" and not ran.startswith(isa):
            pytest.skip(f"this CPU cannot run the {isa} kernels (got {ran})")
        want = np.array([reference(int(a), int(b), int(m), int(s), mode, zp, lo, hi)
                         for a, b, m, s in zip(acc[:n], bias[:n], mult[:n], shift[:n], strict=True)], np.int8)
        bad = np.nonzero(y[:n] != want)[0]
        assert bad.size == 0, (f"{isa} {mode}: {bad.size} mismatches, first at acc={acc[bad[0]]} "
                               f"bias={bias[bad[0]]} mult={mult[bad[0]]} shift={shift[bad[0]]}: "
                               f"{y[bad[0]]} != {want[bad[0]]}")
        assert (y[n:] == 0).all()  # nothing written past the last channel


def test_requant_check_rejects_bad_arguments():
    fn = _lib()
    one = np.ones(1, np.int32)
    y = np.zeros(1, np.int8)
    p32 = ctypes.POINTER(ctypes.c_int32)
    bad_shift = np.array([40], np.int32)
    assert fn(b"scalar", 0, 1, one.ctypes.data_as(p32), one.ctypes.data_as(p32), one.ctypes.data_as(p32),
              bad_shift.ctypes.data_as(p32), 0, -128, 127, y.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))) is None
    assert fn(b"scalar", 7, 1, one.ctypes.data_as(p32), one.ctypes.data_as(p32), one.ctypes.data_as(p32),
              one.ctypes.data_as(p32), 0, -128, 127, y.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))) is None


@pytest.mark.parametrize(("zp", "lo", "hi"), [(-128, -128, 127), (-5, -5, 127), (17, 17, 90), (3, 40, 127)])
def test_ties_away_equal_ties_up_when_the_lower_clamp_is_at_or_above_the_zero_point(zp, lo, hi):
    """The delegate runs a CONV_2D with a ReLU-like clamp (lower bound >= output zero point) with ties
    toward +inf instead of TFLite's ties away from zero (setup_epilogue), which is cheaper. The two
    differ only where the high-mul result is negative, and there both outputs are the zero point or
    less, which such a clamp maps to the same byte; this checks that on the generator's accumulators,
    aimed at ties, and that the two differ before clamping (so the test can tell)."""
    rng = np.random.default_rng(zp + 1000)
    acc, bias, mult, shift = _cases(rng, 4000)
    shift[::2] = rng.integers(-22, 0, len(shift[::2]))
    # exact ties of the rounding right shift, negative and positive: x = (2k + 1) * 2^(r-1)
    r = rng.integers(1, 12, 400)
    k = rng.integers(-300, 300, 400)
    tie_x = (2 * k + 1) * (1 << (r - 1))
    cases = list(zip(acc, bias, mult, shift, strict=True))
    cases += [(int(x) << 1, 0, 2**30, -int(e)) for x, e in zip(tie_x, r, strict=True)]  # srdhm(2x, 2^30) = x
    for a, b, m, s in cases:
        away = reference(int(a), int(b), int(m), int(s), "double_away", zp, lo, hi)
        up = reference(int(a), int(b), int(m), int(s), "double_up", zp, lo, hi)
        assert away == up, (a, b, m, s)
    unclamped = [(a, b, m, s) for a, b, m, s in cases
                 if reference(int(a), int(b), int(m), int(s), "double_away", zp, INT32_MIN, INT32_MAX)
                 != reference(int(a), int(b), int(m), int(s), "double_up", zp, INT32_MIN, INT32_MAX)]
    assert unclamped, "no case where the roundings differ without the clamp: the test would prove nothing"
