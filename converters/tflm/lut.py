"""TFLite-Micro DECODE type 0 (LUT): per-channel value tables + b-bit indices.

Ancillary: 16-byte DCM header (byte 5 = index bit width b in bits 2..0 and an axis nibble in
bits 7..4 that today's runtime ignores; byte 6 = stride S) + C value tables of S entries each
in the output dtype. The runtime takes C from the *output tensor's* quantization, so there is
always ONE TABLE PER QUANTIZATION CHANNEL, replicated when the channels share one value set
(a single table on a C-channel tensor decodes wrong, doc §4.5). Encoded tensor: one b-bit
index per element, MSB-first, continuous across channels.
"""

from __future__ import annotations

import math

import numpy as np

from converters import ConverterError
from converters.tflm.encoding import (
    DECODE_TYPE_LUT,
    SUPPORTED_DTYPES,
    Encoded,
    TensorQuant,
    bit_patterns,
    channel_layout,
    channel_of_elements,
    check_dtype,
    dcm_header,
    describe,
    entropy_bytes,
    parse_dcm_header,
    to_little_endian,
)
from edge_lottery.errors import expected

MAX_BITS = 7
MAX_STRIDE = 1 << MAX_BITS


def pack_indices(indices: np.ndarray, bit_width: int) -> bytes:
    """b-bit indices, MSB-first, continuous, last byte zero-padded."""
    idx = np.asarray(indices, dtype=np.uint8).reshape(-1, 1)
    shifts = np.arange(bit_width - 1, -1, -1, dtype=np.uint8)
    bits = (idx >> shifts) & 1
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_indices(data: bytes, bit_width: int, count: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    if bits.size < count * bit_width:
        raise ConverterError(expected("LUT index stream length", f">= {math.ceil(count * bit_width / 8)} bytes",
                                      len(data)))
    bits = bits[: count * bit_width].reshape(count, bit_width).astype(np.int64)
    weights = 1 << np.arange(bit_width - 1, -1, -1, dtype=np.int64)
    return bits @ weights


def encode(values: np.ndarray, quant: TensorQuant | None = None, *, per_channel_tables: bool = True,
           bit_width: int | None = None) -> Encoded:
    """LUT-encode a tensor; at most 128 distinct values per channel (bitwise distinct).

    ``per_channel_tables=False`` builds one value set for the whole tensor and replicates it for
    every quantization channel (same decode, shared indices). ``bit_width`` forces b (>= needed).
    """
    values = np.asarray(values)
    dt = check_dtype(values, "LUT", SUPPORTED_DTYPES)
    what = f"LUT encoding of tensor {describe(values)}"
    if values.size == 0:
        raise ConverterError(expected(f"{what}: element count", ">= 1", 0))
    c, rule = channel_layout(values.shape, quant, what)
    flat = to_little_endian(values.reshape(-1)).astype(dt.newbyteorder("<"))
    bits = bit_patterns(flat)
    n = flat.size
    chan = channel_of_elements(n, c, rule)
    indices = np.zeros(n, dtype=np.int64)
    tables: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    if per_channel_tables:
        for ch in range(c):
            sel = chan == ch
            uniq, inv, cnt = np.unique(bits[sel], return_inverse=True, return_counts=True)
            tables.append(uniq)
            indices[sel] = inv
            counts.append(cnt)
    else:
        uniq, inv, cnt = np.unique(bits, return_inverse=True, return_counts=True)
        tables = [uniq] * c
        indices[:] = inv
        counts.append(cnt)
    stride = max(len(t) for t in tables)
    if stride > MAX_STRIDE:
        raise ConverterError(expected(f"{what}: distinct values per channel", f"<= {MAX_STRIDE}", stride))
    need = max(1, math.ceil(math.log2(stride)))
    if bit_width is None:
        bit_width = need
    elif not need <= bit_width <= MAX_BITS:
        raise ConverterError(expected(f"{what}: bit_width", f"{need}..{MAX_BITS}", bit_width))
    value_tables = np.zeros((c, stride), dtype=bits.dtype)
    for ch, t in enumerate(tables):
        value_tables[ch, : len(t)] = t
    axis_nibble = (quant.quantized_dimension if c > 1 else 15) & 0xF if quant is not None else 15
    header = dcm_header(DECODE_TYPE_LUT, bytes([1, (axis_nibble << 4) | bit_width, stride]))
    table_bytes = value_tables.astype(bits.dtype.newbyteorder("<")).tobytes()
    return Encoded(
        method="lut",
        encoded=pack_indices(indices, bit_width),
        ancillary=header + table_bytes,
        original_bytes=int(values.nbytes),
        entropy_bound_bytes=float(sum(entropy_bytes(cnt) for cnt in counts)),
        table_bytes=len(header) + len(table_bytes),
        details={"bit_width": bit_width, "stride": stride, "tables": c,
                 "shared_table": not per_channel_tables},
    )


def decode(enc: Encoded, shape, dtype, quant: TensorQuant | None = None) -> np.ndarray:
    """Reference decoder: C (from ``quant``) tables of S entries; element i -> table[channel(i)][idx]."""
    dt = np.dtype(dtype)
    header = parse_dcm_header(enc.ancillary, DECODE_TYPE_LUT)
    bit_width = header[5] & 0x7
    stride = header[6]
    n = int(np.prod(shape)) if len(shape) else 1
    c, rule = channel_layout(tuple(shape), quant, "LUT decode")
    le = dt.newbyteorder("<")
    tables = np.frombuffer(bytes(enc.ancillary[16:]), dtype=le)
    if tables.size < c * stride:
        raise ConverterError(expected("LUT value tables", f"{c} x {stride} entries", tables.size))
    tables = tables[: c * stride].reshape(c, stride)
    idx = unpack_indices(enc.encoded, bit_width, n)
    if idx.size and idx.max() >= stride:
        raise ConverterError(expected("LUT index", f"< stride {stride}", int(idx.max())))
    chan = channel_of_elements(n, c, rule)
    return tables[chan, idx].astype(dt).reshape(shape)


__all__ = ["decode", "encode", "pack_indices", "unpack_indices"]
