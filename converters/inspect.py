"""Inspect any .tflite file: operators, tensors, sparsity, DECODE encodings, sizes and MACs.

Works on flatbuffers this project did not write. It reads the file with the TFLite schema's
object API (shipped in the ``tflite_micro`` wheel) and never runs it, so models with custom
operators (``TFLM_DECODE``) or sparse tensors inspect fine. :func:`inspect_model` is the API the
devices package reuses for analytical estimates (``ModelInfo.ops[i].macs``, ``total_macs``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from converters import ConverterError

DECODE_CUSTOM_CODE = "TFLM_DECODE"
DECODE_TYPE_NAMES = {0: "LUT", 1: "HUFFMAN", 2: "PRUNE"}


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _enum_names(cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_NUMPY = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT8": np.int8, "UINT8": np.uint8,
    "INT16": np.int16, "UINT16": np.uint16, "INT32": np.int32, "UINT32": np.uint32, "INT64": np.int64,
    "UINT64": np.uint64, "BOOL": np.bool_,
}


@dataclass(frozen=True)
class TensorInfo:
    subgraph: int
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer_bytes: int
    is_constant: bool
    quantization: dict[str, Any] | None = None
    zero_fraction: float | None = None
    sparsity: dict[str, Any] | None = None
    encoding: str | None = None  # "PRUNE encoded" / "HUFFMAN ancillary" for DECODE inputs

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def dense_bytes(self) -> int:
        """Bytes the tensor takes when stored dense (what DECODE writes into the arena)."""
        dt = _NUMPY.get(self.dtype)
        return self.elements * (np.dtype(dt).itemsize if dt is not None else 0)


@dataclass(frozen=True)
class DecodeInfo:
    """One encoded/ancillary pair of a TFLM DECODE operator."""

    decode_type: int
    type_name: str
    encoded_tensor: int
    ancillary_tensor: int
    output_tensor: int
    encoded_bytes: int
    ancillary_bytes: int
    decoded_bytes: int

    @property
    def packed_bytes(self) -> int:
        return self.encoded_bytes + self.ancillary_bytes


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    macs: int = 0
    subgraph: int = 0
    version: int = 1
    decode: tuple[DecodeInfo, ...] = ()


@dataclass(frozen=True)
class ModelInfo:
    size_bytes: int
    schema_version: int
    description: str
    subgraphs: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    ops: list[OpInfo] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def operator_names(self) -> list[str]:
        return sorted({op.name for op in self.ops})

    @property
    def constant_bytes(self) -> int:
        return sum(t.buffer_bytes for t in self.tensors if t.is_constant)

    @property
    def decodes(self) -> list[DecodeInfo]:
        return [d for op in self.ops for d in op.decode]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"], d["outputs"] = list(self.inputs), list(self.outputs)
        d["total_macs"] = self.total_macs
        d["operator_names"] = self.operator_names
        d["constant_bytes"] = self.constant_bytes
        for t in d["tensors"]:
            t["shape"] = list(t["shape"])
            if t["zero_fraction"] is not None and math.isnan(t["zero_fraction"]):
                t["zero_fraction"] = None
        return d


def fb_text(value: Any) -> str:
    """A flatbuffer string field as text: bytes decoded as UTF-8 (corrupt bytes replaced), None as ''."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value) if value is not None else ""


class OperatorCode(NamedTuple):
    name: str     # the builtin's name, or a custom op's own code (TFLM_DECODE ...); unknown builtins OP_<n>
    version: int
    custom: bool  # a CUSTOM operator


def operator_codes(model: Any) -> list[OperatorCode]:
    """The operator codes of a schema ``ModelT``, in order (operators refer to them by index)."""
    s = _schema()
    op_names = _enum_names(s.BuiltinOperator)
    codes = []
    for oc in model.operatorCodes or []:
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        custom = code == s.BuiltinOperator.CUSTOM
        text = fb_text(oc.customCode)
        codes.append(OperatorCode(text if custom and text else op_names.get(code, f"OP_{code}"),
                                  int(oc.version or 1), custom))
    return codes


def operator_tensors(op: Any, ntensors: int) -> tuple[tuple[int, ...], tuple[int, ...], int | None]:
    """An operator's input and output tensor indices, and the first of them outside its subgraph's
    ``ntensors`` tensors (None when all are inside; -1 is an omitted optional input)."""
    ins = tuple(int(i) for i in (op.inputs if op.inputs is not None else []))
    outs = tuple(int(i) for i in (op.outputs if op.outputs is not None else []))
    bad = next((i for i in ins + outs if not -1 <= i < ntensors), None)
    return ins, outs, bad


def _fail(why: str) -> ConverterError:
    return ConverterError(f"not a TFLite flatbuffer: {why}")


