"""Benchmark: the search's train step with and without XLA, per registry model, on this CPU.

Not a test. Decides the default of ``TrainConfig.jit_compile`` (None = automatic): each model is
wrapped for fixed masks exactly as a search wraps it (TFMOT ``PruneLowMagnitude`` on every
prunable layer but the output), compiled with Adam and ``steps_per_execution=50``, and trained on
random inputs of the model's reference shape, once with ``jit_compile=False`` and once with
``True``. The first ``fit`` (trace, and XLA compile) is reported apart; then timed ``fit`` calls
of 50 steps alternate between the two models, and the table gives median milliseconds per step
and their ratio, measured side by side in one process.

    nice python benchmarks/train_step_xla.py            # ~8 min on 2 cores
    nice python benchmarks/train_step_xla.py --quick    # LeNet-300-100 and ds_cnn, 1 repeat

Writes docs/results/train_step_xla.{json,md} (``--out PREFIX`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edge_lottery import _tf_env  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parent.parent
MODELS = {  # registry name -> (input shape, batch size of its training defaults)
    "lenet_300_100": ((28, 28, 1), 60),
    "lenet5": ((28, 28, 1), 64),
    "conv2": ((32, 32, 3), 60),
    "resnet8": ((32, 32, 3), 32),
    "ds_cnn": ((49, 10, 1), 100),
    "mobilenet_v1_025": ((96, 96, 3), 32),
}
STEPS = 50


def compiled(name: str, shape: tuple[int, ...], jit: bool):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from edge_lottery import tfmot_masks
    from edge_lottery.models import build_model

    model = tfmot_masks.wrap_for_masks(build_model(name, shape, 10, seed=0), exclude=("output",))
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=STEPS, jit_compile=jit)
    return model, [tfmot.sparsity.keras.UpdatePruningStep()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "train_step_xla")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    names = ["lenet_300_100", "ds_cnn"] if args.quick else list(MODELS)
    repeats = 1 if args.quick else args.repeats

    from devices.environment import host_environment
    from edge_lottery import training

    rows = []
    for name in names:
        shape, batch = MODELS[name]
        rng = np.random.default_rng(0)
        n = batch * STEPS
        x = rng.random((n, *shape), dtype=np.float32)
        y = rng.integers(0, 10, n)
        data = training.TensorData(x, y, x[:1], y[:1], x[:1], y[:1])
        indices = training.batch_indices(n, batch, 0, 0, STEPS)
        models, first, per_step = {}, {}, {False: [], True: []}
        for jit in (False, True):
            models[jit] = compiled(name, shape, jit)
            t0 = time.perf_counter()
            models[jit][0].fit(data.train_dataset(indices), epochs=1, steps_per_epoch=STEPS,
                               callbacks=models[jit][1], verbose=0)
            first[jit] = time.perf_counter() - t0
        for _ in range(repeats):
            for jit in (False, True):
                t0 = time.perf_counter()
                models[jit][0].fit(data.train_dataset(indices), epochs=1, steps_per_epoch=STEPS,
                                   callbacks=models[jit][1], verbose=0)
                per_step[jit].append((time.perf_counter() - t0) / STEPS * 1e3)
        row = {"model": name, "input_shape": list(shape), "batch_size": batch,
               "first_fit_s": {"tf": first[False], "xla": first[True]},
               "ms_per_step": {"tf": statistics.median(per_step[False]), "xla": statistics.median(per_step[True])},
               "samples_ms_per_step": {"tf": per_step[False], "xla": per_step[True]}}
        row["xla_over_tf"] = row["ms_per_step"]["xla"] / row["ms_per_step"]["tf"]
        rows.append(row)
        print(f"{name}: tf {row['ms_per_step']['tf']:.1f} ms/step, xla {row['ms_per_step']['xla']:.1f} "
              f"({row['xla_over_tf']:.2f}x)", flush=True)

    settings = {"steps_per_fit": STEPS, "repeats": repeats, "quick": args.quick, "optimizer": "adam 1e-3",
                "steps_per_execution": STEPS, "wrapped": "TFMOT PruneLowMagnitude on every prunable layer but output"}
    result = {"machine": host_environment(), "settings": settings, "rows": rows}
    md = ["# Train step with and without XLA (TrainConfig.jit_compile)", "",
          f"Produced by `benchmarks/train_step_xla.py` ({'--quick' if args.quick else 'full run'}). Machine: "
          f"{result['machine'].get('cpu', '?')}, {result['machine'].get('cores', '?')} logical CPUs; "
          f"TensorFlow {result['machine'].get('packages', {}).get('tensorflow', '?')}.", "",
          f"Each model wrapped for fixed masks as a search wraps it, Adam, steps_per_execution {STEPS}; median of "
          f"{repeats} alternating fits of {STEPS} steps; the first fit (trace + compile) apart.", "",
          "| model | input | batch | TF ms/step | XLA ms/step | XLA / TF | first fit TF s | first fit XLA s |",
          "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['model']} | {'x'.join(map(str, r['input_shape']))} | {r['batch_size']} | "
                  f"{r['ms_per_step']['tf']:.1f} | {r['ms_per_step']['xla']:.1f} | {r['xla_over_tf']:.2f} | "
                  f"{r['first_fit_s']['tf']:.1f} | {r['first_fit_s']['xla']:.1f} |")
    md += ["", "XLA / TF above 1 means XLA is slower. `jit_compile=None` (the default) uses XLA only for "
           "models without convolution layers.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=1, default=str)), (".md", "\n".join(md))):
        tmp = args.out.with_name(args.out.name + suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out.with_name(args.out.name + suffix))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
