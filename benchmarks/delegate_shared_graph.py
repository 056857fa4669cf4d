"""The sparse delegate next to XNNPACK: which int8 layers are worth claiming in a shared graph.

Not a test. Writes docs/results/delegate_shared_graph.{json,md} with machine, versions and settings.

When the delegate shares a graph with XNNPACK (a MobileNet: XNNPACK runs the depthwise convolutions),
its kernels stay on one thread (XNNPACK's workers poll the other cores between their jobs), while
XNNPACK runs a layer it is left with on all of the interpreter's threads. Sparsity saves
multiply-adds, but every output still costs its exact int8 requantization, so a layer with few inputs
per output saves little. The delegate's estimate (``dense_peer_faster`` in
converters/delegate/src/delegate.c, option ``dense_threads``) declines an int8 layer when

    (24 + density * K) / threads_here  >  (24 + K) / threads_of_xnnpack

where K is the number of inputs per output and 24 the requantization's cost in multiply-adds (a layer
without any weight is always claimed: its outputs are a constant there).
This script measures what that estimate stands on:

* single int8 1x1 convolutions (N = 64 outputs, 24x24 pixels, batch 8) for K in 8..128 and 50 / 75
  / 90 % 16x4 sparsity: XNNPACK dense on 1 and 2 threads against the delegate on one thread, with
  the delegate's own verdict for 2 threads next to the measured ratio (read from its verbose log for
  the same convolution followed by a LOGISTIC op, which makes the graph a shared one), and a
  least-squares fit of the
  per-output time of each side to a + b * (multiply-adds per output), whose a / b is the
  requantization's cost in multiply-adds.

Its effect on a whole model is timed by benchmarks/sparse_delegate.py: the trained mobilenet_v1_025
int8 ticket on 2 threads with the estimate on (the default) and off (``dense_threads=0``), side by side.

Interleaved samples of ~20 ms of back-to-back invokes from Python, median over rounds.

    nice python benchmarks/delegate_shared_graph.py    # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import sparse_delegate as sd  # noqa: E402  (the same timing, pruning and conversion as the speed benchmark)

HW, N, BATCH = 24, 64, 8
KS = (8, 16, 32, 64, 128)
SPARSITIES = (0.5, 0.75, 0.9)


def pointwise(k: int, sparsity: float, shared: bool = False) -> bytes:
    """One int8 1x1 conv k -> N over HW x HW pixels, 16x4 blocks pruned to ``sparsity``; with
    ``shared``, the same conv followed by a sigmoid (LOGISTIC, which the delegate never claims)."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((HW, HW, k))
    conv = keras.layers.Conv2D(N, 1, activation="relu")
    out = conv(inp)
    model = keras.Model(inp, keras.layers.Activation("sigmoid")(out) if shared else out)
    w, b = conv.get_weights()
    w[0, 0] = sd.block_prune(w[0, 0].T, sparsity, 16, 4).T
    conv.set_weights([w, b])
    return sd.convert(model, "int8", np.random.default_rng(0).uniform(-1, 1, (32, HW, HW, k)).astype(np.float32))


