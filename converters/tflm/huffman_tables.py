"""TFLite-Micro DECODE type 1 (HUFFMAN): Xtensa-format multi-level decode tables + MSB-first stream.

Layout (see docs/tflm-packing.md): ancillary = 16-byte DCM header (byte 5 = entry width bit 0,
``k0 - 1`` in bits 7..4) + one flat array of little-endian uint16/uint32 entries; the root table
(2^k0 entries) first, then subtables in depth-first pre-order, each placed right after the
previous subtree, each subtable's width chosen to minimise its subtree's entry count (ties to
the wider table). This is the layout of the upstream unit-test vectors, which
``tests/converters/test_tflm_huffman.py`` reproduces byte for byte.

Code lengths are the optimal Huffman lengths whenever the resulting tables are representable
(16-bit entries: pointer distances <= 2047); otherwise the longest code is limited (package-merge)
step by step until they are. Canonical codes are used (any prefix code decodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converters import ConverterError
from converters.huffman import canonical_codes, code_lengths, pack_bits
from converters.tflm.encoding import (
    DECODE_TYPE_HUFFMAN,
    Encoded,
    TensorQuant,
    check_dtype,
    dcm_header,
    describe,
    entropy_bytes,
    parse_dcm_header,
)
from edge_lottery.errors import expected

MAX_LEVEL_BITS = 15
_ENTRY = {16: (np.dtype("<u2"), 11, 2047), 32: (np.dtype("<u4"), 27, (1 << 27) - 1)}


class _LayoutError(Exception):
    """The tables do not fit the entry format (pointer distance too large)."""


@dataclass
class _Node:
    """A prefix (``depth`` consumed bits) with the codes below it, as relative (length, code, sym)."""

    rel_len: np.ndarray
    rel_code: np.ndarray
    sym: np.ndarray


class _TableBuilder:
    """Chooses subtable widths (min subtree entries, ties to wider) and lays out the tables."""

    def __init__(self, codes: np.ndarray, lengths: np.ndarray, symbols: np.ndarray) -> None:
        self.codes = codes.astype(np.int64)
        self.lengths = lengths.astype(np.int64)
        self.symbols = symbols.astype(np.int64)
        self._memo: dict[tuple[int, int], tuple[int, int]] = {}
        self._nodes: dict[tuple[int, int], _Node] = {}

    def _below(self, depth: int, prefix: int) -> _Node:
        key = (depth, prefix)
        node = self._nodes.get(key)
        if node is not None:
            return node
        if depth == 0:
            lens, codes, syms = self.lengths, self.codes, self.symbols
        else:
            # Derive from the nearest cached ancestor's (smaller) arrays, not the whole code.
            parent = None
            for d in range(depth - 1, -1, -1):
                parent = self._nodes.get((d, prefix >> (depth - d)))
                if parent is not None:
                    break
            if parent is None:
                parent = self._below(0, 0)
                d = 0
            lens = parent.rel_len + d
            codes = parent.rel_code | (np.int64(prefix >> (depth - d)) << parent.rel_len) if d else parent.rel_code
            syms = parent.sym
        sel = lens > depth
        if depth:
            sel &= (codes >> np.maximum(lens - depth, 0)) == prefix
        rel_len = lens[sel] - depth
        rel_code = codes[sel] & ((np.int64(1) << rel_len) - 1)
        node = _Node(rel_len, rel_code, syms[sel])
        self._nodes[key] = node
        return node

    def _children(self, depth: int, prefix: int, width: int) -> list[int]:
        """Prefixes (of length depth+width) that need a subtable below a width-``width`` table."""
        node = self._below(depth, prefix)
        deep = node.rel_len > width
        if not deep.any():
            return []
        keys = node.rel_code[deep] >> (node.rel_len[deep] - width)
        return sorted({int(k) for k in keys})

    def subtree(self, depth: int, prefix: int) -> tuple[int, int]:
        """(entries, best width) of the subtree rooted at this prefix (a pointer's target)."""
        key = (depth, prefix)
        if key in self._memo:
            return self._memo[key]
        node = self._below(depth, prefix)
        max_rel = int(node.rel_len.max())
        best = None
        for width in range(1, min(MAX_LEVEL_BITS, max_rel) + 1):
            cost = self.cost_with_width(depth, prefix, width)
            if best is None or cost <= best[0]:  # ties go to the wider table
                best = (cost, width)
        assert best is not None
        self._memo[key] = best
        return best

    def cost_with_width(self, depth: int, prefix: int, width: int) -> int:
        total = 1 << width
        for child in self._children(depth, prefix, width):
            total += self.subtree(depth + width, (prefix << width) | child)[0]
        return total

    def layout(self, root_bits: int, entry_bits: int) -> tuple[np.ndarray, dict[int, int], int]:
        """Entries, per-symbol bits fetched on its decode path, and the deepest level count."""
        dtype, value_bits, max_dist = _ENTRY[entry_bits]
        flag = 1 << (entry_bits - 1)
        count_shift = value_bits
        entries: list[int] = []
        fetched: dict[int, int] = {}
        max_levels = [0]

        def place(depth: int, prefix: int, width: int, start: int, fetched_before: int, level: int) -> int:
            size = 1 << width
            if len(entries) < start + size:
                entries.extend([0] * (start + size - len(entries)))
            max_levels[0] = max(max_levels[0], level)
            node = self._below(depth, prefix)
            next_free = start + size
            # Leaves, replicated over the patterns that share their bits.
            for rl, rc, sym in zip(node.rel_len.tolist(), node.rel_code.tolist(), node.sym.tolist(), strict=True):
                if rl <= width:
                    base = rc << (width - rl)
                    value = flag | (rl << count_shift) | (sym & ((1 << value_bits) - 1))
                    for p in range(base, base + (1 << (width - rl))):
                        entries[start + p] = value
                    fetched[sym] = fetched_before + width
            # Unreachable entries (incomplete codes) keep a harmless leaf: the first leaf seen.
            for child in self._children(depth, prefix, width):
                child_width = self.subtree(depth + width, (prefix << width) | child)[1]
                dist = next_free - (start + child)
                if dist > max_dist:
                    raise _LayoutError(f"pointer distance {dist} > {max_dist}")
                entries[start + child] = ((child_width - 1) << count_shift) | dist
                next_free = place(depth + width, (prefix << width) | child, child_width, next_free,
                                  fetched_before + width, level + 1)
            return next_free

        place(0, 0, root_bits, 0, 0, 1)
        arr = np.asarray(entries, dtype=np.int64)
        # Fill unreachable slots (value 0 = pointer with distance 0 would loop) with a leaf.
        filler = flag | (1 << count_shift)
        arr[arr == 0] = filler
        return arr.astype(dtype), fetched, max_levels[0]


def _symbols_of(values: np.ndarray) -> tuple[np.ndarray, int]:
    bits = 8 * values.dtype.itemsize
    unsigned = values.reshape(-1).view(np.uint8 if bits == 8 else np.uint16).astype(np.int64)
    return unsigned, bits


def _stream_bytes(code_bits: np.ndarray, fetch_bits: np.ndarray) -> int:
    """Minimum stream length: every 32-bit word the reference decoder loads, at least one."""
    if code_bits.size == 0:
        return 4
    starts = np.concatenate([[0], np.cumsum(code_bits)[:-1]])
    furthest = int((starts + fetch_bits).max())
    return 4 * max(1, math.ceil(furthest / 32))


def build(
    symbols: np.ndarray,
    lengths: np.ndarray,
    codes: np.ndarray,
    *,
    root_bits: int,
    entry_bits: int,
    extra_words: int = 0,
) -> tuple[bytes, bytes, dict]:
    """Encoded stream and ancillary bytes for an explicit prefix code (any, not only canonical)."""
    used = np.flatnonzero(lengths > 0)
    builder = _TableBuilder(codes[used], lengths[used], used)
    table, fetched, levels = builder.layout(root_bits, entry_bits)
    stream, nbits = pack_bits(codes[symbols], lengths[symbols])
    fetch = np.zeros(lengths.size, dtype=np.int64)
    for sym, f in fetched.items():
        fetch[sym] = f
    size = _stream_bytes(lengths[symbols], fetch[symbols]) + 4 * extra_words
    stream = stream + bytes(size - len(stream))
    header = dcm_header(DECODE_TYPE_HUFFMAN, bytes([1, ((root_bits - 1) << 4) | (1 if entry_bits == 32 else 0)]))
    details = {"code_bits": nbits, "table_entries": int(table.size), "levels_max": levels,
               "max_code_length": int(lengths.max()) if lengths.size else 0}
    return stream, header + table.tobytes(), details


def encode(
    values: np.ndarray,
    quant: TensorQuant | None = None,
    *,
    table_entry_bits: int | None = None,
    root_bits: int | None = None,
    extra_words: int = 0,
) -> Encoded:
    """Huffman-code an int8/int16 tensor for the TFLM DECODE operator.

    ``table_entry_bits``: 16 (int8 only) or 32; None picks the smaller valid one.
    ``root_bits`` (k0, 1..15): None picks the root minimising the total table entries (ties to
    the larger root, which decodes faster); pass e.g. 8 to favour decode speed over table size.
    ``extra_words``: 32-bit zero words appended after the minimum stream (safety margin for
    decoders that prefetch). ``quant`` is ignored: HUFFMAN does not use quantization.
    """
    values = np.asarray(values)
    dt = check_dtype(values, "HUFFMAN", (np.int8, np.int16))
    what = f"HUFFMAN encoding of tensor {describe(values)}"
    if values.size == 0:
        raise ConverterError(expected(f"{what}: element count", ">= 1", 0))
    if table_entry_bits not in (None, 16, 32):
        raise ConverterError(expected(f"{what}: table_entry_bits", "16, 32 or None", table_entry_bits))
    if table_entry_bits == 16 and dt == np.int16:
        raise ConverterError(expected(f"{what}: table_entry_bits for int16 output", "32", 16))
    if root_bits is not None and not 1 <= int(root_bits) <= MAX_LEVEL_BITS:
        raise ConverterError(expected(f"{what}: root_bits", f"1..{MAX_LEVEL_BITS}", root_bits))
    symbols, _ = _symbols_of(values)
    freqs = np.bincount(symbols, minlength=1 << (8 * dt.itemsize))
    widths = [table_entry_bits] if table_entry_bits else ([16, 32] if dt == np.int8 else [32])

    base_lengths = code_lengths(freqs)
    n_used = int((freqs > 0).sum())
    min_len = max(1, math.ceil(math.log2(n_used))) if n_used > 1 else 1
    best: tuple | None = None
    limit = int(base_lengths.max())
    # Optimal lengths first; shorten the longest code only if no table layout fits.
    while limit >= min_len and best is None:
        lengths = base_lengths if limit == base_lengths.max() else code_lengths(freqs, limit)
        codes = canonical_codes(lengths)
        used = np.flatnonzero(lengths > 0)
        builder = _TableBuilder(codes[used], lengths[used], used)
        max_len = int(lengths.max())
        roots = [int(root_bits)] if root_bits else list(range(1, min(MAX_LEVEL_BITS, max_len) + 1))
        ranked = sorted(roots, key=lambda k: (_root_cost(builder, k, max_len), -k))
        for entry_bits in widths:
            for k0 in ranked:
                try:
                    stream, ancillary, details = build(symbols, lengths, codes, root_bits=k0,
                                                       entry_bits=entry_bits, extra_words=extra_words)
                except _LayoutError:
                    continue
                cand = (len(stream) + len(ancillary), stream, ancillary, details, k0, entry_bits, limit)
                if best is None or cand[0] < best[0]:
                    best = cand
                break  # ranked by table size: the first layout that fits is the smallest for this width
        limit -= 1
    if best is None:
        raise ConverterError(expected(f"{what}: a table layout within the entry format",
                                      f"pointer distances <= {_ENTRY[widths[-1]][2]}", f"root_bits={root_bits}"))
    _, stream, ancillary, details, k0, entry_bits, limit = best
    details.update({"root_bits": k0, "table_entry_bits": entry_bits, "distinct": n_used,
                    "length_limit": None if limit == int(base_lengths.max()) else limit,
                    "optimal_code_bits": int((freqs * base_lengths).sum())})
    return Encoded(
        method="huffman",
        encoded=stream,
        ancillary=ancillary,
        original_bytes=int(values.nbytes),
        entropy_bound_bytes=entropy_bytes(freqs),
        table_bytes=len(ancillary),
        details=details,
    )


def _root_cost(builder: _TableBuilder, k0: int, max_len: int) -> int:
    if k0 >= max_len:
        return 1 << k0
    return builder.cost_with_width(0, 0, k0)


def decode(enc: Encoded, shape, dtype, quant: TensorQuant | None = None) -> np.ndarray:
    """Reference decoder: walks the tables exactly like the TFLM kernel (32-bit big-endian words)."""
    dt = np.dtype(dtype)
    header = parse_dcm_header(enc.ancillary, DECODE_TYPE_HUFFMAN)
    wide = bool(header[5] & 1)
    k0 = (header[5] >> 4) + 1
    if not wide and dt != np.int8:
        raise ConverterError(expected("HUFFMAN 16-bit tables: output dtype", "int8", dt.name))
    if dt not in (np.dtype(np.int8), np.dtype(np.int16)):
        raise ConverterError(expected("HUFFMAN output dtype", "int8 or int16", dt.name))
    entry_bits = 32 if wide else 16
    tdtype, value_bits, _ = _ENTRY[entry_bits]
    table = np.frombuffer(enc.ancillary[16:], dtype=tdtype).astype(np.int64).tolist()
    flag = 1 << (entry_bits - 1)
    n = int(np.prod(shape)) if len(shape) else 1
    stream = bytes(enc.encoded)
    total_bits = 8 * (len(stream) // 4) * 4  # the kernel only loads whole words
    acc = int.from_bytes(stream[: total_bits // 8], "big") if total_bits else 0
    out = np.empty(n, dtype=np.int64)
    pos = 0

    def fetch(count: int) -> int:
        nonlocal pos
        end = pos + count
        if end > total_bits:
            raise ConverterError(expected("HUFFMAN stream length", f">= {math.ceil(end / 32) * 4} bytes", len(stream)))
        value = (acc >> (total_bits - end)) & ((1 << count) - 1)
        pos = end
        return value

    count_mask = 0xF
    vmask = (1 << value_bits) - 1
    for i in range(n):
        used = k0
        index = fetch(k0)
        entry = table[index]
        while not entry & flag:
            used = ((entry >> value_bits) & count_mask) + 1
            nxt = fetch(used)
            index += (entry & vmask) + nxt
            entry = table[index]
        out[i] = entry
        keep = (entry >> value_bits) & count_mask
        pos -= used - keep
    mask = 0xFF if dt == np.int8 else 0xFFFF
    return (out & mask).astype(np.uint8 if dt == np.int8 else np.uint16).view(dt).reshape(shape)


__all__ = ["build", "decode", "encode"]
