"""Benchmark: edge-lottery's sparse delegate against XNNPACK dense, side by side in one run.

Not a test. Writes docs/results/sparse_delegate.{json,md,png} with machine, versions and settings.

* LeNet-300-100 tickets (MNIST) from the project's own search (LotteryTicketSearch; one-shot
  magnitude pruning + fine-tuning as the fallback if it fails): 90 % 16x1 blocks (float32), 90 %
  16x4 blocks (int8), 95 % unstructured (float32); accuracy is reported next to speed.
* mobilenet_v1_025 (96x96x3) on Fashion-MNIST (upscaled): the project's own search prunes its 1x1
  convolutions to 90 % in 16x4 blocks (accuracy reported), float32 and int8, end to end; the int8
  ticket also on 2 threads with the delegate's shared-graph estimate off (``dense_threads=0``), so
  the estimate's effect is measured side by side, and the layers it leaves to XNNPACK are listed.
* Crossover sparsity per pattern on the 784->300 layer (random magnitude-pruned weights).

Every configuration runs batch 1 and 8, 1 and 2 threads; times are medians over interleaved
repeats taken in 5 rounds 30 s apart (the machine is shared and its speed shifts for minutes:
ratios are more trustworthy than absolute times, and the rounds column shows their spread).
Each configuration is timed from Python (`invoke()`) and from C (the same interpreter's
`Interpreter::Invoke()` in a loop, `benchmarks/invoke_loop.c`), which leaves out the ~0.5 us
that every Python call adds.

    nice python benchmarks/sparse_delegate.py            # full run (~12 min on 2 cores)
    nice python benchmarks/sparse_delegate.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- models


def block_prune(w: np.ndarray, sparsity: float, rows: int, cols: int) -> np.ndarray:
    """Zero ``sparsity`` of the (rows x cols) blocks of w[out, k] with the smallest L1 norm."""
    out, k = w.shape
    nbh, nbw = -(-out // rows), -(-k // cols)
    pad = np.zeros((nbh * rows, nbw * cols), w.dtype)
    pad[:out, :k] = w
    norms = np.abs(pad.reshape(nbh, rows, nbw, cols)).sum(axis=(1, 3))
    nzero = int(round(sparsity * norms.size))
    keep = np.ones(norms.size, bool)
    keep[np.argsort(norms.ravel(), kind="stable")[:nzero]] = False
    mask = np.repeat(np.repeat(keep.reshape(norms.shape), rows, 0), cols, 1)[:out, :k]
    return w * mask


def convert(model, dtype: str, rep: np.ndarray) -> bytes:
    """The product's own conversion (``converters.tflite.convert``): int8 is full-integer with int8
    I/O, calibrated on the first 64 rows of ``rep``."""
    from converters.tflite import convert as tflite_convert

    return tflite_convert(model, dtype, rep[:64])


def load_mnist(data_dir: Path):
    with np.load(data_dir / "mnist.npz") as d:
        return (d["x_train"].astype(np.float32) / 255.0, d["y_train"], d["x_test"].astype(np.float32) / 255.0,
                d["y_test"])


def run_search(model: str, dataset, **options):
    """The project's own IMP search (seed 0) in a temporary work directory: (its levels, the last
    level's ticket as a plain Keras model)."""
    import tempfile

    from edge_lottery.search import LotteryTicketSearch

    with tempfile.TemporaryDirectory(prefix="sparse_delegate_search_") as work:
        levels = LotteryTicketSearch(model, dataset, work_dir=work, seed=0, **options).run().levels
        return levels, levels[-1].ticket().model()


def search_ticket(data_dir: Path, pattern: str, sparsity: float, epochs: int):
    """The project's own ticket: IMP with learning-rate rewinding to ``sparsity`` in ``pattern`` blocks.

    The prune fraction per level reaches ``sparsity`` in 4 levels (0.44 for 90 %, 0.53 for 95 %);
    the 10-way output layer is kept dense (it has no full block of 16 outputs). The delegate's
    defaults take it into the same partition (option dense_neighbour_max_macs), so the whole MLP
    runs as one delegate node.
    """
    fraction = math.ceil((1 - (1 - sparsity) ** 0.25) * 100) / 100
    levels, model = run_search("lenet_300_100", "mnist", data_dir=data_dir, target_sparsity=sparsity,
                               prune_fraction=fraction, rewind="lr", pattern=pattern, keep_output=True, epochs=epochs)
    level = levels[-1]
    method = (f"edge_lottery LotteryTicketSearch (IMP, lr rewinding, pattern {pattern}, prune_fraction {fraction}, "
              f"{level.level} levels x {epochs} epochs, output layer dense; density of pruned layers "
              f"{level.density:.3f})")
    return model, method