def read_flatbuffer(data: bytes) -> Any:
    """The schema's ``ModelT`` for ``data``, or ConverterError("not a TFLite flatbuffer: ...")."""
    data = bytes(data)
    if len(data) < 8:
        raise _fail(f"expected at least 8 bytes, received {len(data)}")
    if data[4:8] != b"TFL3":
        raise _fail(f"expected file identifier 'TFL3' at bytes 4-7, received {data[4:8]!r}")
    root = int.from_bytes(data[:4], "little")
    if root >= len(data):
        raise _fail(f"root table offset {root} beyond the file's {len(data)} bytes (truncated?)")
    try:
        model = _schema().ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # the reader raises IndexError, struct.error, ValueError ... on junk
        raise _fail(f"cannot parse its {len(data)} bytes (truncated or corrupted?)") from exc
    if not model.subgraphs:
        raise _fail("no subgraphs")
    for b, buf in enumerate(model.buffers or []):
        if buf.offset and buf.offset > 1 and buf.offset + buf.size > len(data):
            raise _fail(f"buffer {b} ends at byte {buf.offset + buf.size}, beyond the file's {len(data)} bytes")
    return model


def _buffer_bytes(data: bytes, buf: Any) -> bytes:
    if buf is None:
        return b""
    if buf.offset and buf.offset > 1:
        return data[buf.offset: buf.offset + buf.size]
    if buf.data is None:
        return b""
    return bytes(np.asarray(buf.data, dtype=np.uint8))


def _quant(q: Any) -> dict[str, Any] | None:
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scales = [float(s) for s in q.scale]
    zps = [int(z) for z in q.zeroPoint] if q.zeroPoint is not None else [0] * len(scales)
    return {"scales": scales, "zero_points": zps, "quantized_dimension": int(q.quantizedDimension or 0),
            "per_channel": len(scales) > 1}


def _sparsity(sp: Any, dim_names: dict[int, str]) -> dict[str, Any] | None:
    if sp is None:
        return None
    dims = []
    for d in sp.dimMetadata or []:
        entry: dict[str, Any] = {"format": dim_names.get(int(d.format), str(d.format))}
        if int(d.format) == 0:
            entry["dense_size"] = int(d.denseSize)
        else:
            entry["segments"] = len(d.arraySegments.values) if d.arraySegments is not None else 0
            entry["indices"] = len(d.arrayIndices.values) if d.arrayIndices is not None else 0
        dims.append(entry)
    return {
        "traversal_order": [int(v) for v in sp.traversalOrder] if sp.traversalOrder is not None else [],
        "block_map": [int(v) for v in sp.blockMap] if sp.blockMap is not None else [],
        "dim_metadata": dims,
    }


def _macs(name: str, op: Any, shapes: list[tuple[int, ...]]) -> int:
    def shape(i: int) -> tuple[int, ...] | None:
        return shapes[i] if 0 <= i < len(shapes) else None

    ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
    outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
    if len(ins) < 2 or not outs:
        return 0
    w, y = shape(ins[1]), shape(outs[0])
    if not w or not y:
        return 0
    out_elems = int(np.prod(y))
    if name == "BATCH_MATMUL":  # out[..., M, N] = x[..., M, K] @ y[..., K, N]; adj_x transposes x
        x = shape(ins[0])
        if not x:
            return 0
        adj_x = bool(getattr(op.builtinOptions, "adjX", False))
        return out_elems * int(x[-2] if adj_x and len(x) >= 2 else x[-1])
    if name == "FULLY_CONNECTED":
        return out_elems * int(w[-1])
    if name == "CONV_2D":  # weights [Cout, KH, KW, Cin / groups]
        return out_elems * int(np.prod(w[1:]))
    if name == "DEPTHWISE_CONV_2D":  # weights [1, KH, KW, Cout]
        return out_elems * int(w[1]) * int(w[2])
    if name == "CONV_3D":  # weights [KD, KH, KW, Cin, Cout]
        return out_elems * int(np.prod(w[:-1]))
    if name == "TRANSPOSE_CONV" and len(ins) >= 3:  # inputs: output_shape, weights, input
        x = shape(ins[2])
        return int(np.prod(x)) * int(w[0]) * int(w[1]) * int(w[2]) if x else 0
    return 0


