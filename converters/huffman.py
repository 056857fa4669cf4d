"""Huffman coding primitives: optimal and length-limited code lengths, canonical codes, bit I/O.

Why the project writes its own instead of using a library: the TFLite-Micro HUFFMAN decode
tables (``converters.tflm.huffman_tables``) and the Deep Compression archive
(``converters.archive``) need (1) *length-limited* optimal codes (package-merge), (2) full
control of the exact MSB-first bit layout and of which prefix code is used, and (3) code-length
tables we serialise ourselves. The small PyPI Huffman packages (e.g. ``dahuffman``) build
unconstrained codes and own their bit layout, and zlib/deflate hides its codes entirely, so
none of them can produce these exact layouts. Pure numpy/Python, no TF.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence

import numpy as np

from converters import ConverterError
from edge_lottery.errors import expected


def _freq_array(freqs: Sequence[int] | np.ndarray) -> np.ndarray:
    f = np.asarray(freqs, dtype=np.int64).reshape(-1)
    if f.size and f.min() < 0:
        raise ConverterError(expected("symbol frequencies", "non-negative counts", int(f.min())))
    return f


def code_lengths(freqs: Sequence[int] | np.ndarray, max_length: int | None = None) -> np.ndarray:
    """Optimal prefix-code lengths for symbol counts ``freqs`` (index = symbol).

    Symbols with count 0 get length 0 (no code). A single used symbol gets length 1 (a decoder
    must consume at least one bit per symbol). With ``max_length`` the lengths minimise the total
    coded size subject to ``length <= max_length`` (package-merge, Larmore & Hirschberg 1990);
    without it, classic Huffman. Ties are broken deterministically (by symbol index).
    """
    f = _freq_array(freqs)
    lengths = np.zeros(f.size, dtype=np.int64)
    used = np.flatnonzero(f > 0)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if max_length is not None:
        need = math.ceil(math.log2(used.size))
        if max_length < need:
            raise ConverterError(expected(f"max code length for {used.size} symbols", f">= {need}", max_length))
        unconstrained = code_lengths(f)
        if unconstrained.max() <= max_length:
            return unconstrained
        lengths[used] = _package_merge(f[used], max_length)
        return lengths
    # Classic Huffman on (count, tiebreak, node); nodes are leaves (symbol) or merged pairs.
    heap: list[tuple[int, int, int]] = [(int(f[s]), i, i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    parent = [-1] * (2 * used.size - 1)
    nxt = used.size
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (c1 + c2, nxt, nxt))
        nxt += 1
    depth = [0] * (2 * used.size - 1)
    for node in range(2 * used.size - 3, -1, -1):  # parents have larger ids than children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[: used.size]
    return lengths


def _package_merge(weights: np.ndarray, max_length: int) -> np.ndarray:
    """Length-limited optimal code lengths (coin-collector formulation)."""
    n = weights.size
    order = np.argsort(weights, kind="stable")
    w = weights[order]
    leaves = [(int(w[i]), np.eye(1, n, i, dtype=np.int32)[0]) for i in range(n)]
    current = list(leaves)
    for _ in range(max_length - 1):
        packages = []
        for i in range(0, len(current) - 1, 2):
            packages.append((current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1]))
        merged = sorted(leaves + packages, key=lambda item: item[0])  # stable: leaves first on ties
        current = merged
    counts = np.zeros(n, dtype=np.int64)
    for _, vec in current[: 2 * n - 2]:
        counts += vec
    out = np.zeros(n, dtype=np.int64)
    out[order] = counts
    return out


def canonical_codes(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """Canonical codewords (as integers, MSB-first) for code ``lengths``; 0 where length is 0.

    Codes are assigned in order of (length, symbol), the DEFLATE convention.
    """
    ln = np.asarray(lengths, dtype=np.int64).reshape(-1)
    codes = np.zeros(ln.size, dtype=np.int64)
    if ln.size == 0 or ln.max() == 0:
        return codes
    kraft = sum(2.0 ** -int(x) for x in ln if x > 0)
    if kraft > 1.0 + 1e-12:
        raise ConverterError(expected("code lengths (Kraft sum)", "<= 1", kraft))
    code = 0
    prev_len = 0
    for sym in sorted(np.flatnonzero(ln > 0), key=lambda s: (ln[s], s)):
        length = int(ln[sym])
        code <<= length - prev_len
        codes[sym] = code
        code += 1
        prev_len = length
    return codes


class BitWriter:
    """Accumulates bits MSB-first (bit 7 of byte 0 is the first bit written)."""

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._acc = 0
        self._nacc = 0
        self.bit_length = 0

    def write(self, value: int, nbits: int) -> None:
        if nbits <= 0:
            return
        self._acc = (self._acc << nbits) | (int(value) & ((1 << nbits) - 1))
        self._nacc += nbits
        self.bit_length += nbits
        while self._nacc >= 8:
            self._nacc -= 8
            self._bytes.append((self._acc >> self._nacc) & 0xFF)
        self._acc &= (1 << self._nacc) - 1

    def getvalue(self) -> bytes:
        """The bytes written so far, the last one zero-padded."""
        if self._nacc:
            return bytes(self._bytes) + bytes([(self._acc << (8 - self._nacc)) & 0xFF])
        return bytes(self._bytes)


class BitReader:
    """Reads bits MSB-first from bytes; reading past the end raises ConverterError."""

    def __init__(self, data: bytes, bit_offset: int = 0) -> None:
        self._data = bytes(data)
        self.position = bit_offset
        self.bit_length = 8 * len(self._data)

    def read(self, nbits: int) -> int:
        if nbits <= 0:
            return 0
        end = self.position + nbits
        if end > self.bit_length:
            raise ConverterError(expected("bit stream length", f">= {end} bits", self.bit_length))
        first = self.position >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        value = (chunk >> (8 * (last - first) - (end - 8 * first))) & ((1 << nbits) - 1)
        self.position = end
        return value


def pack_bits(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate variable-length codewords MSB-first (vectorised); returns (bytes, bit count)."""
    codes = np.asarray(codes, dtype=np.uint64).reshape(-1)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    total = int(lengths.sum())
    if total == 0:
        return b"", 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bits = np.zeros(total, dtype=np.uint8)
    for j in range(int(lengths.max())):
        sel = lengths > j
        shift = (lengths[sel] - 1 - j).astype(np.uint64)
        bits[starts[sel] + j] = ((codes[sel] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def encode_symbols(symbols: Iterable[int] | np.ndarray, codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Huffman-code ``symbols`` with per-symbol ``codes``/``lengths``; returns (bytes, bit count)."""
    sym = np.asarray(list(symbols) if not isinstance(symbols, np.ndarray) else symbols, dtype=np.int64).reshape(-1)
    codes = np.asarray(codes, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if sym.size and (sym.min() < 0 or sym.max() >= lengths.size or (lengths[sym] == 0).any()):
        bad = sym[(sym < 0) | (sym >= lengths.size)]
        if bad.size == 0:
            bad = sym[lengths[sym] == 0]
        raise ConverterError(expected("symbol to encode", "a symbol with a code", int(bad[0])))
    return pack_bits(codes[sym], lengths[sym])


def decode_symbols(data: bytes, codes: np.ndarray, lengths: np.ndarray, count: int, bit_offset: int = 0) -> np.ndarray:
    """Decode ``count`` symbols of any prefix code (not only canonical) from an MSB-first stream.

    Table-driven: every bit position's L-bit window (L = longest code) is computed with numpy,
    then one table lookup per symbol.
    """
    codes = np.asarray(codes, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty(count, dtype=np.int64)
    if count == 0:
        return out
    max_len = int(lengths.max()) if lengths.size else 0
    if max_len == 0 or max_len > 24:
        raise ConverterError(expected("Huffman code lengths", "1..24 bits", max_len))
    sym_of = np.full(1 << max_len, -1, dtype=np.int64)
    len_of = np.zeros(1 << max_len, dtype=np.int64)
    for sym in np.flatnonzero(lengths > 0):
        shift = max_len - int(lengths[sym])
        lo = int(codes[sym]) << shift
        sym_of[lo : lo + (1 << shift)] = sym
        len_of[lo : lo + (1 << shift)] = lengths[sym]
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))[bit_offset:]
    nbits = bits.size
    padded = np.concatenate([bits, np.zeros(max_len, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(nbits + 1, dtype=np.int64)
    for j in range(max_len):
        window = (window << 1) | padded[j : j + nbits + 1]
    win = window.tolist()
    syms = sym_of.tolist()
    lens = len_of.tolist()
    pos = 0
    for i in range(count):
        if pos >= nbits:
            raise ConverterError(expected("Huffman stream length", f"more than {nbits} bits", nbits))
        w = win[pos]
        sym = syms[w]
        if sym < 0:
            raise ConverterError(f"Huffman stream: invalid codeword at bit {pos + bit_offset}")
        out[i] = sym
        pos += lens[w]
    if pos > nbits:
        raise ConverterError(expected("Huffman stream length", f">= {pos} bits", nbits))
    return out


def entropy_bits(freqs: Sequence[int] | np.ndarray) -> float:
    """Shannon bound in bits: sum(-c * log2(c / total))."""
    f = _freq_array(freqs).astype(np.float64)
    f = f[f > 0]
    if f.size == 0:
        return 0.0
    return float(-(f * np.log2(f / f.sum())).sum())


def huffman_bits(freqs: Sequence[int] | np.ndarray, max_length: int | None = None) -> int:
    """Total bits of the optimal (optionally length-limited) Huffman code for these counts."""
    f = _freq_array(freqs)
    return int((f * code_lengths(f, max_length)).sum())


__all__ = [
    "BitReader",
    "BitWriter",
    "canonical_codes",
    "code_lengths",
    "decode_symbols",
    "encode_symbols",
    "entropy_bits",
    "huffman_bits",
    "pack_bits",
]
