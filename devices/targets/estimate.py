"""The estimate target: analytical latency, memory traffic and energy from a device profile.

For boards and phones that are not attached. The .tflite flatbuffer is read with LiteRT's schema
bindings; each operator gets a MAC count (convolutions, fully connected, matmul), an element
count (elementwise, pooling, activations), the bytes it reads and writes, and for ``TFLM_DECODE``
the decoded elements, the encoded + ancillary bytes read and the decode type. A profile
(:mod:`devices.profiles`) turns these into

- latency: per operator ``max(cycles / f_clk, bytes / bandwidth)`` plus a fixed dispatch cost;
- energy: ``P_active * latency`` (datasheet route) when the profile gives ``active_power_mw``,
  and always the operation route ``sum(MACs * e_MAC + elements * e_op + bytes * e_mem)`` from
  Horowitz (ISSCC 2014), reported separately as ``energy_ops``.

Every figure is ``kind="estimated"``: a prior to rank models, not a measurement. The MACs of
each operator come from :func:`converters.inspect.inspect_model` (one MAC counter for
``edge-lottery inspect`` and the estimate); dtype, element counts and byte traffic are counted
here because only the analytical model needs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters import ConverterError
from converters.inspect import fb_text, inspect_model, operator_codes, operator_tensors, read_flatbuffer
from devices import DeviceError
from devices.environment import host_environment
from devices.profiles import DeviceProfile, list_profiles, load_profile
from devices.records import BenchRecord, Figure, model_sha256
from devices.settings import BenchSettings
from edge_lottery.errors import expected

DECODE_TYPES = {0: "LUT", 1: "HUFFMAN", 2: "PRUNE"}
_DTYPES = {0: ("float32", 4), 1: ("float16", 2), 2: ("int32", 4), 3: ("uint8", 1), 4: ("int64", 8),
           6: ("bool", 1), 7: ("int16", 2), 9: ("int8", 1), 10: ("float64", 8), 12: ("uint64", 8),
           15: ("uint32", 4), 16: ("uint16", 2), 17: ("int4", 0.5)}
# Operators costed per MAC (the counts come from converters.inspect); the others per element.
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL", "CONV_3D")
FREE_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE_NOOP")


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: float
    buffer_bytes: int

    @property
    def elements(self) -> int:
        return int(math.prod(max(1, d) for d in self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return int(math.ceil(self.elements * self.itemsize))


@dataclass(frozen=True)
class Graph:
    tensors: tuple[TensorInfo, ...]
    ops: tuple[tuple[str, tuple[int, ...], tuple[int, ...], Any], ...]  # (name, inputs, outputs, options)
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom_codes: tuple[str, ...]
    data: bytes = field(default=b"", repr=False, compare=False)  # the flatbuffer (MACs, DECODE headers)


@dataclass(frozen=True)
class OpCount:
    """What one operator costs, counted from the flatbuffer."""

    index: int
    name: str
    dtype: str
    macs: int = 0
    elements: int = 0            # element operations of non-MAC operators
    weight_bytes: int = 0        # constant inputs read (encoded + ancillary for DECODE)
    activation_bytes: int = 0    # non-constant inputs read + outputs written
    decode_type: str = ""
    decoded_elements: int = 0
    details: dict = field(default_factory=dict)


def read_model(model: bytes) -> Graph:
    """Subgraph 0 of a .tflite flatbuffer: tensors, operators (with options), inputs, outputs."""
    try:
        m = read_flatbuffer(model)
    except ConverterError as exc:
        raise DeviceError(f"model: {exc}") from None
    op_codes = operator_codes(m)
    codes = [c.name for c in op_codes]
    custom_codes = [c.name for c in op_codes if c.custom]
    sub = m.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors or []):
        dtype, itemsize = _DTYPES.get(int(t.type), (f"type{t.type}", 1))
        buf = m.buffers[t.buffer] if m.buffers and t.buffer < len(m.buffers) else None
        nbytes = 0
        if buf is not None:
            if buf.data is not None:
                nbytes = len(buf.data)
            elif getattr(buf, "size", 0):
                nbytes = int(buf.size)
        name = fb_text(t.name)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        tensors.append(TensorInfo(i, name, shape, dtype, itemsize, nbytes))
    ops = []
    for k, op in enumerate(sub.operators or []):
        ins, outs, bad = operator_tensors(op, len(tensors))
        if not 0 <= op.opcodeIndex < len(codes) or bad is not None:
            raise DeviceError(f"model: operator {k} refers to "
                              + (f"tensor {bad} of {len(tensors)}" if bad is not None else
                                 f"operator code {op.opcodeIndex} of {len(codes)}") + " (corrupted .tflite?)")
        ops.append((codes[op.opcodeIndex], ins, outs, op.builtinOptions))
    graph_ins = tuple(int(x) for x in (sub.inputs if sub.inputs is not None else []))
    graph_outs = tuple(int(x) for x in (sub.outputs if sub.outputs is not None else []))
    if any(not 0 <= x < len(tensors) for x in graph_ins + graph_outs):
        raise DeviceError(f"model: subgraph inputs/outputs {list(graph_ins)}/{list(graph_outs)} beyond its "
                          f"{len(tensors)} tensors (corrupted .tflite?)")
    return Graph(tuple(tensors), tuple(ops), graph_ins, graph_outs, tuple(custom_codes), bytes(model))


def count_operations(model: bytes | Graph) -> list[OpCount]:
    """Per-operator MACs, element operations and bytes, DECODE included."""
    graph = model if isinstance(model, Graph) else read_model(model)
    t = graph.tensors
    op_macs = _subgraph0_macs(graph.data) if graph.data else {}
    counts = []
    for index, (name, ins, outs, options) in enumerate(graph.ops):
        inputs = [t[i] for i in ins if i >= 0]
        outputs = [t[i] for i in outs if i >= 0]
        const = [x for x in inputs if x.buffer_bytes]
        act_in = [x for x in inputs if not x.buffer_bytes]
        weight_bytes = sum(x.buffer_bytes for x in const)
        activation_bytes = sum(x.nbytes for x in act_in) + sum(x.nbytes for x in outputs)
        out = outputs[0] if outputs else None
        dtype = (act_in[0].dtype if act_in else (out.dtype if out else "float32"))
        macs = elements = decoded = 0
        decode_type = ""
        if name == "TFLM_DECODE":
            types = set()
            for k, o in enumerate(outputs):
                ancillary = t[ins[2 * k + 1]] if 2 * k + 1 < len(ins) else None
                types.add(_decode_type(graph.data, ancillary) if graph.data else "default")
                decoded += o.elements
            decode_type = "+".join(sorted(types))
            activation_bytes = sum(o.nbytes for o in outputs)
            dtype = out.dtype if out else "int8"
        elif name in MAC_OPS:
            macs = op_macs.get(index, 0)
            if name == "TRANSPOSE_CONV" and len(inputs) > 2:
                dtype = inputs[2].dtype  # inputs: output shape, weights, activations
        elif name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
            window = int(getattr(options, "filterHeight", 1) or 1) * int(getattr(options, "filterWidth", 1) or 1)
            elements = out.elements * window
        elif name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
            elements = act_in[0].elements if act_in else 0
        elif name in FREE_OPS:
            activation_bytes = weight_bytes = 0
        elif out is not None:
            elements = sum(o.elements for o in outputs)
        counts.append(OpCount(index, name, dtype, macs, elements, weight_bytes, activation_bytes,
                              decode_type, decoded))
    return counts


def _subgraph0_macs(model: bytes) -> dict[int, int]:
    """MACs of subgraph 0's operators by index, from the converters' inspector."""
    try:
        info = inspect_model(model)
    except ConverterError as exc:  # read_model accepted it, so this is a corrupt file
        raise DeviceError(f"model: {exc}") from None
    return {op.index: op.macs for op in info.ops if op.subgraph == 0}


def _decode_type(model: bytes, ancillary: TensorInfo | None) -> str:
    """Decode type from byte 0 of the ancillary tensor's DCM header."""
    if ancillary is None or ancillary.buffer_bytes < 16:
        return "default"
    data = _buffer_bytes(model, ancillary.index)
    return DECODE_TYPES.get(data[0], f"custom{data[0]}") if data else "default"


