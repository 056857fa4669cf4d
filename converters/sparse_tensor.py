"""The project's own writer of TFLite's sparse tensor format for FULLY_CONNECTED weights.

Why not the converter's ``Optimize.EXPERIMENTAL_SPARSITY``: for 1x16 (int8) and 1x4 (float32)
blocks it computes the blocked dimension as ``in_features // block`` and silently drops the
trailing partial block of every row (sparse-delegate-notes §5.5); it also falls back to
``DENSIFY`` for unstructured sparsity, which TFLite-Micro cannot run. This module writes the
``SparsityParameters`` itself (traversal order, block map, DENSE / CSR dimension metadata with
int32 segments and indices) into a model the converter produced densely, so the stock LiteRT
builtin kernels run it (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; sparse int8 FC fails under the
default XNNPACK delegate). Where ``in_features`` is not a multiple of the block, a ``PAD`` op
widens that FC's input with zeros (the input's zero point for int8), and the weight gets the
matching zero columns, so no weight is ever dropped.

Layouts written (the runtime kernels accept exactly these):

* int8 weights, int8 activations, zero points 0: 1x16 blocks, traversal ``[0, 1, 2]``,
  ``block_map [1]``, levels ``[DENSE(out), CSR(in/16), DENSE(16)]``; block column indices and
  blocks per row must fit a byte (the kernel's ledger).
* float32: 1x4 blocks the same way when whole blocks are zero (block / element sparsity >= 0.9),
  else unstructured CSR: traversal ``[0, 1]``, levels ``[DENSE(out), CSR(in)]``.

The flatbuffer is read and written with the TFLite schema's object API shipped in the
``tflite_micro`` wheel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converters import ConverterError
from edge_lottery.errors import expected

INT8_BLOCK = 16
FLOAT_BLOCK = 4
#: The converter's own threshold: below 30 % zeros a weight stays dense.
MIN_ZERO_FRACTION = 0.3
FLOAT_BLOCK_RATIO = 0.9
FC_SPARSE_VERSION = 8


def schema():
    """The TFLite flatbuffer schema module (object API)."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


@dataclass(frozen=True)
class SparseEncoding:
    """A rank-2 weight ``[out, in]`` in TFLite sparse format (``block`` = None: unstructured CSR)."""

    shape: tuple[int, int]
    block: int | None
    values: np.ndarray
    segments: np.ndarray
    indices: np.ndarray
    stats: dict = field(default_factory=dict)

    @property
    def traversal_order(self) -> list[int]:
        return [0, 1, 2] if self.block else [0, 1]

    @property
    def block_map(self) -> list[int]:
        return [1] if self.block else []

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.segments.nbytes + self.indices.nbytes)


