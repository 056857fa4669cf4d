"""The project's Deep Compression archive of a .tflite file, for storage and over-the-air updates.

Not an execution format (TFLite-Micro cannot run it; use ``converters.tflm`` packing for that):
it is the lossless counterpart of Han et al.'s "Deep Compression" storage stage. Each selected
weight buffer is stored as CSR with *relative* indices: for every non-zero byte, the gap (number
of zeros) since the previous one in a fixed ``index_bits``-bit field; a gap that overflows the
field is split by a filler entry (gap = 2^k - 1, value 0), as in the paper. Values and gaps are
Huffman coded with two separate canonical codes (code lengths <= 15, stored as nibbles), and
``index_bits`` is chosen per tensor to minimise the total. Everything else of the file (the
flatbuffer with those buffers cut out) is stored verbatim, deflated with zlib. ``unpack_archive``
restores the exact original bytes (checked with CRC-32).

Layout (little-endian)::

    header  (32 B): magic b"ELDC", version u8 = 1, flags u8, reserved u16, original size u64,
                    original CRC-32 u32, payload CRC-32 u32, payload size u64
    payload:        record count u32, records..., rest size u32, zlib(rest)
    record:         file offset u64, byte length u32, index_bits u8, reserved u8 x3,
                    entry count u32, value code lengths (256 nibbles), gap code lengths
                    (2^index_bits nibbles), value stream size u32 + bytes, gap stream size u32 + bytes
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from converters import ConverterError
from converters.huffman import canonical_codes, code_lengths, decode_symbols, encode_symbols, entropy_bits
from converters.tflm import flatbuffer
from edge_lottery.errors import expected

MAGIC = b"ELDC"
VERSION = 1
MAX_CODE_BITS = 15
INDEX_BITS = tuple(range(1, 9))
MIN_AUTO_BYTES = 64
_HEADER = struct.Struct("<4sBBHQIIQ")
_RECORD = struct.Struct("<QIB3xI")


@dataclass(frozen=True)
class _CSR:
    index_bits: int
    gaps: np.ndarray
    values: np.ndarray


def _csr(data: np.ndarray, index_bits: int) -> _CSR:
    """Relative-index CSR of a byte array with filler zeros for overflowing gaps."""
    nz = np.flatnonzero(data)
    if nz.size == 0:
        return _CSR(index_bits, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    cap = (1 << index_bits) - 1
    fillers = gaps // (cap + 1)
    rest = gaps - fillers * (cap + 1)
    ends = np.cumsum(fillers + 1)
    total = int(ends[-1])
    g = np.full(total, cap, dtype=np.int64)
    v = np.zeros(total, dtype=np.int64)
    g[ends - 1] = rest
    v[ends - 1] = data[nz]
    return _CSR(index_bits, g, v)


def _nibbles(lengths: np.ndarray) -> bytes:
    ln = np.asarray(lengths, dtype=np.uint8)
    if ln.size % 2:
        ln = np.concatenate([ln, [0]]).astype(np.uint8)
    return ((ln[0::2] << 4) | ln[1::2]).astype(np.uint8).tobytes()


def _unnibble(data: bytes, count: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(2 * b.size, dtype=np.int64)
    out[0::2] = b >> 4
    out[1::2] = b & 0xF
    return out[:count]


def _code(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, bytes, int]:
    freqs = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(freqs, MAX_CODE_BITS) if symbols.size else np.zeros(alphabet, dtype=np.int64)
    if symbols.size == 0:
        return lengths, b"", 0
    stream, nbits = encode_symbols(symbols, canonical_codes(lengths), lengths)
    return lengths, stream, nbits


def _encode_buffer(data: np.ndarray) -> tuple[bytes, dict]:
    """Best record over index widths; returns (record body without offset header, stats)."""
    best = None
    for k in INDEX_BITS:
        csr = _csr(data, k)
        vlen, vstream, vbits = _code(csr.values, 256)
        glen, gstream, gbits = _code(csr.gaps, 1 << k)
        tables = _nibbles(vlen) + _nibbles(glen)
        size = len(tables) + len(vstream) + len(gstream) + 8
        if best is None or size < best[0]:
            best = (size, csr, vlen, vstream, vbits, glen, gstream, gbits, tables)
    assert best is not None
    size, csr, vlen, vstream, vbits, glen, gstream, gbits, tables = best
    body = (tables + struct.pack("<I", len(vstream)) + vstream + struct.pack("<I", len(gstream)) + gstream)
    stats = {
        "index_bits": csr.index_bits,
        "entries": int(csr.values.size),
        "nonzero": int(np.count_nonzero(data)),
        "fillers": int(csr.values.size - np.count_nonzero(data)),
        "value_bits": vbits,
        "index_bits_total": gbits,
        "table_bytes": len(tables),
        "entropy_bound_bytes": (entropy_bits(np.bincount(csr.values, minlength=256))
                                + entropy_bits(np.bincount(csr.gaps, minlength=1 << csr.index_bits))) / 8,
    }
    return body, csr.index_bits, stats


def _select(tflite_bytes: bytes, tensors: Iterable[tuple[int, int]] | None) -> dict[int, list[str]]:
    """Buffer index -> names of the tensors it holds."""
    consts = flatbuffer.constant_tensors(tflite_bytes)
    buf_of = flatbuffer.tensor_buffer_index(tflite_bytes)
    by_key = {(t.subgraph, t.index): t for t in consts}
    chosen: dict[int, list[str]] = {}
    if tensors is None:
        for t in consts:
            if t.dtype in (np.dtype(np.int8), np.dtype(np.uint8)) and t.nbytes >= MIN_AUTO_BYTES:
                chosen.setdefault(buf_of[(t.subgraph, t.index)], []).append(t.name)
        return chosen
    for key in tensors:
        key = (int(key[0]), int(key[1]))
        if key not in by_key:
            raise ConverterError(expected("archive tensor (subgraph, tensor)", "a constant tensor with data", key))
        chosen.setdefault(buf_of[key], []).append(by_key[key].name)
    return chosen


def _pack(tflite_bytes: bytes, tensors) -> tuple[bytes, dict]:
    data = bytes(tflite_bytes)
    chosen = _select(data, tensors)
    spans = flatbuffer.buffer_spans(data)
    records = []
    report = []
    end_of_last = 0
    for buf in sorted(chosen, key=lambda b: spans[b][0]):
        start, length = spans[buf]
        if length == 0 or start < end_of_last or start + length > len(data):
            continue  # empty, or bytes shared with a buffer already taken: leave them in the rest
        end_of_last = start + length
        arr = np.frombuffer(data, dtype=np.uint8, count=length, offset=start)
        body, k, stats = _encode_buffer(arr)
        header = _RECORD.pack(start, length, k, stats["entries"])
        records.append((start, length, header + body))
        report.append({"buffer": buf, "tensors": chosen[buf], "bytes": length, "packed_bytes": len(header) + len(body),
                       **stats})
    rest = bytearray()
    cursor = 0
    for start, length, _ in records:
        rest += data[cursor:start]
        cursor = start + length
    rest += data[cursor:]
    deflated = zlib.compress(bytes(rest), 9)
    payload = (struct.pack("<I", len(records)) + b"".join(r[2] for r in records)
               + struct.pack("<I", len(deflated)) + deflated)
    header = _HEADER.pack(MAGIC, VERSION, 0, 0, len(data), zlib.crc32(data), zlib.crc32(payload), len(payload))
    blob = header + payload
    info = {
        "original_bytes": len(data),
        "archive_bytes": len(blob),
        "ratio": len(data) / len(blob) if blob else float("nan"),
        "zlib_only_bytes": len(zlib.compress(data, 9)),
        "rest_bytes": len(rest),
        "rest_deflated_bytes": len(deflated),
        "header_bytes": _HEADER.size,
        "tensors": report,
    }
    return blob, info


def pack_archive(tflite_bytes: bytes, *, tensors: Iterable[tuple[int, int]] | None = None) -> bytes:
    """Archive a .tflite file. ``tensors``: (subgraph, tensor) pairs to CSR+Huffman code; None
    = every int8/uint8 constant buffer of at least 64 bytes (the weights)."""
    return _pack(tflite_bytes, tensors)[0]


def archive_report(tflite_bytes: bytes, *, tensors: Iterable[tuple[int, int]] | None = None) -> dict:
    """Sizes of the archive of ``tflite_bytes``: total, per tensor (CSR entries, bits), rest."""
    return _pack(tflite_bytes, tensors)[1]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ConverterError(expected("archive payload", f"{n} more bytes at offset {self.pos}",
                                          f"{len(self.data) - self.pos} bytes left"))
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))


_U32 = struct.Struct("<I")


def unpack_archive(blob: bytes) -> bytes:
    """Restore the exact original .tflite bytes; bad or foreign input raises ConverterError."""
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise ConverterError(expected("archive size", f">= {_HEADER.size} bytes", len(blob)))
    magic, version, _, _, size, crc, payload_crc, payload_size = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ConverterError(expected("archive magic", MAGIC, magic))
    if version != VERSION:
        raise ConverterError(expected("archive version", VERSION, version))
    payload = blob[_HEADER.size :]
    if len(payload) != payload_size:
        raise ConverterError(expected("archive payload size (truncated or padded file?)", payload_size, len(payload)))
    if zlib.crc32(payload) != payload_crc:
        raise ConverterError(expected("archive payload CRC-32", f"{payload_crc:08x}", f"{zlib.crc32(payload):08x}"))
    r = _Reader(payload)
    (count,) = r.unpack(_U32)
    pieces = []
    for _ in range(count):
        start, length, k, entries = r.unpack(_RECORD)
        if not 1 <= k <= 16:
            raise ConverterError(expected("archive record index_bits", "1..16", k))
        vlen = _unnibble(r.take(128), 256)
        glen = _unnibble(r.take(max(1, (1 << k) // 2)), 1 << k)
        (vsize,) = r.unpack(_U32)
        vstream = r.take(vsize)
        (gsize,) = r.unpack(_U32)
        gstream = r.take(gsize)
        out = np.zeros(length, dtype=np.uint8)
        if entries:
            values = decode_symbols(vstream, canonical_codes(vlen), vlen, entries)
            gaps = decode_symbols(gstream, canonical_codes(glen), glen, entries)
            positions = np.cumsum(gaps + 1) - 1
            if positions[-1] >= length:
                raise ConverterError(expected("archive record positions", f"< {length}", int(positions[-1])))
            out[positions] = values
        pieces.append((start, out.tobytes()))
    (rest_size,) = r.unpack(_U32)
    try:
        rest = zlib.decompress(r.take(rest_size))
    except zlib.error as err:
        raise ConverterError(f"archive rest section could not be inflated: {err}") from err
    result = bytearray()
    cursor = 0
    for start, piece in pieces:
        need = start - len(result)
        if need < 0 or cursor + need > len(rest):
            raise ConverterError(expected("archive record offset", f">= {len(result)}", start))
        result += rest[cursor : cursor + need]
        cursor += need
        result += piece
    result += rest[cursor:]
    if len(result) != size or zlib.crc32(bytes(result)) != crc:
        raise ConverterError(expected("restored file (size, CRC-32)", (size, f"{crc:08x}"),
                                      (len(result), f"{zlib.crc32(bytes(result)):08x}")))
    return bytes(result)


__all__ = ["MAGIC", "VERSION", "archive_report", "pack_archive", "unpack_archive"]