def _buffer_bytes(model: bytes, tensor_index: int) -> bytes:
    from ai_edge_litert import schema_py_generated as schema

    m = schema.Model.GetRootAs(bytearray(model), 0)
    tensor = m.Subgraphs(0).Tensors(tensor_index)
    buf = m.Buffers(tensor.Buffer())
    if buf.DataLength():
        return bytes(buf.DataAsNumpy()[:16].tobytes())
    if buf.Size():
        return bytes(model[buf.Offset(): buf.Offset() + 16])
    return b""


@dataclass(frozen=True)
class Estimate:
    """The totals of one model on one profile (seconds, joules, counts)."""

    latency_s: float
    compute_s: float
    memory_s: float
    energy_j: float | None
    energy_ops_j: float
    macs: int
    elements: int
    weight_bytes: int
    activation_bytes: int
    decoded_elements: int
    per_op: tuple[tuple[OpCount, float], ...]


def _table(mapping: Any, key: str, default: float) -> float:
    if isinstance(mapping, dict):
        return float(mapping.get(key, mapping.get("default", default)))
    return float(mapping) if mapping is not None else default


def estimate(model: bytes | Graph, profile: DeviceProfile) -> Estimate:
    """Apply ``profile`` to the operator counts of ``model``."""
    ops = count_operations(model)
    f = profile.clock_mhz * 1e6
    bandwidth = profile.memory_bandwidth_mb_s * 1e6
    e = profile.energy
    total = compute_total = memory_total = 0.0
    energy_ops = 0.0
    per_op = []
    for op in ops:
        if op.name == "TFLM_DECODE":
            cycles = sum(_table(profile.decode_cycles_per_element, kind, 8.0)
                         for kind in op.decode_type.split("+")) / max(1, len(op.decode_type.split("+")))
            cycles *= op.decoded_elements
        elif op.macs:
            cycles = op.macs * profile.cpm(op.name, op.dtype)
        else:
            cycles = op.elements * _table(profile.cycles_per_element, op.name, 1.0)
        cycles += profile.op_overhead_cycles
        compute = cycles / f
        memory = (op.weight_bytes + op.activation_bytes) / bandwidth
        latency = max(compute, memory)
        total += latency
        compute_total += compute
        memory_total += memory
        energy_ops += 1e-12 * (
            op.macs * _table(e.get("mac_pj"), op.dtype, 4.6)
            + (op.elements + op.decoded_elements) * _table(e.get("element_op_pj"), op.dtype, 0.9)
            + op.weight_bytes * float(e.get("weight_pj_per_byte", 12.5))
            + op.activation_bytes * float(e.get("activation_pj_per_byte", 2.5)))
        per_op.append((op, latency))
    power_mw = float(e.get("active_power_mw", 0.0) or 0.0)
    energy = power_mw * 1e-3 * total if power_mw > 0 else None
    return Estimate(total, compute_total, memory_total, energy, energy_ops,
                    sum(o.macs for o in ops), sum(o.elements for o in ops), sum(o.weight_bytes for o in ops),
                    sum(o.activation_bytes for o in ops), sum(o.decoded_elements for o in ops), tuple(per_op))


