"""Fuzz the delegate's sparse-format decoder with real flatbuffers.

* Valid: the converter's DENSIFY weights re-encoded in random TFLite sparse formats (random traversal
  order of the dimensions, random blocks on any dimension, random DENSE/CSR levels) — the builtin
  DENSIFY kernel is the reference; the delegate must claim them and give identical outputs.
* Corrupted: random bytes of the sparsity metadata (traversal order, block map, dense sizes, CSR
  segments/indices) mutated in the serialized model.
Every model runs in a child process, so a crash is a test failure and not a dead pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import interpreter as ai
from test_delegate import MODELS, REF, _assert_same, _input, _reference, _run

import converters.delegate as cd

fb = pytest.importorskip("tensorflow.lite.python.schema_py_generated")

RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from ai_edge_litert import interpreter as ai
    lib, folder, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
    files = json.load(open(folder + "/index.json"))
    R = ai.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    def say(*parts):
        sys.stderr.write(" ".join(str(p) for p in parts) + chr(10))
        sys.stderr.flush()

    def run(model, delegates):
        it = ai.Interpreter(model_content=model, experimental_op_resolver_type=R, experimental_delegates=delegates)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        rng = np.random.default_rng(0)
        if d["dtype"] == np.int8:
            x = rng.integers(-128, 128, d["shape"]).astype(np.int8)
        else:
            x = rng.uniform(-1, 1, d["shape"]).astype(np.float32)
        it.set_tensor(d["index"], x)
        it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
        return out

    for i in range(start, len(files)):
        model = open(files[i], "rb").read()
        say("START", i)
        try:
            if sys.argv[5] == "both":
                ref = run(model, [])
                say("REF", i, json.dumps(ref.astype(float).ravel().tolist()))
        except Exception:
            say("REF", i, "error")
        delegate = ai.load_delegate(lib, {"abi_version": sys.argv[4], "min_sparsity": "0", "verbose": "1"})
        try:
            got = run(model, [delegate])
            say("DEL", i, json.dumps(got.astype(float).ravel().tolist()))
        except Exception:
            say("DEL", i, "error")
        if sys.argv[5] != "both":
            break
    say("END")
    """
)


def _child(tmp: Path, start: int, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(tmp / "runner.py"), str(cd.library_path()), str(tmp), str(start), cd.ABI_VERSION, mode],
        capture_output=True, text=True, timeout=300,
    )


def _run_all(files: list[Path], tmp: Path) -> dict[int, dict]:
    """Runs every model in child processes (restarting after a crash); per-index results.

    The reference runs of corrupted models can corrupt the child's heap (the builtin kernels do
    not check sparse indices), so a crash is re-checked with that model alone in a fresh child,
    delegate only: ``crash_alone`` is the verdict that counts.
    """
    (tmp / "index.json").write_text(json.dumps([str(f) for f in files]))
    (tmp / "runner.py").write_text(RUNNER)
    results: dict[int, dict] = {}
    start = 0
    while start < len(files):
        proc = _child(tmp, start, "both")
        last = start
        for line in proc.stderr.splitlines():
            parts = line.split(" ", 2)
            if parts[0] == "START":
                last = int(parts[1])
                results[last] = {}
            elif parts[0] == "REF":
                results[last]["ref"] = None if parts[2] == "error" else json.loads(parts[2])
            elif parts[0] == "DEL":
                results[last]["del"] = "error" if parts[2] == "error" else json.loads(parts[2])
            elif " FULLY_CONNECTED and " in line and last in results:  # the delegate's claim summary
                results[last]["claimed_fc"] = int(line.split("claimed ")[1].split()[0])
            elif "declined: malformed" in line and last in results:
                results[last]["declined_malformed"] = True
        if proc.returncode == 0 and "END" in proc.stderr:
            break
        # the child died on model `last`: blame the delegate only if the reference had finished
        results.setdefault(last, {})["crash"] = proc.returncode
        alone = _child(tmp, last, "delegate-only")
        if alone.returncode != 0:
            results[last]["crash_alone"] = alone.returncode
            results[last]["declined_malformed"] = "declined: malformed" in alone.stderr
            results[last]["crash_stderr"] = alone.stderr[-600:]
        start = last + 1
    return results