def density_of(model: bytes) -> tuple[float, float]:
    """Non-zero fraction of the converted model's int8 conv kernel (quantization adds zeros), and the
    fraction of its outputs in groups of 16 channels with any non-zero weight."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    for t in it.get_tensor_details():
        if len(t["shape"]) == 4 and t["shape"][0] == N and t["dtype"] == np.int8:
            try:
                w = it.get_tensor(t["index"]).reshape(N, -1)
            except ValueError:  # not a constant
                continue
            live = sum(min(16, N - g) for g in range(0, N, 16) if np.any(w[g:g + 16]))
            return float(np.count_nonzero(w) / w.size), live / N
    raise RuntimeError("no int8 conv kernel found")


def fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    b, a = np.polyfit(np.asarray(x), np.asarray(y), 1)
    return float(a), float(b)


def main() -> None:
    from edge_lottery.atomic import atomic_write_json, atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "delegate_shared_graph")
    args = ap.parse_args()

    info = sd.machine()
    settings = {"rounds": args.rounds, "repeats": args.repeats, "pixels": f"{HW}x{HW}", "outputs": N, "batch": BATCH,
                "timing": f"median over {args.rounds} rounds of {args.repeats} interleaved samples of ~20 ms of "
                          "back-to-back invoke() calls from Python"}
    one_thread = {"num_threads": 1, "min_sparsity": 0, "dense_threads": 0}  # a lone layer: force what a shared graph gets
    layers = []
    for k in KS:
        for s in SPARSITIES:
            model = pointwise(k, s)
            density, live = density_of(model)
            declined = bool(sd.layers_left_to_xnnpack(pointwise(k, s, shared=True), BATCH, 2))
            layers.append({"K": k, "sparsity": s, "density": density, "live_outputs": live,
                           "delegate_declines_at_2_threads": declined,
                           "runners": {"xnnpack_1": sd.Runner(model, "xnnpack", BATCH, 1),
                                       "xnnpack_2": sd.Runner(model, "xnnpack", BATCH, 2),
                                       "delegate_1": sd.Runner(model, "delegate", BATCH, 2, one_thread)}})
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} ...", flush=True)
        for layer in layers:
            layer.setdefault("samples", {k: [] for k in layer["runners"]})
            for k, v in sd.measure(layer["runners"], args.repeats).items():
                layer["samples"][k] += v
        time.sleep(2)

    outputs = BATCH * HW * HW * N
    rows = []
    for layer in layers:
        us = {k: float(np.median(v)) for k, v in layer["samples"].items()}
        rows.append({"K": layer["K"], "sparsity": layer["sparsity"], "density": layer["density"],
                     "live_outputs": layer["live_outputs"], **{f"{k}_us": v for k, v in us.items()},
                     "xnnpack_2_over_delegate_1": us["xnnpack_2"] / us["delegate_1"],
                     "delegate_declines_at_2_threads": layer["delegate_declines_at_2_threads"]})
    ps = 1e6 / outputs  # us per invoke -> ps per output
    a_x, b_x = fit([r["K"] for r in rows], [r["xnnpack_1_us"] * ps for r in rows])
    a_d, b_d = fit([r["density"] * r["K"] for r in rows], [r["delegate_1_us"] * ps for r in rows])
    disagree = sum((r["xnnpack_2_over_delegate_1"] > 1) == r["delegate_declines_at_2_threads"] for r in rows)
    result = {"machine": info, "settings": settings, "layers": rows,
              "fit_ps_per_output": {"xnnpack_1_thread": {"a": a_x, "b_per_mac": b_x, "requant_macs": a_x / b_x},
                                    "delegate_1_thread": {"a": a_d, "b_per_mac": b_d, "requant_macs": a_d / b_d}},
              "estimate_disagrees": disagree, "layers_measured": len(rows)}

    md = ["# Sparse delegate next to XNNPACK: which int8 layers to claim in a shared graph", "",
          f"Generated by `benchmarks/delegate_shared_graph.py` on {info['date_utc']}.", "",
          "Machine and versions: " + ", ".join(f"{k}={v}" for k, v in info.items()), "",
          "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
          f"## One int8 1x1 convolution, K -> {N} over {HW}x{HW} pixels, batch {BATCH}, 16x4 blocks", "",
          "XNNPACK runs the model stored dense; the delegate runs it on one thread (as it does next to XNNPACK in "
          "a shared graph). Density is the non-zero fraction after int8 conversion, live the fraction of outputs "
          "in groups of 16 channels with any weight (the others are a constant in the delegate; the estimate leaves "
          "them out of account, as they did not make a layer measurably cheaper per output). The last column is "
          "the delegate's own decision on 2 threads (its verbose log), for the same convolution followed by a "
          "LOGISTIC op, which makes the graph a shared one: it declines when 24 + density K > (24 + K) / 2.", "",
          "| K | sparsity | density | live | XNNPACK 1 thread (us) | XNNPACK 2 threads (us) | delegate 1 thread (us) "
          "| XNNPACK 2 threads / delegate | delegate's decision on 2 threads |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['K']} | {r['sparsity']:.2f} | {r['density']:.3f} | {r['live_outputs']:.2f} | "
                  f"{r['xnnpack_1_us']:.1f} | {r['xnnpack_2_us']:.1f} | {r['delegate_1_us']:.1f} | {r['xnnpack_2_over_delegate_1']:.2f}x | "
                  f"{'decline' if r['delegate_declines_at_2_threads'] else 'claim'} |")
    md += ["", f"The delegate's decision disagrees with the measured ratio (claim where XNNPACK on 2 threads is faster, "
           f"or decline where it is slower) for {disagree} of {len(rows)} layers.", "",
           "Least-squares fit of the time per output (ps) on one thread to a + b x, x the multiply-adds per output "
           "(K for XNNPACK, density x K for the delegate); a / b is the requantization's cost in multiply-adds:", "",
           "| side | a (ps) | b (ps per multiply-add) | a / b |", "|---|---|---|---|",
           f"| XNNPACK dense | {a_x:.1f} | {b_x:.2f} | {a_x / b_x:.1f} |",
           f"| delegate sparse | {a_d:.1f} | {b_d:.2f} | {a_d / b_d:.1f} |"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), result)
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
