"""Huffman primitives: optimality (brute force), length limits, canonical codes, bit I/O."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters import ConverterError
from converters.huffman import (
    BitReader,
    BitWriter,
    canonical_codes,
    code_lengths,
    decode_symbols,
    encode_symbols,
    entropy_bits,
    huffman_bits,
)


def _brute_force_best(freqs, max_length):
    best = None
    for lens in itertools.product(range(1, max_length + 1), repeat=len(freqs)):
        if sum(2.0 ** -x for x in lens) <= 1.0:
            cost = sum(f * x for f, x in zip(freqs, lens, strict=True))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_lengths_are_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    freqs = rng.integers(1, 60, size=n)
    limit = int(rng.integers(max(1, int(np.ceil(np.log2(n)))), 6))
    assert huffman_bits(freqs, limit) == _brute_force_best(freqs, limit)
    assert huffman_bits(freqs) == _brute_force_best(freqs, n)  # n-1 is the deepest useful length


def test_length_limit_is_respected_and_costs_little():
    freqs = np.array([2**i for i in range(20)])  # Fibonacci-like: unconstrained depth 19
    assert code_lengths(freqs).max() == 19
    limited = code_lengths(freqs, 8)
    assert limited.max() == 8
    assert sum(2.0 ** -int(x) for x in limited) <= 1.0
    assert huffman_bits(freqs, 8) >= huffman_bits(freqs)
    with pytest.raises(ConverterError, match="max code length"):
        code_lengths(np.ones(300), 8)


def test_edge_cases():
    assert code_lengths([0, 0, 5]).tolist() == [0, 0, 1]
    assert code_lengths([]).tolist() == []
    assert entropy_bits([7]) == 0.0
    assert entropy_bits([1, 1]) == pytest.approx(2.0)
    with pytest.raises(ConverterError, match="non-negative"):
        code_lengths([1, -1])


def test_canonical_codes_are_prefix_free_and_ordered():
    lengths = np.array([3, 3, 2, 0, 2, 3, 3])
    codes = canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths, strict=True) if n]
    for a, b in itertools.permutations(words, 2):
        assert not b.startswith(a)
    assert codes[2] == 0b00 and codes[4] == 0b01 and codes[0] == 0b100
    with pytest.raises(ConverterError, match="Kraft"):
        canonical_codes([1, 1, 1])


def test_bit_writer_reader_msb_first():
    w = BitWriter()
    w.write(0b1, 1)
    w.write(0b0110, 4)
    w.write(0x3FF, 10)
    assert w.bit_length == 15
    data = w.getvalue()
    assert data == bytes([0b10110111, 0b11111110])
    r = BitReader(data)
    assert (r.read(1), r.read(4), r.read(10)) == (1, 0b0110, 0x3FF)
    with pytest.raises(ConverterError, match="bit stream length"):
        r.read(2)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300), st.one_of(st.none(), st.integers(6, 12)))
def test_roundtrip_and_size(symbols, limit):
    syms = np.asarray(symbols)
    freqs = np.bincount(syms)
    lengths = code_lengths(freqs, limit)
    codes = canonical_codes(lengths)
    data, nbits = encode_symbols(syms, codes, lengths)
    assert nbits == int((freqs * lengths).sum())
    assert len(data) == (nbits + 7) // 8
    assert decode_symbols(data, codes, lengths, len(syms)).tolist() == symbols
    if limit is None:
        assert entropy_bits(freqs) <= nbits < entropy_bits(freqs) + len(syms) + 1e-9