def masked_fine_tune(keras, model, masks: dict, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Fine-tune ``model`` with each ``masks[layer]`` (same shape as its kernel) re-applied after every step."""

    class KeepMask(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for ly, mk in masks.items():
                ly.kernel.assign(ly.kernel * mk)

    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[KeepMask()])


def one_shot_ticket(keras, dense, xtr, ytr, sparsity: float, rows: int, cols: int, epochs: int):
    """Fallback ticket: one-shot magnitude pruning of the trained weights to the block pattern
    (TFLite orientation [out, in] blocks), then fine-tuning with the mask re-applied after every step."""
    stripped = keras.models.clone_model(dense)
    stripped.set_weights(dense.get_weights())
    masks = {}
    for ly in stripped.layers:
        if isinstance(ly, keras.layers.Dense):
            k, b = ly.get_weights()
            pk = block_prune(k.T, sparsity, rows, cols).T
            masks[ly] = (pk != 0).astype(np.float32)
            ly.set_weights([pk, b])
    masked_fine_tune(keras, stripped, masks, xtr[..., None], ytr, epochs)
    return stripped


def lenet_tickets(data_dir: Path, epochs: int, quick: bool):
    """Train LeNet-300-100, then prune+fine-tune one ticket per pattern with TFMOT."""
    import tf_keras as keras

    from edge_lottery.models import build_model

    xtr, ytr, xte, yte = load_mnist(data_dir)
    if quick:
        xtr, ytr = xtr[:6000], ytr[:6000]
    keras.utils.set_random_seed(0)
    dense = build_model("lenet_300_100", (28, 28, 1), 10, seed=0)
    dense.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    dense.fit(xtr[..., None], ytr, batch_size=128, epochs=epochs, verbose=0)
    acc_dense = float(dense.evaluate(xte[..., None], yte, verbose=0)[1])
    tickets = {}
    for key, (rows, cols), sparsity in (("f32_16x1_90", (16, 1), 0.9), ("i8_16x4_90", (16, 4), 0.9),
                                        ("f32_unstructured_95", (1, 1), 0.95)):
        stripped, method = None, "one-shot block magnitude pruning of the trained weights + fine-tune with the mask"
        try:
            pattern = f"block{rows}x{cols}" if rows > 1 else "unstructured"
            stripped, method = search_ticket(data_dir, pattern, sparsity, epochs)
        except Exception as exc:  # noqa: BLE001 - the fallback below is the documented alternative
            method += f" (LotteryTicketSearch failed: {type(exc).__name__}: {str(exc)[:200]})"
            print(f"  {key}: {method}", flush=True)
        if stripped is None:
            stripped = one_shot_ticket(keras, dense, xtr, ytr, sparsity, rows, cols, epochs)
        stripped.compile(metrics=["accuracy"], loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        acc = float(stripped.evaluate(xte[..., None], yte, verbose=0)[1])
        kernels = [w for w in stripped.get_weights() if w.ndim == 2]
        zeros = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
        dtype = "int8" if key.startswith("i8") else "float32"
        tickets[key] = {"model": convert(stripped, dtype, xtr[:64, ..., None]), "accuracy": acc,
                        "weight_sparsity": zeros, "dtype": dtype, "method": method,
                        "int8_accuracy": None}
        if dtype == "int8":
            tickets[key]["int8_accuracy"] = tflite_accuracy(tickets[key]["model"], xte[:2000, ..., None], yte[:2000])
    return tickets, acc_dense


def tflite_accuracy(model: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    s, z = d["quantization"]
    hits = 0
    for i in range(len(x)):
        xi = x[i : i + 1]
        if d["dtype"] == np.int8:
            xi = np.clip(np.round(xi / s + z), -128, 127).astype(np.int8)
        it.set_tensor(d["index"], xi)
        it.invoke()
        hits += int(np.argmax(it.get_tensor(o["index"])) == y[i])
    return hits / len(x)


def prune_1x1_convs(keras, model, sparsity: float, rows: int, cols: int) -> dict:
    """Block-prune every 1x1 convolution of ``model`` in place ([out, in] blocks); returns each
    layer's mask."""
    masks = {}
    for ly in model.layers:
        if (isinstance(ly, keras.layers.Conv2D) and not isinstance(ly, keras.layers.DepthwiseConv2D)
                and ly.kernel_size == (1, 1)):
            ws = ly.get_weights()
            ws[0] = block_prune(ws[0][0, 0].T, sparsity, rows, cols).T[None, None]  # [1, 1, in, out]
            masks[ly] = (ws[0] != 0).astype(np.float32)
            ly.set_weights(ws)
    return masks


def load_fashion_96(data_dir: Path, n_train: int, n_test: int):
    """Fashion-MNIST at mobilenet_v1_025's 96x96x3 input (the MLPerf Tiny visual-wake-words shape):
    bilinear upscaling of the first ``n_train`` / ``n_test`` images, the grey channel repeated."""
    import tensorflow as tf

    with np.load(data_dir / "fashion_mnist.npz") as d:
        xtr, ytr, xte, yte = d["x_train"][:n_train], d["y_train"][:n_train], d["x_test"][:n_test], d["y_test"][:n_test]

    def up(x: np.ndarray) -> np.ndarray:
        return np.repeat(tf.image.resize(x[..., None].astype(np.float32) / 255.0, (96, 96)).numpy(), 3, axis=-1)

    return up(xtr), ytr, up(xte), yte


# Kept dense by the search: the layers the sparse delegate does not run sparse, and the first two
# 1x1 convs (8->16 and 16->32: 640 of the 1x1 convs' 196,224 weights, and two and eight 16x4
# blocks). At 90 % each would keep one block, which left the network at chance in a scratch search.
MOBILENET_DENSE = ("conv1", "ds1_pointwise", "ds2_pointwise", *(f"ds{i}_depthwise" for i in range(1, 14)))


def mobilenet_tickets(data_dir: Path, epochs: int, quick: bool, sparsity: float = 0.9):
    """mobilenet_v1_025 trained on Fashion-MNIST at 96x96x3 by the project's own search, its 1x1
    convolutions but the first two pruned to ``sparsity`` in 16x4 blocks (a 16x4 mask is also a 16x1 one, so the
    ticket serves both dtypes).

    IMP with learning-rate rewinding (Renda et al. 2020), layerwise: each pruned 1x1 conv loses 54 % of its
    remaining weights per level, so three levels reach 90 % (1 - 0.46**3). Global pruning would
    take the wide late convolutions, whose weights are small, down to the one block the collapse
    guard keeps. The model's registry defaults train it (Adam 1e-3 with its step schedule, batch
    32, l2 1e-4, batch-norm momentum 0.9)."""
    n_train, n_test = (2000, 500) if quick else (12000, 1000)
    xtr, ytr, xte, yte = load_fashion_96(data_dir, n_train, n_test)
    levels, model = run_search("mobilenet_v1_025", ((xtr, ytr), (xte, yte)), target_sparsity=sparsity,
                               prune_fraction_conv=0.54, scope="layerwise", rewind="lr", pattern="block16x4",
                               keep_output=True, exclude=MOBILENET_DENSE, epochs=epochs)
    dense, ticket = levels[0], levels[-1]
    pointwise = [ly.get_weights()[0] for ly in model.layers if ly.name.endswith("_pointwise")]
    info = {"dataset": f"Fashion-MNIST, {n_train} train (10 % of them for validation) / {n_test} test images "
            "upscaled to 96x96x3",
            "dense_accuracy": dense.test_accuracy, "accuracy": ticket.test_accuracy,
            "sparsity_1x1": sum(int((k == 0).sum()) for k in pointwise) / sum(k.size for k in pointwise),
            "sparsity_pruned_layers": 1.0 - ticket.density,
            "method": (f"edge_lottery LotteryTicketSearch (IMP, lr rewinding, pattern block16x4, layerwise, "
                       f"prune_fraction_conv 0.54, {ticket.level} levels x {epochs} epochs, registry training defaults); "
                       "first conv, depthwise convs, the first two 1x1 convs and the output layer dense")}
    tickets = {}
    for dtype in ("float32", "int8"):
        tflite = convert(model, dtype, xtr[:64])
        tickets[dtype] = {"model": tflite, "tflite_accuracy": tflite_accuracy(tflite, xte, yte)}
    return tickets, info


def mobilenet(dtype: str, sparsity: float) -> bytes:
    """mobilenet_v1_025 (96x96x3, 2 classes) with random weights and its 1x1 convolutions pruned to
    ``sparsity`` (16x4 blocks for int8, 16x1 for float32): for benchmarks/delegate_profile.py, whose
    per-op cycles depend on the layout and density, not on trained values."""
    import tf_keras as keras

    from edge_lottery.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v1_025", (96, 96, 3), 2, seed=0)
    prune_1x1_convs(keras, model, sparsity, *((16, 4) if dtype == "int8" else (16, 1)))
    rep = np.random.default_rng(0).uniform(0, 1, (32, 96, 96, 3)).astype(np.float32)
    return convert(model, dtype, rep)


def fc_layer(dtype: str, sparsity: float, pattern: str) -> bytes:
    import tf_keras as keras

    keras.utils.set_random_seed(1)
    inp = keras.Input((784,))
    model = keras.Model(inp, keras.layers.Dense(300, activation="relu")(inp))
    w, b = model.get_weights()
    rows, cols = {"unstructured": (1, 1), "1x16": (1, 16), "16x1": (16, 1), "16x4": (16, 4)}[pattern]
    model.set_weights([block_prune(w.T, sparsity, rows, cols).T, b])
    rep = np.random.default_rng(0).uniform(0, 1, (32, 784)).astype(np.float32)
    return convert(model, dtype, rep)


# ----------------------------------------------------------------------------- timing


class NativeInvoke:
    """Times LiteRT's own ``Interpreter::Invoke()`` called back to back from C
    (``benchmarks/invoke_loop.c``), next to the Python ``invoke()`` timings.

    ``Interpreter.invoke()`` from Python adds ~0.5 us to every invoke (the Python method, pybind11,
    the GIL released and taken again), which is half of a batch-1 LeNet ticket's invoke under the
    delegate and shrinks every ratio of small models towards 1.  An application in C, C++ or Java,
    and LiteRT's C++ benchmark tool, do not pay it.  The function is not exported by the LiteRT
    wheel: its address is its offset in the library's symbol table (``nm``) plus where the library
    was loaded (found from an exported symbol of the same library).  ``why_not`` says why it is
    unavailable (no gcc or nm, a stripped or renamed library); each `Runner` also checks that one
    invoke from C gives the outputs of one from Python on a fresh input before it is timed."""

    SYMBOL = "_ZN6tflite4impl11Interpreter6InvokeEv"  # tflite::impl::Interpreter::Invoke()
    ANCHOR = "Wrapped_PyInit__pywrap_litert_interpreter_wrapper"  # exported by the same library

    def __init__(self, tmp: Path):
        import ctypes

        import ai_edge_litert.interpreter  # noqa: F401  (loads the library)

        self.why_not = ""
        self.invoke_addr = 0
        lib = Path(ai_edge_litert.interpreter.__file__).parent / "libpywrap_litert_common.so"
        if not (shutil.which("gcc") and shutil.which("nm")):
            self.why_not = "needs gcc and nm (binutils)"
            return
        if not lib.is_file():
            self.why_not = f"{lib.name} not found next to ai_edge_litert.interpreter"
            return

        def address(args: list[str], name: str) -> int | None:
            out = subprocess.run(["nm", *args, str(lib)], capture_output=True, text=True).stdout
            # "ADDRESS TYPE NAME[@@VERSION]"
            hits = [line.split()[0] for line in out.splitlines() if line.strip() and line.split()[-1].split("@")[0] == name]
            return int(hits[0], 16) if hits else None

        invoke_off, anchor_off = address([], self.SYMBOL), address(["-D", "--defined-only"], self.ANCHOR)
        if invoke_off is None or anchor_off is None:
            self.why_not = f"{self.SYMBOL if invoke_off is None else self.ANCHOR} not in {lib.name}'s symbol table"
            return
        loaded = ctypes.CDLL(str(lib))  # already loaded by the import above: the same mapping
        anchor = ctypes.cast(getattr(loaded, self.ANCHOR), ctypes.c_void_p).value
        self.invoke_addr = anchor - anchor_off + invoke_off
        so = tmp / "invoke_loop.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(REPO / "benchmarks" / "invoke_loop.c")],
                       check=True)
        self.loop = ctypes.CDLL(str(so)).invoke_loop_ns
        self.loop.restype = ctypes.c_double
        self.loop.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.POINTER(ctypes.c_int)]
        self._status = ctypes.c_int()
        self._byref = ctypes.byref

    def us_per_invoke(self, interpreter, n: int) -> float:
        """us per invoke of ``n`` back-to-back invokes of a Python ``Interpreter``, from C."""
        ns = self.loop(self.invoke_addr, interpreter._interpreter.interpreter(), n, self._byref(self._status))
        if self._status.value != 0:
            raise RuntimeError(f"Interpreter::Invoke() called from C returned status {self._status.value}")
        return ns / 1e3