def _densify_source(model: fb.ModelT) -> fb.TensorT:
    sg = model.subgraphs[0]
    return next(t for t in sg.tensors if t.sparsity is not None)


def _dense_weights(buf: bytes) -> np.ndarray:
    """The dense weights the builtin DENSIFY produces (read back from the reference interpreter)."""
    from ai_edge_litert import interpreter as ai

    it = ai.Interpreter(model_content=buf, experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=ai.OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    it.invoke()
    ops = [op for op in it._get_ops_details() if op["op_name"] == "DENSIFY"]
    return it.get_tensor(ops[0]["outputs"][0])


def _encode(dense: np.ndarray, order: list[int], blocks: list[tuple[int, int]], formats: list[int]):
    """TFLite sparse encoding of ``dense``: traversal ``order`` over the original dims, then the
    ``blocks`` (dim, size) levels; ``formats`` (0 dense / 1 CSR) per traversal level."""
    rank = dense.ndim
    bsize = {d: s for d, s in blocks}
    expanded = [dense.shape[d] // bsize.get(d, 1) for d in range(rank)] + [s for _, s in blocks]
    traversal = list(order) + [rank + b for b in range(len(blocks))]
    levels = len(traversal)
    segs: list[list[int]] = [[0] for _ in range(levels)]
    inds: list[list[int]] = [[] for _ in range(levels)]
    values: list = []

    def coord_value(coord):
        idx = []
        for d in range(rank):
            b = next((i for i, (bd, _) in enumerate(blocks) if bd == d), None)
            c = coord[d] * bsize[d] + coord[rank + b] if b is not None else coord[d]
            idx.append(c)
        return dense[tuple(idx)]

    def subtree_nonzero(level, coord):
        if level == levels:
            return coord_value(coord) != 0
        t = traversal[level]
        for i in range(expanded[t]):
            coord[t] = i
            if subtree_nonzero(level + 1, coord):
                return True
        return False

    def walk(level, coord):
        if level == levels:
            values.append(coord_value(coord))
            return
        t = traversal[level]
        for i in range(expanded[t]):
            coord[t] = i
            if formats[level] == 1 and not subtree_nonzero(level + 1, list(coord)):
                continue
            if formats[level] == 1:
                inds[level].append(i)
            walk(level + 1, coord)
        if formats[level] == 1:
            segs[level].append(len(inds[level]))

    walk(0, [0] * levels)
    sp = fb.SparsityParametersT()
    sp.traversalOrder = traversal
    sp.blockMap = [d for d, _ in blocks]
    sp.dimMetadata = []
    for j in range(levels):
        md = fb.DimensionMetadataT()
        md.format = formats[j]
        md.denseSize = expanded[traversal[j]] if formats[j] == 0 else 0
        if formats[j] == 1:
            md.arraySegmentsType, md.arrayIndicesType = 1, 1
            md.arraySegments, md.arrayIndices = fb.Int32VectorT(), fb.Int32VectorT()
            md.arraySegments.values, md.arrayIndices.values = segs[j], inds[j]
        sp.dimMetadata.append(md)
    return sp, np.asarray(values, dense.dtype)


def _pack(model: fb.ModelT) -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _metadata_ranges(buf: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every sparsity-metadata field in a serialized model."""
    m = fb.Model.GetRootAs(buf, 0)
    sg = m.Subgraphs(0)
    out = []
    for ti in range(sg.TensorsLength()):
        sp = sg.Tensors(ti).Sparsity()
        if sp is None:
            continue
        for field in (4, 6):  # traversal_order, block_map
            o = sp._tab.Offset(field)
            if o:
                out.append((sp._tab.Vector(o), sp._tab.VectorLen(o) * 4))
        for j in range(sp.DimMetadataLength()):
            dm = sp.DimMetadata(j)
            for field, size in ((4, 1), (6, 4)):  # format, dense_size
                o = dm._tab.Offset(field)
                if o:
                    out.append((dm._tab.Pos + o, size))
            for type_field, field in ((8, 10), (12, 14)):  # array_segments, array_indices (unions)
                o, to = dm._tab.Offset(field), dm._tab.Offset(type_field)
                if o and to:
                    elem = {1: 4, 2: 2, 3: 1}.get(buf[dm._tab.Pos + to], 0)  # Int32/Uint16/Uint8Vector
                    t = flatbuffers.table.Table(buf, dm._tab.Indirect(dm._tab.Pos + o))
                    vo = t.Offset(4)
                    if vo:
                        out.append((t.Vector(vo), t.VectorLen(vo) * elem))
    return [r for r in out if r[1] > 0]


def _compare(name: str, r: dict) -> None:
    ref, got = np.asarray(r["ref"]), np.asarray(r["del"])
    if name.startswith("i8"):
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def test_random_valid_sparse_encodings_are_claimed_and_exact(tmp_path):
    rng = np.random.default_rng(7)
    files, meta = [], []
    for name in ("i8_csr_densify", "f32_csr_densify"):
        base = MODELS[name]()
        dense = _dense_weights(base)
        for k in range(10):
            model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(base, 0))
            t = _densify_source(model)
            order = list(rng.permutation(dense.ndim))
            blocks = []
            for d in rng.permutation(dense.ndim)[: rng.integers(0, dense.ndim + 1)]:
                divisors = [s for s in range(2, 9) if dense.shape[d] % s == 0]
                if divisors:
                    blocks.append((int(d), int(rng.choice(divisors))))
            nlev = dense.ndim + len(blocks)
            formats = [int(rng.integers(0, 2)) for _ in range(dense.ndim)] + [0] * len(blocks)
            sp, values = _encode(dense, order, blocks, formats)
            t.sparsity = sp
            model.buffers[t.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
            path = tmp_path / f"{name}_{k}.tflite"
            path.write_bytes(_pack(model))
            files.append(path)
            meta.append((name, order, blocks, formats, nlev))
    results = _run_all(files, tmp_path)
    compared = 0
    for i, (name, *desc) in enumerate(meta):
        r = results[i]
        assert "crash_alone" not in r, (desc, r)
        if r.get("ref") is None:  # the builtin DENSIFY does not support this encoding
            continue
        blocks = desc[1]
        ascending = all(a[0] < b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        # non-ascending block maps are declined (TFLite's densify reads them its own way)
        assert r.get("claimed_fc") == (2 if ascending else 1), (desc, r)
        _compare(name, r)
        compared += 1
    assert compared >= len(files) // 2, f"only {compared} of {len(files)} encodings ran on the reference"


def _skip_first_values(md) -> None:
    segments = np.array(md.arraySegments.values)
    assert segments[0] == 0 and segments[1] > 0
    segments[0] = segments[1]  # the first row is empty and its values are skipped
    md.arraySegments.values = segments


def _repeat_an_index(md) -> None:
    segments, indices = np.array(md.arraySegments.values), np.array(md.arrayIndices.values)
    row = next(r for r in range(len(segments) - 1) if segments[r + 1] - segments[r] >= 2)
    indices[segments[row] + 1] = indices[segments[row]]  # the same block twice in one row
    md.arrayIndices.values = indices


def _shrink_a_dense_level(md) -> None:
    md.denseSize -= 1  # one row fewer than the weight shape


@pytest.mark.parametrize(("name", "level", "mutate", "why"), [
    ("i8_csr_densify", "csr", _skip_first_values, "segments skip or repeat values"),
    ("i8_1x16_v8_zp", "csr", _repeat_an_index, "CSR indices not increasing within a segment"),
    ("f32_1x4_v8", "dense", _shrink_a_dense_level, "dense level size differs from the weight shape"),
])
def test_metadata_the_runtime_reads_two_ways_is_declined(name, level, mutate, why, capfd):
    """Found by the fuzz test with 600 mutants per model, where the delegate decoded them one way
    and the runtime another.  TFLite's DENSIFY takes the values one after another in traversal
    order wherever the segments point (a first segment moved from 0 to 7 skipped values), it
    overwrites a repeated index that the sparse FULLY_CONNECTED kernels add twice, and it stops a
    dense level at its stated size where those kernels take the weight shape.  The delegate now
    declines such nodes, and the runtime runs them."""
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(MODELS[name](), 0))
    last = [t for t in model.subgraphs[0].tensors if t.sparsity is not None][-1].sparsity.dimMetadata
    # the CSR level, or the outermost (dense) level of the last sparse tensor
    mutate(next(md for md in last if md.arraySegments is not None) if level == "csr" else last[0])
    mutant = _pack(model)
    x = _input(ai.Interpreter(model_content=mutant), 2, 5)
    # without XNNPACK behind it: with XNNPACK the runtime gives yet other outputs for such tensors
    it = ai.Interpreter(model_content=mutant, experimental_op_resolver_type=REF,
                        experimental_delegates=[cd.load({"verbose": True, "min_sparsity": 0})])
    got = _run(it, x)
    assert f"FULLY_CONNECTED declined: malformed sparsity metadata: {why}" in capfd.readouterr().err
    _assert_same(got, _reference(mutant, x))


@pytest.mark.parametrize("name", ["i8_csr_densify", "i8_1x16_v8_zp", "f32_1x4_v8"])
def test_corrupted_sparsity_metadata_never_crashes(name, tmp_path):
    base = MODELS[name]()
    ranges = _metadata_ranges(base)
    assert ranges, "model has no sparsity metadata"
    # EDGE_DELEGATE_FUZZ_MUTANTS / EDGE_DELEGATE_FUZZ_SEED explore further (CI runs the 30 below)
    extra_seed = os.environ.get("EDGE_DELEGATE_FUZZ_SEED")
    rng = np.random.default_rng([zlib.crc32(name.encode()), int(extra_seed)] if extra_seed else zlib.crc32(name.encode()))
    files = []
    for k in range(int(os.environ.get("EDGE_DELEGATE_FUZZ_MUTANTS", "30"))):
        buf = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            off, length = ranges[int(rng.integers(len(ranges)))]
            pos = off + int(rng.integers(length))
            kind = rng.integers(4)
            if kind == 0:
                buf[pos] = int(rng.integers(256))
            elif kind == 1:
                buf[pos] ^= 1 << int(rng.integers(8))
            elif kind == 2:
                buf[pos] = 0xFF
            else:
                buf[pos] = (buf[pos] + int(rng.choice([-1, 1]))) % 256
        path = tmp_path / f"mut_{k}.tflite"
        path.write_bytes(bytes(buf))
        files.append(path)
    results = _run_all(files, tmp_path)
    ran = 0
    for i in range(len(files)):
        r = results.get(i, {})
        if "crash" in r:
            # Crashes of the runtime's own code are not ours: when the delegate declined a malformed
            # node, the builtin DENSIFY / sparse FC kernels read the corrupted indices unchecked.
            if "crash_alone" in r:
                assert r.get("declined_malformed"), f"delegate crashed on mutant {i}: {r}"
            continue
        if r.get("ref") is not None and not r.get("declined_malformed"):
            # (outputs of nodes left to the builtin kernels on malformed metadata are not
            # reproducible: those kernels read the corrupted indices unchecked)
            ran += 1
            assert r.get("del") not in (None, "error"), f"mutant {i}: reference ran but delegate run failed"
            try:
                _compare(name, r)
            except AssertionError as exc:
                raise AssertionError(f"mutant {i} ({files[i]}): {exc}") from None
    assert len(results) == len(files), "not every mutant was run"
    assert ran + sum(bool(r.get("declined_malformed")) for r in results.values()) > 0
