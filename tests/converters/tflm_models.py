"""Test helpers: decode-only TFLite models run on the stock TFLite-Micro interpreter.

A decode-only model (doc §12.4) has a dummy int8 input (a model without inputs crashes the
Python wrapper) and lists one constant tensor as its subgraph output. ``insert_decode`` then
appends a DECODE whose output replaces it, so invoking the model returns the decoded tensor
and the test compares it with the original bytes.
"""

from __future__ import annotations

import numpy as np

from converters.tflm import flatbuffer
from converters.tflm.encoding import Encoded, TensorQuant
from converters.tflm.insert import insert_decode


def constant_output_model(values: np.ndarray, quant: TensorQuant | None = None, name: str = "w") -> bytes:
    """A model whose only output is the constant ``values`` (tensor index 1)."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    values = np.ascontiguousarray(values)
    q = None
    if quant is not None and quant.is_quantized:
        q = model_editor.Quantization(scales=[float(s) for s in quant.scales],
                                      zero_points=[int(z) for z in quant.zero_points],
                                      axis=int(quant.quantized_dimension))
    le = values.astype(values.dtype.newbyteorder("<"), copy=False)
    model = model_editor.Model()
    sg = model.add_subgraph()
    dummy = sg.add_tensor(shape=(1,), dtype=tflite.TensorType.INT8, name="dummy")
    const = sg.add_tensor(shape=values.shape, dtype=flatbuffer.tensor_type(values.dtype),
                          data=le.tobytes(), quantization=q, name=name)
    sg.inputs = [dummy]
    sg.outputs = [const]
    return bytes(model.build())


def decode_model(values: np.ndarray, enc: Encoded, quant: TensorQuant | None = None, *, verify: bool = True) -> bytes:
    return insert_decode(constant_output_model(values, quant), {(0, 1): enc}, verify=verify)


def run_tflm(model_bytes: bytes, inputs: list[np.ndarray] | None = None, *, alt_memory: int = 0,
             arena_size: int | None = None, n_outputs: int = 1) -> list[np.ndarray]:
    """Invoke once on the stock TFLM interpreter; returns every output."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(bytes(model_bytes), custom_op_registerers=[],
                                            arena_size=arena_size, alt_decompression_memory_size=alt_memory)
    for i, x in enumerate(inputs if inputs is not None else [np.zeros((1,), dtype=np.int8)]):
        interp.set_input(x, i)
    interp.invoke()
    outs = [np.array(interp.get_output(i)) for i in range(n_outputs)]
    return outs


def decoded_on_tflm(values: np.ndarray, enc: Encoded, quant: TensorQuant | None = None, **kw) -> np.ndarray:
    """Decode ``enc`` on the stock interpreter (via a decode-only model) and return the output."""
    return run_tflm(decode_model(values, enc, quant), **kw)[0]


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