class Runner:
    """One interpreter configuration, timed by repeated invoke() calls from Python and, with a
    `NativeInvoke`, by the same invokes called from C."""

    def __init__(self, model: bytes, kind: str, batch: int, threads: int, options: dict | None = None,
                 native: NativeInvoke | None = None):
        from ai_edge_litert.interpreter import Interpreter

        import converters.delegate as cd

        if kind == "xnnpack":
            self.it = Interpreter(model_content=model, num_threads=threads)
        else:
            self.it = cd.interpreter(model, options=options or {}, num_threads=threads)
        d = self.it.get_input_details()[0]
        if d["shape"][0] != batch:
            self.it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
        self.it.allocate_tensors()
        d = self.it.get_input_details()[0]
        rng = np.random.default_rng(0)
        x = (rng.integers(-128, 128, d["shape"]).astype(np.int8) if d["dtype"] == np.int8
             else rng.uniform(0, 1, d["shape"]).astype(np.float32))
        self.it.set_tensor(d["index"], x)
        self.n = int(max(5, min(20000, 0.02 / max(self._steady_invoke_s(), 1e-7))))  # ~20 ms per sample
        self.native = native if native is not None and not native.why_not else None
        if self.native is not None:
            self._check_native(d, x)

    def _check_native(self, d: dict, x: np.ndarray) -> None:
        """One invoke from C on a fresh input must give the outputs one from Python gives, and differ
        from those of the timed input: else the address found is not this interpreter's Invoke()."""
        out = self.it.get_output_details()[0]["index"]
        self.it.invoke()
        before = self.it.get_tensor(out).copy()
        self.it.set_tensor(d["index"], (x.astype(np.int16) // 2).astype(x.dtype) if x.dtype == np.int8 else x / 2 + 0.25)
        self.native.us_per_invoke(self.it, 1)
        from_c = self.it.get_tensor(out).copy()
        self.it.invoke()
        if not np.array_equal(from_c, self.it.get_tensor(out)) or np.array_equal(from_c, before):
            raise RuntimeError("Interpreter::Invoke() called from C did not compute what invoke() from Python does")
        self.it.set_tensor(d["index"], x)

    def _steady_invoke_s(self) -> float:
        """Seconds per invoke once past the delegate's thread trials (its first 16 invokes time one
        thread against the pool, and a pool trial can wait milliseconds for a sleeping worker): up
        to commit 16b2b21 one early invoke set the sample size, which left some 2-thread delegate
        configurations with samples of 8 to a few hundred invokes instead of ~20 ms."""
        invoke = self.it.invoke
        for _ in range(48):
            invoke()
        runs, t0 = 0, time.perf_counter()
        while True:
            invoke()
            runs += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= 0.005 and runs >= 5:
                return elapsed / runs

    def sample(self, from_c: bool = False) -> float:
        """us per invoke over ~20 ms of back-to-back invokes, from Python or (``from_c``) from C."""
        if from_c:
            self.native.us_per_invoke(self.it, max(1, self.n // 4))  # untimed warm-up, as below
            return self.native.us_per_invoke(self.it, self.n)
        invoke = self.it.invoke
        # untimed warm-up: lets the previous configuration's idle pool threads (XNNPACK's spin after
        # their last job) go quiet, so they do not tax this one's threads
        for _ in range(max(1, self.n // 4)):
            invoke()
        t0 = time.perf_counter()
        for _ in range(self.n):
            invoke()
        return (time.perf_counter() - t0) / self.n * 1e6  # us


def measure(runners: dict[str, Runner], repeats: int, from_c: bool = False) -> dict[str, list[float]]:
    """us per invoke of each configuration: `repeats` samples, interleaved across configurations
    (timed from C instead of Python with ``from_c``)."""
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, r in runners.items():
            samples[k].append(r.sample(from_c))
    return samples


class Comparison:
    """XNNPACK against the delegate on one model, batch 1 and 8, 1 and 2 threads.

    The interpreters stay alive across rounds (`measure_round`), so each configuration's samples
    come from several moments of the run: this machine's speed shifts for minutes at a time (another
    tenant on a vCPU, a slow period of the host), and a median over rounds spread through the run is
    robust to one such period, where a median of back-to-back repeats is not."""

    def __init__(self, model: bytes, name: str, options: dict | None = None, batches=(1, 8), threads=(1, 2),
                 native: NativeInvoke | None = None):
        self.name = name
        self.configs = [(b, t) for b in batches for t in threads]
        self.runners = {c: {"xnnpack": Runner(model, "xnnpack", *c, native=native),
                             "delegate": Runner(model, "delegate", *c, options, native=native)}
                        for c in self.configs}
        self.from_c = all(r.native is not None for rs in self.runners.values() for r in rs.values())
        self.timings = ("python", "c") if self.from_c else ("python",)
        self.samples = {(c, how): {"xnnpack": [], "delegate": []} for c in self.configs for how in self.timings}
        self.round_speedups: dict = {(c, how): [] for c in self.configs for how in self.timings}

    def measure_round(self, repeats: int) -> None:
        for c in self.configs:
            for how in self.timings:
                res = measure(self.runners[c], repeats, from_c=how == "c")
                for k, v in res.items():
                    self.samples[(c, how)][k] += v
                self.round_speedups[(c, how)].append(float(np.median(res["xnnpack"]) / np.median(res["delegate"])))

    def rows(self) -> list[dict]:
        """One row per (batch, threads): the Python-timed figures, and ``c`` with the same keys for
        the C-timed ones where a `NativeInvoke` ran."""
        rows = []
        for b, t in self.configs:
            row: dict = {"name": self.name, "batch": b, "threads": t}
            for how in self.timings:
                s = self.samples[((b, t), how)]
                x, d = float(np.median(s["xnnpack"])), float(np.median(s["delegate"]))
                fig = {"xnnpack_us": x, "delegate_us": d, "speedup": x / d,
                       "round_speedups": self.round_speedups[((b, t), how)]}
                if how == "python":
                    row.update(fig)
                else:
                    row["c"] = fig
            rows.append(row)
        return rows


class CrossCoreProbe:
    """The delegate pool's hand-off microbenchmark (benchmarks/delegate_pool_handoff.c with pool.c as
    built), run once per round: TSC cycles for a cache line to reach the other vCPU and back, and
    for an empty pool job.  On this VM they moved between ~200 and ~1000 cycles within minutes (the
    host placing the two vCPUs near or far apart), and a batch-1 pool job of about a microsecond
    pays several such transfers, so the 2-thread batch-1 rows depend on them; each round's figures
    are recorded next to its ratios.  None where it cannot run (not x86-64, no gcc, one CPU)."""

    def __init__(self, tmp: Path):
        self.exe: Path | None = None
        if platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc") or (os.cpu_count() or 1) < 2:
            return
        src = REPO / "converters" / "delegate" / "src"
        exe = tmp / "pool_handoff"
        subprocess.run(["gcc", "-O2", "-I", str(src), "-o", str(exe), str(REPO / "benchmarks" / "delegate_pool_handoff.c"),
                        str(src / "pool.c"), "-lpthread"], check=True)
        self.exe = exe

    def sample(self) -> dict[str, float] | None:
        if self.exe is None:
            return None
        out = subprocess.run([str(self.exe)], capture_output=True, text=True, check=True).stdout
        return {name: float(v) for name, v in (line.split() for line in out.splitlines())}


def run_rounds(comparisons: list[Comparison], repeats: int, rounds: int, gap_s: float,
               probe: Runner | None = None, cross_core: CrossCoreProbe | None = None
               ) -> tuple[dict[str, list[float]], list]:
    """Times every comparison once per round; also samples `probe` (the invoke-overhead model, from
    Python and, where it can, from C) and `cross_core` in every round, so those figures come from the
    same moments as the rest.  Returns the probe's samples and the cross-core figures of each round."""
    probe_samples: dict[str, list[float]] = {"python": [], "c": []}
    cross: list = []
    for i in range(rounds):
        if i:
            time.sleep(gap_s)  # the next round falls in another moment of the machine
        print(f"timing round {i + 1}/{rounds} ...", flush=True)
        if cross_core is not None:
            cross.append(cross_core.sample())
        for c in comparisons:
            c.measure_round(repeats)
        if probe is not None:
            probe_samples["python"] += measure({"probe": probe}, repeats)["probe"]
            if probe.native is not None:
                probe_samples["c"] += measure({"probe": probe}, repeats, from_c=True)["probe"]
    return probe_samples, cross


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    import ai_edge_litert
    import tensorflow as tf

    import converters.delegate as cd

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = "avx512-vnni" if "avx512_vnni" in flags and "avx512bw" in flags else ("avx2" if " avx2" in flags else "scalar")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return {"cpu": cpu, "logical_cpus": __import__("os").cpu_count(), "delegate_kernels": isa,
            "python": sys.version.split()[0], "platform": platform.platform(), "tensorflow": tf.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "2.3.x"), "numpy": np.__version__,
            "delegate_abi": cd.abi_tag(), "git_commit": commit, "loadavg_at_start": load,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def layers_left_to_xnnpack(model: bytes, batch: int, threads: int) -> list[str]:
    """The delegate's verbose reasons for the nodes its shared-graph estimate leaves to XNNPACK
    (read from its log while it prepares ``model`` at ``batch`` on ``threads``)."""
    import converters.delegate as cd
    from converters.tflm.arena import capture_fd2

    with capture_fd2() as err:
        it = cd.interpreter(model, options={"verbose": True}, num_threads=threads)
        d = it.get_input_details()[0]
        it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
        it.allocate_tensors()
        del it
    marker = "declined: the next delegate runs it faster dense ("
    return sorted({line.split("edge_sparse_delegate: ", 1)[1].replace(marker, "(").rstrip()
                   for line in "".join(err).splitlines() if marker in line})


def overhead_probe(native: NativeInvoke | None) -> Runner:
    """A one-op 4->1 float model under XNNPACK: its us per invoke() is the Python/runtime call floor."""
    import tf_keras as keras

    inp = keras.Input((4,))
    model = convert(keras.Model(inp, keras.layers.Dense(1)(inp)), "float32", np.zeros((1, 4), np.float32))
    return Runner(model, "xnnpack", 1, 1, native=native)


def table(rows: list[dict], title: str, overhead: float | None = None) -> list[str]:
    """Markdown rows: the Python-timed figures, then the C-timed ones where every row has them, else
    (given the invoke overhead) the Python-timed speed-up with the overhead taken off both times."""
    from_c = bool(rows) and all("c" in r for r in rows)
    overhead = None if from_c else overhead
    extra = (" from C: XNNPACK dense (us) | delegate (us) | speed-up | rounds (min-max) |" if from_c
             else " speed-up excl. invoke overhead |" if overhead is not None else "")
    out = [f"| {title} | batch | threads | XNNPACK dense (us) | delegate (us) | speed-up | rounds (min-max) |{extra}",
           "|---|---|---|---|---|---|---|" + ("---|" * 4 if from_c else "---|" if overhead is not None else "")]
    for r in rows:
        rs = r["round_speedups"]
        line = (f"| {r.get('name', '')} | {r['batch']} | {r['threads']} | {r['xnnpack_us']:.2f} | "
                f"{r['delegate_us']:.2f} | **{r['speedup']:.2f}x** | {min(rs):.2f}-{max(rs):.2f}x |")
        if from_c:
            c, cs = r["c"], r["c"]["round_speedups"]
            line += (f" {c['xnnpack_us']:.2f} | {c['delegate_us']:.2f} | **{c['speedup']:.2f}x** | "
                     f"{min(cs):.2f}-{max(cs):.2f}x |")
        if overhead is not None:
            # an overhead of 90 % of the delegate's own time or more leaves nothing to compare
            net = ((r["xnnpack_us"] - overhead) / (r["delegate_us"] - overhead)
                   if r["delegate_us"] > overhead / 0.9 else None)
            r["speedup_excl_overhead"] = net
            line += f" {net:.2f}x |" if net is not None else " n/a |"
        out.append(line)
    return out


def crossover(points: list[tuple[float, float]]) -> str:
    """Sparsity from which the speed-up stays >= 1 (linear interpolation), '< min' or '> max'."""
    points = sorted(points)
    below = [i for i, (_, r) in enumerate(points) if r < 1]
    if not below:
        return f"< {points[0][0]:.2f}"
    i = below[-1]
    if i == len(points) - 1:
        return f"> {points[-1][0]:.2f}"
    (s0, r0), (s1, r1) = points[i], points[i + 1]
    return f"{s0 + (1 - r0) * (s1 - s0) / (r1 - r0):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "sparse_delegate")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="timing rounds spread through the run")
    ap.add_argument("--round-gap", type=float, default=30.0, help="seconds between timing rounds")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, sparsities and training data")
    args = ap.parse_args()
    if args.repeats < 1 or args.rounds < 1 or args.round_gap < 0:
        ap.error(f"--repeats and --rounds must be >= 1 and --round-gap >= 0, got {args.repeats}, {args.rounds}, "
                 f"{args.round_gap}")
    missing = [f for f in ("mnist.npz", "fashion_mnist.npz") if not (args.data_dir / f).is_file()]
    if missing:
        ap.exit(2, f"sparse_delegate: --data-dir: expected {', '.join(missing)} (the tickets are trained on "
                   f"MNIST and Fashion-MNIST), not found in {args.data_dir}\n")
    repeats = 3 if args.quick else args.repeats
    rounds, gap = (1, 0.0) if args.quick else (args.rounds, args.round_gap)
    info = machine()
    settings = {"repeats": repeats, "rounds": rounds, "round_gap_s": gap, "epochs": args.epochs,
                "quick": args.quick, "timing": f"median over {rounds} rounds {gap:.0f} s apart of {repeats} "
                "interleaved samples each, a sample being ~20 ms of back-to-back invoke() calls from Python "
                "(includes ~0.5 us call overhead) after ~5 ms of untimed ones, and as many of the same "
                "interpreters' Interpreter::Invoke() called from C (benchmarks/invoke_loop.c) right after; the "
                "speed-up is the ratio of the two medians, the rounds column the range of the per-round ratios "
                "(the crossover sweep: one round, both timings)",
                "delegate_options": "defaults (min_sparsity 0.5, dense_neighbour_max_macs 16384, dense_threads -1, autotuned layouts)"}
    result: dict = {"machine": info, "settings": settings}
    md = ["# Sparse delegate benchmark", "", f"Generated by `benchmarks/sparse_delegate.py` on {info['date_utc']}.", "",
          "Machine and versions: " + ", ".join(f"{k}={v}" for k, v in info.items()), "",
          "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
          "Speed-up = XNNPACK (default LiteRT interpreter) on the same pruned model stored dense, divided by the",
          "same interpreter with the sparse delegate applied first (XNNPACK then runs what the delegate leaves).",
          "Other processes shared the 2 cores during the run: absolute times are noisy, ratios less so.", ""]

    print("training LeNet-300-100 tickets ...", flush=True)
    tickets, acc_dense = lenet_tickets(args.data_dir, 1 if args.quick else args.epochs, args.quick)
    md += ["## LeNet-300-100 tickets (MNIST, trained; delegate defaults)", "",
           f"Dense LeNet-300-100 test accuracy: {acc_dense:.4f}.", ""]
    for key, t in tickets.items():
        md.append(f"- `{key}`: weight sparsity {t['weight_sparsity']:.3f}, Keras test accuracy {t['accuracy']:.4f}"
                  + (f", int8 TFLite accuracy {t['int8_accuracy']:.4f} (2000 test images)" if t["int8_accuracy"]
                     else "") + f"; ticket from: {t['method']}")
    print("training the mobilenet_v1_025 ticket ...", flush=True)
    mb_tickets, mb_info = mobilenet_tickets(args.data_dir, 1 if args.quick else args.epochs, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        native = NativeInvoke(Path(tmp))
        if native.why_not:
            print(f"not timing from C: {native.why_not}", flush=True)
        lenet = [Comparison(t["model"], key, native=native) for key, t in tickets.items()]
        mobilenets = [Comparison(t["model"], f"mobilenet_v1_025 {dtype}, 1x1 convs 90 % 16x4", native=native)
                      for dtype, t in mb_tickets.items()]
        # the int8 ticket again with the shared-graph estimate off, on 2 threads (where it acts), side by side
        estimate_off = Comparison(mb_tickets["int8"]["model"], "mobilenet_v1_025 int8, every layer sparse enough "
                                  "claimed (dense_threads 0)", {"dense_threads": 0}, threads=(2,), native=native)
        probe_samples, cross = run_rounds(lenet + mobilenets + [estimate_off], repeats, rounds, gap,
                                          overhead_probe(native), CrossCoreProbe(Path(tmp)))
    result["cross_core_tsc_cycles_per_round"] = cross
    result["timed_from_c"] = not native.why_not
    if native.why_not:
        result["not_timed_from_c_because"] = native.why_not

    lenet_rows = [r for c in lenet for r in c.rows()]
    py_probe, c_probe = probe_samples["python"], probe_samples["c"]
    overhead = float(np.median(py_probe))
    md += ["", f"Invoke overhead (one-op 4->1 model under XNNPACK, median of {len(py_probe)} samples taken in "
           f"every round; range {min(py_probe):.2f}-{max(py_probe):.2f} us): {overhead:.2f} us from Python"]
    if c_probe:
        md[-1] += (f", {np.median(c_probe):.2f} us from C (range {min(c_probe):.2f}-{max(c_probe):.2f}). The "
                   "columns from C time the same interpreters' `Interpreter::Invoke()` called back to back from C "
                   "(`benchmarks/invoke_loop.c`), without the Python call that `invoke()` adds to every invoke: what "
                   "an application in C, C++ or Java, or LiteRT's C++ benchmark tool, sees. In every round each "
                   "configuration's samples from Python are followed by its samples from C.")
        md += [""]
    else:
        md[-1] += (f"; the last column subtracts it from both times (what the kernels themselves gain; n/a where it "
                   f"is 90 % or more of the delegate's time). Not timed from C: {native.why_not}.")
        md += [""]
    md += table(lenet_rows, "ticket", overhead) + [""]
    if cross and cross[0] is not None:
        md += ["Cross-core latency at the start of each round (`benchmarks/delegate_pool_handoff.c`, TSC cycles; the "
               "2-thread batch-1 rows depend on it, see `docs/sparse-delegate.md`): line round trip "
               + ", ".join(f"{c['line_round_trip']:.0f}" for c in cross) + "; empty pool job "
               + ", ".join(f"{c['empty_job']:.0f}" for c in cross) + ". Per-round speed-ups, same order:", ""]
        md += [f"- {r['name']} batch {r['batch']}, 2 threads: "
               + ", ".join(f"{x:.2f}x" for x in r["round_speedups"])
               + (" (from C: " + ", ".join(f"{x:.2f}x" for x in r["c"]["round_speedups"]) + ")" if "c" in r else "")
               for r in lenet_rows if r["threads"] == 2 and r["batch"] == 1]
        md += [""]
    result["lenet"] = {"dense_accuracy": acc_dense, "rows": lenet_rows, "invoke_overhead_us": overhead,
                       "invoke_overhead_samples_us": py_probe, "invoke_overhead_from_c_samples_us": c_probe,
                       "tickets": {k: {kk: vv for kk, vv in v.items() if kk != "model"} for k, v in tickets.items()}}

    mb_rows = [r for c in mobilenets for r in c.rows()]
    md += ["## mobilenet_v1_025 (96x96x3, trained), 90 % 16x4 block sparsity on the 1x1 convolutions", "",
           f"Trained on {mb_info['dataset']}: dense test accuracy {mb_info['dense_accuracy']:.4f}; pruned model "
           f"(sparsity of the 1x1 convolutions {mb_info['sparsity_1x1']:.3f}) Keras test accuracy "
           f"{mb_info['accuracy']:.4f}, float32 TFLite {mb_tickets['float32']['tflite_accuracy']:.4f}, int8 TFLite "
           f"{mb_tickets['int8']['tflite_accuracy']:.4f}; pruned by: {mb_info['method']}.", ""]
    off_rows = estimate_off.rows()
    left = layers_left_to_xnnpack(mb_tickets["int8"]["model"], 8, 2)
    md += table(mb_rows + off_rows, "model") + [""]
    md += ["The last two rows time the int8 ticket with the delegate's shared-graph estimate off (`dense_threads` 0, "
           "each against its own XNNPACK interpreter): every layer sparse enough is claimed. By default, on 2 threads, "
           "it leaves to XNNPACK: " + ("; ".join(left) if left else "nothing") + ".", ""]
    result["mobilenet_v1_025"] = {"rows": mb_rows, "rows_estimate_off": off_rows, "left_to_xnnpack_by_estimate": left,
                                  "ticket": mb_info,
                                  "tflite_accuracy": {k: v["tflite_accuracy"] for k, v in mb_tickets.items()}}

    print("crossover sweep ...", flush=True)
    sparsities = (0.5, 0.8, 0.95) if args.quick else (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    sweep = []
    for dtype in ("float32", "int8"):
        for pattern in ("unstructured", "1x16", "16x1" if dtype == "float32" else "16x4"):
            for s in sparsities:
                model = fc_layer(dtype, s, pattern)
                runners = {"xnnpack": Runner(model, "xnnpack", 1, 1, native=native),
                           "delegate": Runner(model, "delegate", 1, 1, {"min_sparsity": 0}, native=native)}
                res = {k: float(np.median(v)) for k, v in measure(runners, repeats).items()}
                sweep.append({"dtype": dtype, "pattern": pattern, "sparsity": s, "xnnpack_us": res["xnnpack"],
                              "delegate_us": res["delegate"], "speedup": res["xnnpack"] / res["delegate"]})
                if not native.why_not:
                    res = {k: float(np.median(v)) for k, v in measure(runners, repeats, from_c=True).items()}
                    sweep[-1]["c"] = {"xnnpack_us": res["xnnpack"], "delegate_us": res["delegate"],
                                      "speedup": res["xnnpack"] / res["delegate"]}
                print(f"  {dtype} {pattern} {s}: {sweep[-1]['speedup']:.2f}x"
                      + (f" (from C {sweep[-1]['c']['speedup']:.2f}x)" if "c" in sweep[-1] else ""), flush=True)
    result["crossover_sweep"] = sweep
    md += ["## Crossover sparsity (784->300 FC + ReLU, batch 1, 1 thread, random magnitude-pruned weights)", "",
           "| dtype | pattern | timed from | crossover vs XNNPACK dense | " + " | ".join(f"{s:.2f}" for s in sparsities)
           + " |", "|---|---|---|---|" + "---|" * len(sparsities)]
    for dtype in ("float32", "int8"):
        for pattern in ("unstructured", "1x16", "16x1" if dtype == "float32" else "16x4"):
            rs = [r for r in sweep if r["dtype"] == dtype and r["pattern"] == pattern]
            for how, fig in (("Python", lambda r: r), ("C", lambda r: r.get("c"))):
                if all(fig(r) for r in rs):
                    pts = [(r["sparsity"], fig(r)["speedup"]) for r in rs]
                    md.append(f"| {dtype} | {pattern} | {how} | {crossover(pts)} | "
                              + " | ".join(f"{v:.2f}x" for _, v in pts) + " |")
    md.append("")
    md.append("![speed-up vs sparsity](sparse_delegate.png)")

    from edge_lottery.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    from_c = all("c" in r for r in sweep)  # the kernels' own crossover, without the Python call per invoke
    for dtype, ls in (("float32", "-"), ("int8", "--")):
        for pattern in ("unstructured", "1x16", "16x1", "16x4"):
            pts = [(r["sparsity"], (r["c"] if from_c else r)["speedup"]) for r in sweep
                   if r["dtype"] == dtype and r["pattern"] == pattern]
            if pts:
                ax.plot(*zip(*pts, strict=True), ls, marker="o", label=f"{dtype} {pattern}")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("weight sparsity")
    ax.set_ylabel("speed-up vs XNNPACK dense")
    ax.set_yscale("log")
    ax.set_title("784->300 FC, batch 1, 1 thread" + (", invokes timed from C" if from_c else ""))
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(args.out.with_suffix(".png"), buf.getvalue())
    print("\n".join(md))


if __name__ == "__main__":
    main()
