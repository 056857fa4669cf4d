"""Read-only helpers over .tflite flatbuffers for the TFLM packers.

Reading goes through the tflite_micro wheel's ``model_editor`` (the same reader the DECODE
inserter uses) so that tensor indices agree with ``insert_decode``. ``buffer_spans`` locates
each buffer's bytes inside the file, which the archive needs to restore files byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converters import ConverterError
from converters.tflm.encoding import TensorQuant
from edge_lottery.errors import expected


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    return tflite


def _editor():
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    return model_editor


def numpy_dtype(tensor_type: int) -> np.dtype:
    """Little-endian numpy dtype of a TFLite TensorType (BOOL included)."""
    tflite = _schema()
    if tensor_type == tflite.TensorType.BOOL:
        return np.dtype(np.bool_)
    from tflite_micro.tensorflow.lite.micro.compression import tensor_type as tt

    try:
        return tt.to_numpy(tensor_type)
    except ValueError as err:
        raise ConverterError(expected("tensor type", "a numeric or bool type", tt.name(tensor_type))) from err


def tensor_type(dtype) -> int:
    """TFLite TensorType of a numpy dtype."""
    tflite = _schema()
    table = {
        np.dtype(np.bool_): tflite.TensorType.BOOL,
        np.dtype(np.int8): tflite.TensorType.INT8,
        np.dtype(np.uint8): tflite.TensorType.UINT8,
        np.dtype(np.int16): tflite.TensorType.INT16,
        np.dtype(np.int32): tflite.TensorType.INT32,
        np.dtype(np.int64): tflite.TensorType.INT64,
        np.dtype(np.float16): tflite.TensorType.FLOAT16,
        np.dtype(np.float32): tflite.TensorType.FLOAT32,
        np.dtype(np.float64): tflite.TensorType.FLOAT64,
    }
    dt = np.dtype(dtype).newbyteorder("=")
    if dt not in table:
        raise ConverterError(expected("numpy dtype", "a TFLite tensor type", dt.name))
    return table[dt]


def read_model(model_bytes: bytes):
    """``model_editor.read`` with a one-line ConverterError for foreign bytes."""
    data = bytes(model_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ConverterError(expected("TFLite flatbuffer", "file identifier 'TFL3' at bytes 4..7",
                                      data[4:8] if len(data) >= 8 else f"{len(data)} bytes"))
    try:
        return _editor().read(data)
    except Exception as err:  # the flatbuffers reader raises assorted errors on corrupt input
        raise ConverterError(f"TFLite flatbuffer could not be read: {type(err).__name__}: {err}") from err


def check_structure(model_bytes: bytes) -> None:
    """One-line ConverterErrors for a model that is not safe to hand to C++ readers: the file
    identifier, tensor and operator indices (``converters.inspect``, in Python), then the
    flatbuffers verifier (LiteRT's, run when its interpreter loads the model).  The wheel's C++
    aligner and TFLite-Micro index the tables without checking them, so such bytes would crash
    them."""
    from converters.inspect import inspect_model

    inspect_model(model_bytes)
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # no LiteRT here: the index checks still run
        Interpreter = None
    if Interpreter is not None:
        try:
            Interpreter(model_content=bytes(model_bytes),
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        except ValueError as exc:
            if "not a valid Flatbuffer" in str(exc):
                raise ConverterError(f"TFLite flatbuffer: cannot parse its {len(model_bytes)} bytes, the flatbuffers "
                                     "verifier rejects them (truncated or corrupted?)") from None
        except RuntimeError:  # a verified flatbuffer with ops LiteRT lacks (TFLM_DECODE): not our question
            pass


def quant_of(tensor) -> TensorQuant | None:
    """TensorQuant of a model_editor Tensor (None when it has no affine scales)."""
    q = tensor.quantization if tensor.quantization is not None else None
    if q is None:
        fb = tensor._fb.quantization
        if fb is None or fb.scale is None or len(fb.scale) == 0:
            return None
        return TensorQuant(np.asarray(fb.scale), np.asarray(fb.zeroPoint if fb.zeroPoint is not None else []),
                           int(fb.quantizedDimension or 0))
    scales = np.atleast_1d(np.asarray(q.scales, dtype=np.float32))
    if scales.size == 0:
        return None
    zps = np.atleast_1d(np.asarray(q.zero_points, dtype=np.int64))
    if zps.size == 1 and scales.size > 1:
        zps = np.full(scales.size, int(zps[0]))
    return TensorQuant(scales, zps, int(q.axis or 0))


@dataclass(frozen=True)
class ConstantTensor:
    """A constant (buffer-backed) tensor of a model."""

    subgraph: int
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: TensorQuant | None
    data: bytes

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=self.dtype.newbyteorder("<")).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def constant_tensors(model_bytes: bytes) -> list[ConstantTensor]:
    """Every tensor that carries buffer data, with its quantization, in (subgraph, index) order."""
    model = read_model(model_bytes)
    out = []
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors):
            if t.buffer is None or not t.buffer.data:
                continue
            try:
                dt = numpy_dtype(t.dtype)
            except ConverterError:
                continue
            out.append(ConstantTensor(s, i, t.name or f"tensor_{i}", tuple(int(d) for d in t.shape), dt,
                                      quant_of(t), bytes(t.buffer.data)))
    return out


def buffer_spans(model_bytes: bytes) -> list[tuple[int, int]]:
    """(file offset, length) of every buffer's data, indexed like ``Model.buffers``.

    Covers both inline data vectors and the >2 GB layout (``Buffer.offset``/``size``).
    """
    tflite = _schema()
    data = bytes(model_bytes)
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        spans = []
        for b in range(model.BuffersLength()):
            buf = model.Buffers(b)
            if buf.Offset() and buf.Offset() > 1:
                spans.append((int(buf.Offset()), int(buf.Size())))
                continue
            n = buf.DataLength()
            if n == 0:
                spans.append((0, 0))
                continue
            o = buf._tab.Offset(4)  # field 'data' (vtable slot 0)
            start = buf._tab.Vector(o)
            spans.append((int(start), int(n)))
    except Exception as err:
        raise ConverterError(f"TFLite flatbuffer could not be read: {type(err).__name__}: {err}") from err
    return spans


def tensor_buffer_index(model_bytes: bytes) -> dict[tuple[int, int], int]:
    """(subgraph, tensor) -> buffer index, read straight from the flatbuffer."""
    tflite = _schema()
    model = tflite.Model.GetRootAsModel(bytes(model_bytes), 0)
    out = {}
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.TensorsLength()):
            out[(s, i)] = int(sg.Tensors(i).Buffer())
    return out


__all__ = [
    "ConstantTensor",
    "buffer_spans",
    "constant_tensors",
    "numpy_dtype",
    "quant_of",
    "read_model",
    "tensor_buffer_index",
    "tensor_type",
]
