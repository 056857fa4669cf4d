"""Shared types of the TFLite-Micro DECODE encoders (LUT, HUFFMAN, PRUNE).

Every encoder module (:mod:`converters.tflm.lut`, :mod:`converters.tflm.huffman_tables`,
:mod:`converters.tflm.prune`) exposes ``encode(values, quant) -> Encoded`` and a pure-numpy
reference ``decode(enc, shape, dtype, quant)``; the pipeline only sees :class:`Encoded`.
The byte layouts follow ``docs/tflm-packing.md`` (and the DECODE format reference it cites).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from converters import ConverterError
from edge_lottery.errors import expected

DCM_HEADER_BYTES = 16
DCM_VERSION = 1

DECODE_TYPE_LUT = 0
DECODE_TYPE_HUFFMAN = 1
DECODE_TYPE_PRUNE = 2

DECODE_TYPES = {"lut": DECODE_TYPE_LUT, "huffman": DECODE_TYPE_HUFFMAN, "prune": DECODE_TYPE_PRUNE}

#: Output dtypes the DECODE kernels write (LUT and PRUNE; HUFFMAN only int8/int16).
SUPPORTED_DTYPES = (np.bool_, np.float32, np.int8, np.int16, np.int32, np.int64)


@dataclass(frozen=True)
class TensorQuant:
    """Quantization of the tensor being encoded, as TFLite stores it.

    ``scales`` / ``zero_points`` have one entry per channel (length 1 = per-tensor);
    ``None`` means the tensor is not quantized. LUT and PRUNE need this because the runtime
    takes the channel count, the channel axis and the PRUNE fill value from the output tensor.
    """

    scales: np.ndarray | None
    zero_points: np.ndarray | None
    quantized_dimension: int = 0

    def __post_init__(self) -> None:
        if self.scales is not None:
            object.__setattr__(self, "scales", np.asarray(self.scales, dtype=np.float32).reshape(-1))
        if self.zero_points is not None:
            object.__setattr__(self, "zero_points", np.asarray(self.zero_points, dtype=np.int64).reshape(-1))
        if self.scales is not None and self.zero_points is None:
            object.__setattr__(self, "zero_points", np.zeros(len(self.scales), dtype=np.int64))
        if self.scales is None and self.zero_points is not None and len(self.zero_points):
            object.__setattr__(self, "scales", np.ones(len(self.zero_points), dtype=np.float32))
        if (self.scales is not None and self.zero_points is not None
                and len(self.scales) != len(self.zero_points)):
            raise ConverterError(expected("TensorQuant zero_points length", len(self.scales),
                                          len(self.zero_points)))

    @property
    def is_quantized(self) -> bool:
        return self.scales is not None and len(self.scales) > 0

    @property
    def channels(self) -> int:
        """Number of quantization channels C (1 when not quantized or per-tensor)."""
        return int(len(self.scales)) if self.is_quantized else 1

    @classmethod
    def from_tflite_details(cls, details: dict) -> TensorQuant:
        """Build from ``interpreter.get_tensor_details()[i]["quantization_parameters"]``.

        Also accepts a whole tensor-details dict (it then looks up ``quantization_parameters``).
        """
        if "quantization_parameters" in details:
            details = details["quantization_parameters"]
        scales = np.asarray(details.get("scales", []), dtype=np.float32).reshape(-1)
        zps = np.asarray(details.get("zero_points", []), dtype=np.int64).reshape(-1)
        if scales.size == 0:
            return cls(None, None, 0)
        if zps.size == 0:
            zps = np.zeros(scales.size, dtype=np.int64)
        return cls(scales, zps, int(details.get("quantized_dimension", 0)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorQuant):
            return NotImplemented
        return (_arr_eq(self.scales, other.scales) and _arr_eq(self.zero_points, other.zero_points)
                and self.quantized_dimension == other.quantized_dimension)

    def __hash__(self) -> int:
        return hash((None if self.scales is None else self.scales.tobytes(),
                     None if self.zero_points is None else self.zero_points.tobytes(),
                     self.quantized_dimension))


def _arr_eq(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True)
class Encoded:
    """One tensor encoded for the TFLM DECODE operator.

    ``encoded`` becomes the UINT8 encoded tensor, ``ancillary`` the UINT8 ancillary tensor
    (16-byte DCM header + type data). Sizes are kept here so that reports never re-derive them.
    """

    method: str
    encoded: bytes
    ancillary: bytes
    original_bytes: int
    entropy_bound_bytes: float
    table_bytes: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def packed_bytes(self) -> int:
        """Bytes the two constant tensors take in the model (before flatbuffer alignment)."""
        return len(self.encoded) + len(self.ancillary)

    @property
    def decode_type(self) -> int:
        return self.ancillary[0] if self.ancillary else DECODE_TYPES[self.method]

    @property
    def ratio(self) -> float:
        """Packed size / dense size (< 1 means the encoding saves space)."""
        return self.packed_bytes / self.original_bytes if self.original_bytes else math.nan


def dcm_header(decode_type: int, type_bytes: bytes) -> bytes:
    """The 16-byte DECODE Common Metadata header.

    ``type_bytes`` are header bytes 4.. (type-specific version first, at most 12 bytes); the
    rest is zero-filled.
    """
    type_bytes = bytes(type_bytes)
    if not 0 <= decode_type <= 255:
        raise ConverterError(expected("DCM decode type", "0..255", decode_type))
    if len(type_bytes) > DCM_HEADER_BYTES - 4:
        raise ConverterError(expected("DCM type-specific header length", "<= 12 bytes", len(type_bytes)))
    head = bytes([decode_type, DCM_VERSION, 0, 0]) + type_bytes
    return head + bytes(DCM_HEADER_BYTES - len(head))


def parse_dcm_header(ancillary: bytes, decode_type: int | None = None) -> bytes:
    """Check the DCM header and return the 16 header bytes (for the reference decoders)."""
    if len(ancillary) < DCM_HEADER_BYTES:
        raise ConverterError(expected("ancillary data length", f">= {DCM_HEADER_BYTES} bytes", len(ancillary)))
    if ancillary[1] != DCM_VERSION:
        raise ConverterError(expected("DCM version (byte 1)", DCM_VERSION, ancillary[1]))
    if decode_type is not None and ancillary[0] != decode_type:
        raise ConverterError(expected("DCM decode type (byte 0)", decode_type, ancillary[0]))
    if ancillary[4] != 1:
        raise ConverterError(expected("decode type version (byte 4)", 1, ancillary[4]))
    return bytes(ancillary[:DCM_HEADER_BYTES])


# --- helpers shared by the encoders -------------------------------------------------------------

def describe(values: np.ndarray) -> str:
    """``int8[32, 64]``: how error messages name a tensor."""
    return f"{np.dtype(values.dtype).name}{list(values.shape)}"


def check_dtype(values: np.ndarray, method: str, allowed: tuple) -> np.dtype:
    dt = np.dtype(values.dtype)
    if dt not in [np.dtype(a) for a in allowed]:
        names = ", ".join(np.dtype(a).name for a in allowed)
        raise ConverterError(expected(f"{method} encoding of tensor {describe(values)}: dtype",
                                      f"one of {names}", dt.name))
    return dt


def to_little_endian(values: np.ndarray) -> np.ndarray:
    """The array in little-endian byte order (TFLite buffers are little-endian)."""
    return np.asarray(values).astype(np.dtype(values.dtype).newbyteorder("<"), copy=False)


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bit_patterns(values: np.ndarray) -> np.ndarray:
    """The elements' bits as unsigned integers of the same width, so values compare bitwise
    (float -0.0 differs from 0.0, NaNs compare by payload)."""
    values = np.ascontiguousarray(values)
    return values.view(_UINT_OF_SIZE[values.dtype.itemsize])


def channel_layout(shape: tuple[int, ...], quant: TensorQuant | None, what: str) -> tuple[int, str]:
    """Channel count C and rule ("none" | "outer" | "inner") as the DECODE runtime resolves them.

    Mirrors the runtime: no quantization -> one channel; ``quantized_dimension == rank-1``
    with C > 1 -> element i is in channel ``i % C`` ("inner"); ``quantized_dimension == 0``
    -> channel ``i // (n / C)`` ("outer"); anything else is rejected by the runtime, so here too.
    """
    if quant is None or not quant.is_quantized:
        return 1, "none"
    c = quant.channels
    rank = len(shape)
    qd = quant.quantized_dimension
    if rank >= 1 and qd == rank - 1 and c > 1:
        if shape[-1] != c:
            raise ConverterError(expected(f"{what}: channels on the last axis of shape {list(shape)}",
                                          shape[-1], c))
        return c, "inner"
    if qd == 0:
        n = int(np.prod(shape)) if rank else 1
        if c > 1 and (rank == 0 or shape[0] != c):
            raise ConverterError(expected(f"{what}: channels on axis 0 of shape {list(shape)}",
                                          shape[0] if rank else 1, c))
        if c > 1 and n % c:
            raise ConverterError(expected(f"{what}: element count divisible by channels", c, n))
        return c, "outer"
    raise ConverterError(expected(f"{what}: quantized_dimension (TFLM DECODE supports 0 or the last axis)",
                                  f"0 or {rank - 1}", qd))


def channel_of_elements(n: int, c: int, rule: str) -> np.ndarray:
    """Channel index of every flattened element under the runtime's rule."""
    idx = np.arange(n, dtype=np.int64)
    if rule == "inner":
        return idx % c
    if rule == "outer" and c > 1:
        return idx // (n // c)
    return np.zeros(n, dtype=np.int64)


def entropy_bytes(symbol_counts: np.ndarray) -> float:
    """Shannon bound, in bytes, of coding the symbols with these counts independently."""
    counts = np.asarray(symbol_counts, dtype=np.float64)
    counts = counts[counts > 0]
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts / total
    return float(-(counts * np.log2(p)).sum() / 8.0)


__all__ = [
    "DCM_HEADER_BYTES",
    "DECODE_TYPES",
    "DECODE_TYPE_HUFFMAN",
    "DECODE_TYPE_LUT",
    "DECODE_TYPE_PRUNE",
    "Encoded",
    "TensorQuant",
    "bit_patterns",
    "channel_layout",
    "channel_of_elements",
    "dcm_header",
    "entropy_bytes",
    "parse_dcm_header",
]