def parse_profile_spec(arg: str | None) -> DeviceProfile:
    """``PROFILE`` or ``PROFILE@MHZ`` (a bundled name or a .toml path) -> profile."""
    if not arg:
        raise DeviceError(expected("estimate target", "estimate:PROFILE with PROFILE one of "
                                   + ", ".join(list_profiles()), "estimate"))
    name, _, clock = arg.partition("@")
    profile = load_profile(name)
    if clock:
        try:
            mhz = float(clock.lower().removesuffix("mhz"))
        except ValueError:
            raise DeviceError(expected("estimate clock", "PROFILE@MHZ, e.g. cortex-m4-80mhz@120", arg)) from None
        profile = profile.with_clock(mhz)
    return profile


class EstimateTarget:
    """A device profile applied to the model's operator counts; all figures ``estimated``."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.name = f"estimate:{profile.name}"

    def run(self, model_path: Path, settings: BenchSettings) -> list[BenchRecord]:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise DeviceError(expected("model", "an existing .tflite file", str(model_path)))
        if settings.mode == "accuracy":
            raise DeviceError("the estimate target cannot measure accuracy; use --target host or tflm with "
                              "--mode accuracy --inputs NPZ")
        profile = self.profile
        if "clock_mhz" in settings.extra:
            profile = profile.with_clock(float(settings.extra["clock_mhz"]))
        model = model_path.read_bytes()
        est = estimate(model, profile)
        basis = f"profile {profile.name} ({profile.calibration})"
        figures = [
            Figure("latency_p50", est.latency_s * 1e3, "ms", "estimated", f"analytical; {basis}"),
            Figure("latency_compute", est.compute_s * 1e3, "ms", "estimated", "sum of cycles / clock"),
            Figure("latency_memory", est.memory_s * 1e3, "ms", "estimated", "sum of bytes / bandwidth"),
            Figure("throughput", 1.0 / est.latency_s if est.latency_s else math.nan, "inferences/s",
                   "estimated", basis),
            Figure("macs", est.macs, "MACs", "estimated", "counted from the .tflite"),
            Figure("element_ops", est.elements, "count", "estimated", "non-MAC element operations"),
            Figure("weight_bytes_read", est.weight_bytes, "bytes", "estimated",
                   "constant tensors read per inference (encoded + ancillary for DECODE)"),
            Figure("activation_bytes_moved", est.activation_bytes, "bytes", "estimated",
                   "activation bytes read + written per inference"),
            Figure("energy_ops", est.energy_ops_j * 1e6, "uJ", "estimated",
                   "Horowitz ISSCC 2014 45 nm operation + memory energy (lower bound)"),
            Figure("model_size", len(model), "bytes", "measured", "file size"),
        ]
        if est.decoded_elements:
            figures.append(Figure("decoded_elements", est.decoded_elements, "count", "estimated",
                                  "elements produced by TFLM_DECODE per inference"))
        if est.energy_j is not None:
            figures.insert(4, Figure("energy_per_inference", est.energy_j * 1e6, "uJ", "estimated",
                                     f"P_active {profile.energy['active_power_mw']} mW x latency; {basis}"))
        else:
            figures.insert(4, Figure("energy_per_inference", est.energy_ops_j * 1e6, "uJ", "estimated",
                                     "operation route only (no datasheet power in profile)"))
        if settings.extra.get("profile_ops", "0") not in ("0", "", "false"):
            for op, latency in est.per_op:
                label = f"op{op.index:03d}_{op.name}"
                figures.append(Figure(f"{label}_latency", latency * 1e3, "ms", "estimated", f"{op.dtype}"))
                figures.append(Figure(f"{label}_macs", op.macs, "MACs", "estimated", "counted"))
        env = host_environment(device={"kind": "estimate", "profile": profile.to_json(),
                                       "sources": dict(profile.sources)})
        return [BenchRecord(model=str(model_path), model_sha256=model_sha256(model), target=self.name,
                            settings=settings.to_json(), environment=env, figures=tuple(figures))]


def make_target(arg: str | None) -> EstimateTarget:
    return EstimateTarget(parse_profile_spec(arg))


def op_table(model: bytes) -> Sequence[OpCount]:
    """Per-operator counts, for ``--profile-ops`` tables."""
    return count_operations(model)
