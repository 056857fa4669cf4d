"""Insert TFLM DECODE operators for encoded tensors (reusing the tflite_micro wheel's tooling).

The graph surgery is the wheel's ``decode_insert.insert_decode_operators`` on a
``model_editor`` model (one DECODE per consumer, extra DECODE for subgraph outputs, buffer
dedupe); this module adds the checks the wheel leaves to ``compress()`` (tensors that kernels
read at Prepare must stay constant, via the wheel's ``constant_inputs``), refuses silently
dropped aliases, verifies each encoding with the reference decoder, clears the quantization the
wheel leaves on each encoded UINT8 stream (the decoded output keeps it), and re-serialises through
the wheel's C++ aligner so every buffer is 16-byte aligned (Python flatbuffers ignores
``force_align``).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping

import numpy as np

from converters import ConverterError
from converters.tflm import flatbuffer
from converters.tflm.encoding import Encoded
from edge_lottery.errors import expected

_DECODERS = {
    "lut": "converters.tflm.lut",
    "huffman": "converters.tflm.huffman_tables",
    "prune": "converters.tflm.prune",
}


def _compression():
    from tflite_micro.tensorflow.lite.micro.compression import compressor, constant_inputs, decode_insert

    return compressor, constant_inputs, decode_insert


def align(model_bytes: bytes) -> bytes:
    """Re-serialise with 16-byte aligned buffers through the wheel's C++ aligner.

    ``compress`` is reached via importlib because the package re-exports the *function*
    ``compress`` under the module's name (doc §11).
    """
    module = importlib.import_module("tflite_micro.tensorflow.lite.micro.compression.compress")
    return bytes(module._apply_flatbuffer_alignment(bytearray(model_bytes)))


def _excluded(model) -> dict[tuple[int, int], str]:
    _, constant_inputs, _ = _compression()
    out = {}
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors):
            if t.buffer is None:
                continue
            uses = constant_inputs.find_uses(sg, t)
            if uses:
                out[(s, i)] = "; ".join(u.describe() for u in uses)
    return out


def excluded_tensors(model_bytes: bytes) -> set[tuple[int, int]]:
    """(subgraph, tensor) pairs that must not be compressed: inputs kernels read at Prepare
    (PAD paddings, TRANSPOSE perm, STRIDED_SLICE begin/end/strides, EXPAND_DIMS axis, FILL dims,
    BROADCAST_TO shape, SPLIT/SPLIT_V axis, RESIZE_* size)."""
    return set(_excluded(flatbuffer.read_model(model_bytes)))


def verify_encoding(enc: Encoded, tensor_array: np.ndarray, quant) -> None:
    """Decode with the reference decoder and require the exact original bytes."""
    if enc.method not in _DECODERS:
        raise ConverterError(expected("encoding method", "lut, huffman or prune", enc.method))
    module = importlib.import_module(_DECODERS[enc.method])
    decoded = module.decode(enc, tensor_array.shape, tensor_array.dtype, quant)
    if np.ascontiguousarray(decoded).tobytes() != np.ascontiguousarray(tensor_array).tobytes():
        raise ConverterError(f"{enc.method} encoding does not decode to the tensor's bytes "
                             f"({tensor_array.dtype.name}{list(tensor_array.shape)}): refusing to insert it")


def insert_decode(model_bytes: bytes, encodings: Mapping[tuple[int, int], Encoded], *, verify: bool = True) -> bytes:
    """Return new model bytes where each encoded tensor is decoded by a TFLM DECODE operator.

    ``encodings`` maps (subgraph index, tensor index) to an :class:`Encoded`. With ``verify``
    every encoding is first decoded by the pure-numpy reference decoder and compared with the
    tensor's bytes, so a wrong encoding never reaches a device.
    """
    if not encodings:
        raise ConverterError(expected("encodings to insert", "at least one (subgraph, tensor) entry", "{}"))
    compressor, _, decode_insert = _compression()
    model = flatbuffer.read_model(model_bytes)
    excluded = _excluded(model)
    results = {}
    for key, enc in encodings.items():
        s, i = (int(key[0]), int(key[1]))
        if not 0 <= s < len(model.subgraphs) or not 0 <= i < len(model.subgraphs[s].tensors):
            raise ConverterError(expected("tensor to compress (subgraph, tensor)", "an existing tensor", (s, i)))
        tensor = model.subgraphs[s].tensors[i]
        label = f"tensor {tensor.name!r} (subgraph {s}, tensor {i})"
        if (s, i) in excluded:
            raise ConverterError(f"{label} must stay constant and cannot be compressed: {excluded[(s, i)]}")
        if tensor.buffer is None or not tensor.buffer.data:
            raise ConverterError(expected(f"{label}: buffer", "a constant tensor with data", "no data"))
        sg_obj = model.subgraphs[s]
        if not sg_obj.consumers_of(tensor) and tensor not in sg_obj.outputs:
            raise ConverterError(expected(f"{label}: readers", "an operator input or a subgraph output", "none"))
        if not isinstance(enc, Encoded):
            raise ConverterError(expected(f"{label}: encoding", "converters.tflm.encoding.Encoded", type(enc).__name__))
        if verify:
            dt = flatbuffer.numpy_dtype(tensor.dtype)
            arr = np.frombuffer(tensor.buffer.data, dtype=dt).reshape(tuple(int(d) for d in tensor.shape))
            verify_encoding(enc, arr, flatbuffer.quant_of(tensor))
        results[(s, i)] = compressor.CompressionResult(bytes(enc.encoded), bytes(enc.ancillary))
    # The wheel silently drops (with a warning) tensors whose buffer an uncompressed tensor shares.
    by_buffer: dict[int, list] = {}
    for sg_i, sg in enumerate(model.subgraphs):
        for t_i, t in enumerate(sg.tensors):
            if t.buffer is not None:
                by_buffer.setdefault(id(t.buffer), []).append((sg_i, t_i))
    for key in results:
        aliases = by_buffer.get(id(model.subgraphs[key[0]].tensors[key[1]].buffer), [])
        uncovered = [a for a in aliases if a not in results]
        if uncovered:
            raise ConverterError(expected(f"tensor {key} shares its buffer with", "compressed tensors only",
                                          f"uncompressed tensors {uncovered}"))
    encoded = [model.subgraphs[s].tensors[i] for s, i in results]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decode_insert.insert_decode_operators(model, results)
    for tensor in encoded:
        _clear_encoded_quantization(tensor)
    return align(bytes(model.build()))


def _clear_encoded_quantization(tensor) -> None:
    """Give an encoded tensor no quantization, as the runtime expects of a raw UINT8 stream.

    The wheel rewrites the original tensor in place as ``UINT8[len(encoded)]`` and sets the
    editor's ``quantization`` to None, but ``build()`` only copies a non-empty quantization into
    the wrapped ``TensorT``, so the original scales and zero points would be written out (12 B per
    channel). The DECODE kernel never reads them: channels, zero points and the fill value come
    from the decoded output tensor, which keeps the original quantization.
    """
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    if tensor.dtype != tflite.TensorType.UINT8 or tensor.quantization is not None:
        raise ConverterError(f"tensor {tensor.name!r} was not rewritten as a UINT8 encoded stream by the "
                             "tflite_micro DECODE inserter (unsupported tflite-micro version?)")
    tensor._fb.quantization = None  # the TensorT the editor serialises (model_editor.Tensor(_fb=...))


__all__ = ["align", "excluded_tensors", "insert_decode", "verify_encoding"]
