"""Shared encoding types: DCM header, TensorQuant from interpreter details, channel rules, chaining."""

from __future__ import annotations

import numpy as np
import pytest
from tflm_models import constant_output_model, decode_model, run_tflm

from converters import ConverterError
from converters.tflm import flatbuffer, prune
from converters.tflm.encoding import TensorQuant, channel_layout, channel_of_elements, dcm_header


def test_dcm_header_layout():
    h = dcm_header(1, bytes([1, 0x21]))
    assert h == bytes([1, 1, 0, 0, 1, 0x21]) + bytes(10)
    with pytest.raises(ConverterError, match="<= 12 bytes"):
        dcm_header(0, bytes(13))
    with pytest.raises(ConverterError, match="0..255"):
        dcm_header(256, b"")


def test_tensor_quant_from_interpreter_details_matches_flatbuffer():
    from ai_edge_litert.interpreter import Interpreter

    values = np.array([[1, 0, -3], [0, 5, 0]], dtype=np.int8)
    quant = TensorQuant(np.array([0.5, 0.25]), np.array([3, -4]), 0)
    plain = constant_output_model(values, quant)
    interp = Interpreter(model_content=plain)
    details = [d for d in interp.get_tensor_details() if d["name"] == "w"][0]
    from_details = TensorQuant.from_tflite_details(details["quantization_parameters"])
    assert from_details == quant
    assert TensorQuant.from_tflite_details(details) == quant
    read_back = [t for t in flatbuffer.constant_tensors(plain) if t.name == "w"][0]
    assert read_back.quant == quant and read_back.array.tolist() == values.tolist()
    assert TensorQuant.from_tflite_details({"scales": [], "zero_points": []}) == TensorQuant(None, None)


def test_channel_rules_follow_the_runtime():
    q_last = TensorQuant(np.ones(4), np.zeros(4), 2)
    assert channel_layout((2, 3, 4), q_last, "t") == (4, "inner")
    assert channel_of_elements(8, 4, "inner").tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    q0 = TensorQuant(np.ones(2), np.zeros(2), 0)
    assert channel_layout((2, 3), q0, "t") == (2, "outer")
    assert channel_of_elements(6, 2, "outer").tolist() == [0, 0, 0, 1, 1, 1]
    assert channel_layout((2, 3), None, "t") == (1, "none")
    with pytest.raises(ConverterError, match="quantized_dimension"):
        channel_layout((2, 3, 4), TensorQuant(np.ones(3), np.zeros(3), 1), "t")
    with pytest.raises(ConverterError, match="channels on axis 0"):
        channel_layout((3, 2), q0, "t")


def test_decode_cannot_be_chained_on_the_runtime():
    """A DECODE fed by another DECODE's output fails to prepare (doc §9): encoders never chain."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tflite

    values = np.array([0, 0, 7, 0, 0, 0, 0, 9], dtype=np.int8)
    enc = prune.encode(values)
    packed = decode_model(values, enc)
    assert run_tflm(packed)[0].tolist() == values.tolist()
    model = model_editor.read(packed)
    sg = model.subgraphs[0]
    first_out = sg.outputs[0]
    inner = prune.encode(np.frombuffer(b"\x01" * 8, dtype=np.int8))
    anc = sg.add_tensor(shape=(len(inner.ancillary),), dtype=tflite.TensorType.UINT8, data=inner.ancillary,
                        name="anc2")
    out2 = sg.add_tensor(shape=(8,), dtype=tflite.TensorType.INT8, name="chained")
    sg.add_operator(opcode=tflite.BuiltinOperator.CUSTOM, custom_code="TFLM_DECODE", inputs=[first_out, anc],
                    outputs=[out2])
    sg.outputs = [out2]
    with pytest.raises(RuntimeError):
        run_tflm(bytes(model.build()))