def encode_fc(weights: np.ndarray, block: int | None) -> SparseEncoding:
    """Encode ``weights [out, in]``; with a block, ``in`` must be a multiple of it (pad first)."""
    w = np.asarray(weights)
    if w.ndim != 2:
        raise ConverterError(expected("sparse FC weight rank", 2, w.ndim))
    out_f, in_f = (int(d) for d in w.shape)
    if block:
        if in_f % block:
            raise ConverterError(expected(f"in_features for 1x{block} blocks", f"a multiple of {block}", in_f))
        blocks = w.reshape(out_f, in_f // block, block)
        keep = np.any(blocks != 0, axis=2)
        values = blocks[keep].reshape(-1)
    else:
        keep = w != 0
        values = w[keep]
    counts = keep.sum(axis=1)
    segments = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    indices = np.nonzero(keep)[1].astype(np.int32)
    return SparseEncoding((out_f, in_f), block, np.ascontiguousarray(values, dtype=w.dtype), segments, indices)


def decode_fc(enc: SparseEncoding) -> np.ndarray:
    """Dense weights from an encoding (reference for tests)."""
    out_f, in_f = enc.shape
    k = enc.block or 1
    dense = np.zeros((out_f, in_f // k, k), dtype=enc.values.dtype)
    vals = enc.values.reshape(-1, k)
    for row in range(out_f):
        lo, hi = int(enc.segments[row]), int(enc.segments[row + 1])
        dense[row, enc.indices[lo:hi]] = vals[lo:hi]
    return dense.reshape(out_f, in_f)


def decode_sparsity(values: np.ndarray, sparsity: object, shape: tuple[int, ...]) -> np.ndarray:
    """Dense array from a flatbuffer ``SparsityParametersT`` for FC layouts (used by inspect)."""
    dims = list(sparsity.dimMetadata) if sparsity.dimMetadata is not None else []
    order = [int(v) for v in sparsity.traversalOrder] if sparsity.traversalOrder is not None else []
    if order not in ([0, 1], [0, 1, 2]) or len(shape) != 2:
        raise ConverterError(expected("sparse layout", "an FC layout (traversal [0, 1] or [0, 1, 2])", order))
    block = int(dims[2].denseSize) if len(dims) == 3 else None
    seg = np.asarray(dims[1].arraySegments.values, dtype=np.int32)
    idx = np.asarray(dims[1].arrayIndices.values, dtype=np.int32)
    out_f = int(dims[0].denseSize)
    in_f = int(shape[1])
    k = block or 1
    cols = (in_f + k - 1) // k  # a converter-written tensor may have dropped the partial block
    dense = np.zeros((out_f, cols, k), dtype=values.dtype)
    vals = np.asarray(values).reshape(-1, k)
    for row in range(out_f):
        lo, hi = int(seg[row]), int(seg[row + 1])
        dense[row, idx[lo:hi]] = vals[lo:hi]
    return dense.reshape(out_f, cols * k)[:, :in_f]


def choose_block(weights: np.ndarray, dtype: np.dtype) -> int | None:
    """1x16 for int8; for float32 1x4 when whole blocks are zero, else unstructured CSR."""
    if dtype == np.int8:
        return INT8_BLOCK
    w = np.asarray(weights)
    pad = (-w.shape[1]) % FLOAT_BLOCK
    wp = np.pad(w, ((0, 0), (0, pad)))
    element = float(np.mean(w == 0))
    block = float(np.mean(~np.any(wp.reshape(w.shape[0], -1, FLOAT_BLOCK) != 0, axis=2)))
    return FLOAT_BLOCK if element > 0 and block / element >= FLOAT_BLOCK_RATIO else None


def _index_vector(values: np.ndarray) -> tuple[int, object]:
    s = schema()
    vec = s.Int32VectorT()
    vec.values = [int(v) for v in values]
    return s.SparseIndexVector.Int32Vector, vec


def sparsity_parameters(enc: SparseEncoding) -> object:
    s = schema()
    out_f, in_f = enc.shape
    dense0 = s.DimensionMetadataT()
    dense0.format = s.DimensionType.DENSE
    dense0.denseSize = out_f
    csr = s.DimensionMetadataT()
    csr.format = s.DimensionType.SPARSE_CSR
    csr.arraySegmentsType, csr.arraySegments = _index_vector(enc.segments)
    csr.arrayIndicesType, csr.arrayIndices = _index_vector(enc.indices)
    dims = [dense0, csr]
    if enc.block:
        inner = s.DimensionMetadataT()
        inner.format = s.DimensionType.DENSE
        inner.denseSize = enc.block
        dims.append(inner)
    sp = s.SparsityParametersT()
    sp.traversalOrder = enc.traversal_order
    sp.blockMap = enc.block_map
    sp.dimMetadata = dims
    return sp


def read_model(model_bytes: bytes) -> object:
    """The schema's ``ModelT``, or ConverterError("not a TFLite flatbuffer: ...")."""
    from converters.inspect import read_flatbuffer

    return read_flatbuffer(model_bytes)


def write_model(model: object) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_index(model: object, builtin: int) -> int:
    s = schema()
    for i, oc in enumerate(model.operatorCodes or []):
        if max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode)) == builtin:
            return i
    oc = s.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def _np_dtype(tensor_type: int) -> np.dtype | None:
    s = schema()
    return {s.TensorType.FLOAT32: np.dtype(np.float32), s.TensorType.INT8: np.dtype(np.int8),
            s.TensorType.INT16: np.dtype(np.int16)}.get(tensor_type)


def sparsify_model(model_bytes: bytes, min_zero_fraction: float = MIN_ZERO_FRACTION) -> bytes:
    """Rewrite every eligible FULLY_CONNECTED weight in sparse format; returns the new flatbuffer.

    Eligible: a constant rank-2 weight used by exactly one FC, float32 with float32 input or
    int8 (zero points 0) with int8 input, with at least ``min_zero_fraction`` zeros, and a
    sparse encoding smaller than the dense one. Other weights are left as they are.
    """
    s = schema()
    model = read_model(model_bytes)
    fc_ops = []
    for opcode_i, oc in enumerate(model.operatorCodes or []):
        if max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode)) == s.BuiltinOperator.FULLY_CONNECTED:
            fc_ops.append(opcode_i)
    if not fc_ops:
        return bytes(model_bytes)
    changed = False
    for sg in model.subgraphs or []:
        uses: dict[int, int] = {}
        for op in sg.operators or []:
            for t in list(op.inputs if op.inputs is not None else []):
                uses[int(t)] = uses.get(int(t), 0) + 1
        buffer_uses: dict[int, int] = {}
        for t in sg.tensors:
            buffer_uses[int(t.buffer)] = buffer_uses.get(int(t.buffer), 0) + 1
        new_ops = []
        for op in sg.operators or []:
            if op.opcodeIndex in fc_ops and _sparsify_fc(model, sg, op, uses, buffer_uses, min_zero_fraction, new_ops):
                changed = True
            new_ops.append(op)
        sg.operators = new_ops
    return write_model(model) if changed else bytes(model_bytes)


