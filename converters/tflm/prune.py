"""TFLite-Micro DECODE type 2 (PRUNE): a 1-bit-per-element bitmap + the kept values.

Encoded tensor: one bit per output element, MSB-first (1 = next kept value, 0 = fill value),
zero-padded to a multiple of ``pad_to`` bytes (4 by default: the Xtensa path reads 32-bit
chunks). Ancillary: 16-byte DCM header + the kept values in element order, in the output dtype,
little-endian. The fill value is what the runtime derives from the *output* tensor's
quantization (see ``fill_values``); exactly the elements whose bits equal their fill value are
dropped, compared bitwise so float -0.0 is kept.
"""

from __future__ import annotations

import math

import numpy as np

from converters import ConverterError
from converters.tflm.encoding import (
    DECODE_TYPE_PRUNE,
    SUPPORTED_DTYPES,
    Encoded,
    TensorQuant,
    bit_patterns,
    channel_layout,
    channel_of_elements,
    check_dtype,
    dcm_header,
    describe,
    parse_dcm_header,
    to_little_endian,
)
from edge_lottery.errors import expected


def fill_values(shape: tuple[int, ...], dtype, quant: TensorQuant | None, what: str = "PRUNE") -> np.ndarray:
    """Fill value of every flattened element, as the DECODE runtime chooses it (doc §6.4)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if len(shape) else 1
    if quant is None or not quant.is_quantized:
        return np.zeros(n, dtype=dt)
    c, rule = channel_layout(tuple(shape), quant, what)
    zps = quant.zero_points
    if dt != np.int8:
        if np.any(zps != 0):
            raise ConverterError(expected(f"{what}: zero points of a {dt.name} tensor (TFLM PRUNE)",
                                          "all 0", zps.tolist()))
        return np.zeros(n, dtype=dt)
    if c > 1 and np.any(zps != 0):
        return zps[channel_of_elements(n, c, rule)].astype(np.int8)
    return np.full(n, zps[0], dtype=np.int8)


def encode(values: np.ndarray, quant: TensorQuant | None = None, *, pad_to: int = 4) -> Encoded:
    """PRUNE-encode a tensor of any DECODE dtype; the fill value follows ``quant`` (doc §6.4)."""
    values = np.asarray(values)
    dt = check_dtype(values, "PRUNE", SUPPORTED_DTYPES)
    what = f"PRUNE encoding of tensor {describe(values)}"
    if values.size == 0:
        raise ConverterError(expected(f"{what}: element count", ">= 1", 0))
    flat = to_little_endian(values.reshape(-1)).astype(dt.newbyteorder("<"))
    fill = fill_values(values.shape, dt, quant, what).astype(flat.dtype)
    keep = bit_patterns(flat) != bit_patterns(fill)
    bitmap = np.packbits(keep.astype(np.uint8)).tobytes()
    if pad_to > 1:
        bitmap += bytes(-len(bitmap) % pad_to)
    kept = flat[keep]
    ancillary = dcm_header(DECODE_TYPE_PRUNE, bytes([1])) + kept.tobytes()
    n = values.size
    k = int(keep.sum())
    p = k / n
    h = 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return Encoded(
        method="prune",
        encoded=bitmap,
        ancillary=ancillary,
        original_bytes=int(values.nbytes),
        # positions at their binary entropy + kept values verbatim
        entropy_bound_bytes=n * h / 8 + kept.nbytes,
        table_bytes=16,
        details={"kept": k, "elements": n, "density": p, "bitmap_bytes": len(bitmap)},
    )


def decode(enc: Encoded, shape, dtype, quant: TensorQuant | None = None) -> np.ndarray:
    """Reference decoder following the runtime: bitmap MSB-first, fill from the output quantization."""
    dt = np.dtype(dtype)
    parse_dcm_header(enc.ancillary, DECODE_TYPE_PRUNE)
    n = int(np.prod(shape)) if len(shape) else 1
    bits = np.unpackbits(np.frombuffer(bytes(enc.encoded), dtype=np.uint8))
    if bits.size < n:
        raise ConverterError(expected("PRUNE bitmap length", f">= {math.ceil(n / 8)} bytes", len(enc.encoded)))
    keep = bits[:n].astype(bool)
    le = dt.newbyteorder("<")
    values = np.frombuffer(bytes(enc.ancillary[16:]), dtype=le)
    if values.size < keep.sum():
        raise ConverterError(expected("PRUNE kept values", int(keep.sum()), values.size))
    out = fill_values(tuple(shape), dt, quant).astype(le)
    out[keep] = values[: int(keep.sum())]
    return out.astype(dt).reshape(shape)


__all__ = ["decode", "encode", "fill_values"]