def inspect_model(model_bytes: bytes) -> ModelInfo:
    """Describe a TFLite flatbuffer without running it."""
    data = bytes(model_bytes)
    model = read_flatbuffer(data)
    type_names = _enum_names(_schema().TensorType)
    dim_names = {0: "DENSE", 1: "SPARSE_CSR"}
    codes = operator_codes(model)
    buffers = model.buffers or []
    tensors: list[TensorInfo] = []
    ops: list[OpInfo] = []
    for g, sg in enumerate(model.subgraphs):
        shapes: list[tuple[int, ...]] = []
        raw: list[bytes] = []
        for i, t in enumerate(sg.tensors or []):
            shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
            shapes.append(shape)
            content = _buffer_bytes(data, buffers[t.buffer]) if 0 < t.buffer < len(buffers) else b""
            raw.append(content)
            dtype = type_names.get(int(t.type), str(t.type))
            zero = None
            if content and dtype in _NUMPY and len(content) % np.dtype(_NUMPY[dtype]).itemsize == 0:
                values = np.frombuffer(content, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<"))
                dense = int(np.prod(shape)) if shape else 1
                # a sparse-format tensor stores only some values; zeros are measured against the dense shape
                zero = 1.0 - float(np.count_nonzero(values)) / dense if dense else 0.0
            name = fb_text(t.name)
            tensors.append(TensorInfo(g, i, name, shape, dtype, len(content), bool(content), _quant(t.quantization),
                                      zero, _sparsity(t.sparsity, dim_names)))
        for k, op in enumerate(sg.operators or []):
            name, version = codes[op.opcodeIndex][:2] if op.opcodeIndex < len(codes) else (f"OPCODE_{op.opcodeIndex}", 1)
            ins, outs, bad = operator_tensors(op, len(shapes))
            if bad is not None:
                raise _fail(f"operator {k} of subgraph {g} refers to tensor {bad}, but the subgraph has "
                            f"{len(shapes)} tensors")
            decode: list[DecodeInfo] = []
            if name == DECODE_CUSTOM_CODE:
                for p, out_t in enumerate(outs):
                    if 2 * p + 1 >= len(ins):
                        break
                    enc_t, anc_t = ins[2 * p], ins[2 * p + 1]
                    anc = raw[anc_t] if 0 <= anc_t < len(raw) else b""
                    dtype = type_names.get(int(sg.tensors[out_t].type), "")
                    item = np.dtype(_NUMPY[dtype]).itemsize if dtype in _NUMPY else 0
                    dtype_code = anc[0] if anc else -1
                    decode.append(DecodeInfo(
                        dtype_code, DECODE_TYPE_NAMES.get(dtype_code, f"CUSTOM_{dtype_code}"), enc_t, anc_t, out_t,
                        len(raw[enc_t]) if 0 <= enc_t < len(raw) else 0, len(anc),
                        (int(np.prod(shapes[out_t])) if shapes[out_t] else 1) * item,
                    ))
            ops.append(OpInfo(k, name, ins, outs, _macs(name, op, shapes), g, version, tuple(decode)))
            for d in decode:
                for t_i, role in ((d.encoded_tensor, "encoded"), (d.ancillary_tensor, "ancillary")):
                    pos = len(tensors) - len(sg.tensors) + t_i
                    if 0 <= t_i < len(sg.tensors):
                        tensors[pos] = replace(tensors[pos], zero_fraction=None, encoding=f"{d.type_name} {role}")
    first = model.subgraphs[0]
    desc = fb_text(model.description)
    return ModelInfo(len(data), int(model.version or 0), desc, len(model.subgraphs),
                     tuple(int(i) for i in (first.inputs if first.inputs is not None else [])),
                     tuple(int(i) for i in (first.outputs if first.outputs is not None else [])), ops, tensors)


def format_text(info: ModelInfo) -> str:
    """Human-readable summary (the CLI prints this)."""
    lines = [f"TFLite model: {info.size_bytes} B, schema v{info.schema_version}, {info.subgraphs} subgraph(s), "
             f"{len(info.ops)} operators, {info.total_macs:,} MACs, constants {info.constant_bytes} B"]
    if info.description:
        lines.append(f"description: {info.description}")
    lines.append("")
    lines.append("operators:")
    by_t = {(t.subgraph, t.index): t for t in info.tensors}
    for op in info.ops:
        macs = f"  {op.macs:,} MACs" if op.macs else ""
        lines.append(f"  [{op.subgraph}:{op.index:3d}] {op.name} v{op.version}  in {list(op.inputs)} out "
                     f"{list(op.outputs)}{macs}")
        for d in op.decode:
            out = by_t.get((op.subgraph, d.output_tensor))
            lines.append(f"        DECODE {d.type_name}: {out.name if out else d.output_tensor} "
                         f"{d.decoded_bytes} B -> {d.encoded_bytes} + {d.ancillary_bytes} B")
    lines.append("")
    lines.append("tensors:")
    for t in info.tensors:
        q = ""
        if t.quantization:
            qq = t.quantization
            q = (f" q[{len(qq['scales'])} ch, axis {qq['quantized_dimension']}]" if qq["per_channel"]
                 else f" q[scale {qq['scales'][0]:.3g}, zp {qq['zero_points'][0] if qq['zero_points'] else '-'}]")
        extra = ""
        if t.is_constant:
            extra = f" {t.buffer_bytes} B"
            if t.zero_fraction is not None:
                extra += f", {100 * t.zero_fraction:.1f}% zeros"
        if t.encoding:
            extra += f", {t.encoding}"
        if t.sparsity:
            formats = "/".join(d["format"] for d in t.sparsity["dim_metadata"])
            extra += f", sparse {formats} block_map {t.sparsity['block_map']}"
        shape = "x".join(str(d) for d in t.shape) or "scalar"
        lines.append(f"  [{t.subgraph}:{t.index:3d}] {t.name[:60]} {t.dtype}[{shape}]{q}{extra}")
    return "\n".join(lines)


__all__ = ["DecodeInfo", "ModelInfo", "OpInfo", "TensorInfo", "format_text", "inspect_model", "read_flatbuffer"]