def _sparsify_fc(model, sg, op, uses, buffer_uses, min_zero_fraction, new_ops) -> bool:
    inputs = list(op.inputs)
    if len(inputs) < 2 or inputs[1] < 0:
        return False
    x_t, w_t = sg.tensors[inputs[0]], sg.tensors[inputs[1]]
    if w_t.sparsity is not None or uses.get(inputs[1], 0) != 1 or buffer_uses.get(int(w_t.buffer), 0) != 1:
        return False
    buf = model.buffers[w_t.buffer]
    dtype = _np_dtype(w_t.type)
    if buf.data is None or len(buf.data) == 0 or dtype is None or len(w_t.shape) != 2:
        return False
    if dtype != _np_dtype(x_t.type) or dtype == np.int16:
        return False  # hybrid and int16x8 FC have no matching sparse kernel
    if dtype == np.int8:
        q = w_t.quantization
        if q is None or q.zeroPoint is None or any(int(z) != 0 for z in q.zeroPoint):
            return False
    w = np.frombuffer(bytes(np.asarray(buf.data, dtype=np.uint8)), dtype=dtype).reshape(tuple(w_t.shape))
    if w.size == 0 or float(np.mean(w == 0)) < min_zero_fraction:
        return False
    block = choose_block(w, dtype)
    in_f = int(w.shape[1])
    pad = (-in_f) % block if block else 0
    if pad and (len(x_t.shape) == 0 or int(x_t.shape[-1]) != in_f):
        return False
    wp = np.pad(w, ((0, 0), (0, pad))) if pad else w
    enc = encode_fc(wp, block)
    if block == INT8_BLOCK:
        per_row = np.diff(enc.segments)
        if (enc.indices.size and int(enc.indices.max()) > 255) or (per_row.size and int(per_row.max()) > 255):
            return False  # the int8 kernel's ledger stores both as bytes
    if enc.nbytes >= w.nbytes:
        return False
    if pad:
        op.inputs[0] = _insert_pad(model, sg, inputs[0], pad, new_ops)
        w_t.shape = [int(w.shape[0]), in_f + pad]
        if w_t.shapeSignature is not None and len(w_t.shapeSignature):
            w_t.shapeSignature = [int(w.shape[0]), in_f + pad]
    buf.data = np.frombuffer(enc.values.tobytes(), dtype=np.uint8)
    w_t.sparsity = sparsity_parameters(enc)
    oc = model.operatorCodes[op.opcodeIndex]
    if oc.version < FC_SPARSE_VERSION:
        # FC version 8 is "sparse weights"; a shared opcode is bumped for all its users, which
        # the builtin resolver accepts since it registers versions 1..N.
        oc.version = FC_SPARSE_VERSION
    return True


def _insert_pad(model, sg, x_index: int, pad: int, new_ops: list) -> int:
    """Add ``PAD(x, [[0, 0], ..., [0, pad]])`` before the current op; return the padded tensor index."""
    import copy

    s = schema()
    x_t = sg.tensors[x_index]
    rank = len(x_t.shape)
    paddings = np.zeros((rank, 2), dtype=np.int32)
    paddings[-1, 1] = pad
    pbuf = s.BufferT()
    pbuf.data = np.frombuffer(paddings.tobytes(), dtype=np.uint8)
    model.buffers.append(pbuf)
    p_t = s.TensorT()
    p_t.shape = [rank, 2]
    p_t.type = s.TensorType.INT32
    p_t.buffer = len(model.buffers) - 1
    p_t.name = (x_t.name.decode("utf-8", "replace") if isinstance(x_t.name, bytes) else str(x_t.name or "x")) + "/sparse_pad/paddings"
    sg.tensors.append(p_t)
    y_t = copy.deepcopy(x_t)
    y_t.buffer = 0
    y_t.shape = [*list(x_t.shape)[:-1], int(x_t.shape[-1]) + pad]
    if y_t.shapeSignature is not None and len(y_t.shapeSignature):
        y_t.shapeSignature = [*list(x_t.shapeSignature)[:-1], int(x_t.shape[-1]) + pad]
    y_t.name = p_t.name.replace("/paddings", "/output")
    sg.tensors.append(y_t)
    pad_op = s.OperatorT()
    pad_op.opcodeIndex = _opcode_index(model, s.BuiltinOperator.PAD)
    pad_op.inputs = [x_index, len(sg.tensors) - 2]
    pad_op.outputs = [len(sg.tensors) - 1]
    pad_op.builtinOptionsType = s.BuiltinOptions.PadOptions
    pad_op.builtinOptions = s.PadOptionsT()
    new_ops.append(pad_op)
    return len(sg.tensors) - 1


__all__ = [
    "SparseEncoding",
    "choose_block",
    "decode_fc",
    "decode_sparsity",
    "encode_fc",
    "read_model",
    "sparsify_model",
    "sparsity_parameters",
    "write_model",
]
