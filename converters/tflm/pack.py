"""Pack a TFLite model for TFLite-Micro: choose an encoding per weight, insert DECODE, verify.

``pack(model_bytes, method, representative_inputs)``:

1. takes every constant weight / bias of FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D,
   TRANSPOSE_CONV and CONV_3D that TFLite-Micro may decode (not in
   :func:`~converters.tflm.insert.excluded_tensors`);
2. encodes it with the asked method, or with ``auto`` tries HUFFMAN, PRUNE and LUT and keeps
   the smallest, or none where packing would grow the tensor (counting the flatbuffer overhead
   of the DECODE pair), recording why per tensor;
3. inserts DECODE operators (:func:`~converters.tflm.insert.insert_decode`, 16-byte aligned);
4. VERIFIES before returning: the stock ``tflite_micro.runtime.Interpreter`` runs the packed and
   the unpacked model on the representative inputs, in the normal arena and with alternate
   decompression memory; every output must match bit for bit, else :class:`ConverterError`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from converters import ConverterError
from converters.report import PackReport, TensorReport
from converters.tflm import arena
from edge_lottery.errors import expected

PACK_METHODS: tuple[str, ...] = ("auto", "huffman", "prune", "lut", "none")
ENCODERS: dict[str, str] = {
    "huffman": "converters.tflm.huffman_tables",
    "prune": "converters.tflm.prune",
    "lut": "converters.tflm.lut",
}
#: builtin operator name -> input positions holding weights / biases.
WEIGHT_OPERANDS: dict[str, tuple[int, ...]] = {
    "FULLY_CONNECTED": (1, 2),
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "TRANSPOSE_CONV": (1, 3),
    "CONV_3D": (1, 2),
}
#: Operators TFLite-Micro has no kernel for that converters emit (tensorflow/tflite-micro#491).
TFLM_UNSUPPORTED: tuple[str, ...] = ("DENSIFY",)


@dataclass(frozen=True)
class PackResult:
    model_bytes: bytes
    report: PackReport


def _editor_model(model_bytes: bytes) -> Any:
    from converters.tflm import flatbuffer

    flatbuffer.check_structure(model_bytes)  # what the editor and the aligner would trip over later
    model = flatbuffer.read_model(model_bytes)
    try:  # the editor decodes names lazily
        for sg in model.subgraphs:
            for t in sg.tensors:
                _ = t.name
    except UnicodeDecodeError as exc:
        raise ConverterError(f"TFLite flatbuffer could not be read: a tensor name is not UTF-8 ({exc})") from None
    return model


def check_tflm_operators(model: Any) -> None:
    """Refuse operators and sparse tensors TFLite-Micro cannot run, in one line."""
    for s, sg in enumerate(model.subgraphs):
        for op in sg.operators:
            name = op.opcode_name
            if name in TFLM_UNSUPPORTED:
                raise ConverterError(
                    expected(f"operators for TFLite-Micro (subgraph {s}, operator {op.index})",
                             "no DENSIFY (convert without --sparse / EXPERIMENTAL_SPARSITY)", name)
                )
        for t in sg.tensors:
            if getattr(t._fb, "sparsity", None) is not None:
                raise ConverterError(expected(f"tensor {t.name!r} for TFLite-Micro", "dense storage",
                                              "TFLite sparse format (convert without --sparse)"))


def _candidates(model: Any, excluded: set[tuple[int, int]]) -> tuple[list[tuple[int, Any, str]], dict]:
    """(subgraph, tensor, role) of weights/biases to encode, plus reasons for skipped constants."""
    chosen: dict[tuple[int, int], tuple[int, Any, str]] = {}
    skipped: dict[tuple[int, int], tuple[int, Any, str]] = {}
    for s, sg in enumerate(model.subgraphs):
        for op in sg.operators:
            positions = WEIGHT_OPERANDS.get(op.opcode_name, ())
            for pos, t in enumerate(op.inputs):
                if t is None or t.buffer is None or not t.buffer.data:
                    continue
                key = (s, t.index)
                if pos in positions and key not in excluded:
                    chosen.setdefault(key, (s, t, "weight" if pos == 1 else "bias"))
                elif key not in chosen:
                    why = (f"read at Prepare by {op.opcode_name}" if key in excluded
                           else f"input {pos} of {op.opcode_name} is not a weight or bias")
                    skipped.setdefault(key, (s, t, why))
    for key in chosen:
        skipped.pop(key, None)
    return sorted(chosen.values(), key=lambda c: (c[0], c[1].index)), skipped


def _encode(method: str, values: np.ndarray, quant: Any) -> Any:
    return importlib.import_module(ENCODERS[method]).encode(values, quant)


def _describe(t: Any, values: np.ndarray) -> dict[str, Any]:
    return {"name": t.name or f"tensor_{t.index}", "dtype": values.dtype.name,
            "shape": tuple(int(d) for d in values.shape), "original_bytes": int(values.nbytes)}


def _drop_unprofitable(model_bytes: bytes, chosen: dict, reports: list[TensorReport], insert_decode: Any) -> tuple:
    """``auto``: keep only encodings that shrink the whole model, DECODE overhead included.

    What a packed tensor costs beyond its data (the DECODE operator, the ancillary and decoded
    tensor tables and names, 16-byte alignment) is measured on built models, not guessed: from
    the smallest saving up, a tensor is dropped when the model without it is no larger.
    """
    by_key = {(r.subgraph, r.index): i for i, r in enumerate(reports)}
    savings = {k: reports[by_key[k]].original_bytes - e.packed_bytes for k, e in chosen.items()}
    packed = insert_decode(model_bytes, chosen)
    for k in sorted(savings, key=savings.get):
        rest = {j: e for j, e in chosen.items() if j != k}
        trial = insert_decode(model_bytes, rest) if rest else model_bytes
        if len(trial) > len(packed):
            break
        r = reports[by_key[k]]
        overhead = savings[k] + len(packed) - len(trial)
        reports[by_key[k]] = replace(
            r, method="none", packed_bytes=r.original_bytes, entropy_bound_bytes=0.0, table_bytes=0,
            reason=(f"packing would grow the model (best {chosen[k].method} saves {savings[k]} B of data, "
                    f"its DECODE costs {overhead} B)"))
        del chosen[k]
        packed = trial
    n = len(chosen)
    overhead = (len(packed) - len(model_bytes) + sum(savings[k] for k in chosen)) / n if n else 0.0
    return packed, overhead


def pack(
    model_bytes: bytes,
    method: str = "auto",
    representative_inputs: np.ndarray | None = None,
    *,
    measure_arena: bool = True,
    alt_decompression_memory_size: int | None = None,
) -> PackResult:
    """Pack, insert DECODE, verify bit-exactly on TFLite-Micro, and report sizes.

    ``representative_inputs``: rows of model inputs (float rows are quantized with the model's
    input scale), or a list of such arrays for a multi-input model; ``None`` verifies on 8
    seeded random inputs. Every output is compared. ``measure_arena`` bisects the
    minimum arena before and after packing (a few seconds).
    """
    from converters.tflm import flatbuffer
    from converters.tflm.insert import excluded_tensors, insert_decode

    if method not in PACK_METHODS:
        raise ConverterError(expected("pack method", f"one of {', '.join(PACK_METHODS)}", method))
    model_bytes = bytes(model_bytes)
    model = _editor_model(model_bytes)
    check_tflm_operators(model)
    arena.check_no_crash(model_bytes)  # the reference run below is in this process
    if representative_inputs is None:
        inputs = arena.random_inputs(model_bytes)
        source = "8 seeded random inputs"
    else:
        inputs = (list(representative_inputs) if isinstance(representative_inputs, list)
                  else np.asarray(representative_inputs))
        first = inputs[0] if isinstance(inputs, list) else inputs
        if first.ndim == 0 or len(first) == 0:
            raise ConverterError(expected("representative inputs", "at least one row", list(first.shape)))
        source = f"{len(first)} representative inputs"
    if isinstance(inputs, list) and not inputs:
        raise ConverterError(expected("model inputs", "at least one (subgraph 0 lists none)", 0))
    n_rows = len(inputs[0]) if isinstance(inputs, list) else len(inputs)
    arena_size = max(1 << 16, 10 * len(model_bytes))
    reference = arena.run(model_bytes, inputs, arena_size=arena_size, all_outputs=True)

    excluded = excluded_tensors(model_bytes)
    candidates, skipped = _candidates(model, excluded)
    reports: list[TensorReport] = []
    chosen: dict[tuple[int, int], Any] = {}
    tried = [method] if method in ENCODERS else (list(ENCODERS) if method == "auto" else [])
    for s, t, role in candidates:
        values = t.array
        quant = flatbuffer.quant_of(t)
        info = _describe(t, values)
        encs: dict[str, Any] = {}
        cands: dict[str, int | str] = {}
        for m in tried:
            try:
                encs[m] = _encode(m, values, quant)
                cands[m] = encs[m].packed_bytes
            except ConverterError as exc:
                cands[m] = str(exc)
                if method != "auto" and role == "weight":
                    raise ConverterError(f"--pack {method}: {exc}") from exc
        best = min(encs.values(), key=lambda e: e.packed_bytes) if encs else None
        reason = ""
        if method == "none":
            reason = "--pack none"
        elif best is None:
            reason = f"no encoder applies to this {role}: " + "; ".join(f"{m}: {cands[m]}" for m in tried)[:300]
        elif method == "auto" and best.packed_bytes >= info["original_bytes"]:
            reason = f"packing would grow it (best {best.method}: {best.packed_bytes} B >= {info['original_bytes']} B)"
            best = None
        if best is None:
            reports.append(TensorReport(s, t.index, info["name"], info["dtype"], info["shape"], info["original_bytes"],
                                        "none", info["original_bytes"], 0.0, 0, reason, cands))
            continue
        chosen[(s, t.index)] = best
        reports.append(TensorReport(s, t.index, info["name"], info["dtype"], info["shape"], info["original_bytes"],
                                    best.method, best.packed_bytes, float(best.entropy_bound_bytes),
                                    int(best.table_bytes), f"{role}; smallest of {len(encs)}" if method == "auto" else role,
                                    cands))
    for (s, _i), (_, t, why) in sorted(skipped.items()):
        values = t.array if t.buffer is not None and t.buffer.data else np.zeros(0)
        info = _describe(t, values)
        reports.append(TensorReport(s, t.index, info["name"], info["dtype"], info["shape"], info["original_bytes"],
                                    "none", info["original_bytes"], 0.0, 0, why, {}))

    packed, overhead = model_bytes, 0.0
    if chosen and method == "auto":
        packed, overhead = _drop_unprofitable(model_bytes, chosen, reports, insert_decode)
    elif chosen:
        packed = insert_decode(model_bytes, chosen)
    verification = f"{source}: TFLite-Micro outputs identical to the unpacked model"
    if chosen:
        decoded_bytes = sum(r.original_bytes for r in reports if r.method != "none")
        alt = alt_decompression_memory_size or (decoded_bytes + 16 * len(chosen) + 64)
        for alt_size in (0, alt):
            got = arena.run(packed, inputs, arena_size=arena_size, alt_decompression_memory_size=alt_size,
                            all_outputs=True)
            if any(g.dtype != r.dtype or g.tobytes() != r.tobytes() for g, r in zip(got, reference, strict=True)):
                diff = max(float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
                           for g, r in zip(got, reference, strict=True))
                raise ConverterError(
                    f"packed model ({method}) is not bit-exact on TFLite-Micro"
                    f"{' with alternate decompression memory' if alt_size else ''}: max output difference {diff:g}; "
                    "refusing to write it"
                )
        verification += f" (also with {alt} B alternate decompression memory)"
    else:
        alt = 0
    arena_before = arena_after = None
    if measure_arena:
        arena_before = arena.arena_info(model_bytes).to_dict()
        arena_after = arena.arena_info(packed, alt).to_dict() if chosen else arena_before
    reports.sort(key=lambda r: (r.subgraph, r.index))
    extra = {"decode_overhead_bytes_per_tensor": round(overhead, 1)} if overhead else {}
    report = PackReport(method, tuple(reports), len(model_bytes), len(packed), n_rows, verification,
                        arena_before, arena_after, extra)
    return PackResult(bytes(packed), report)


__all__ = ["PACK_METHODS", "PackResult", "WEIGHT_OPERANDS", "check_tflm_operators", "pack"]
