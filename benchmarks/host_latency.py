"""Latency, arena and MAC counts of the MLPerf Tiny reference architectures on the bench targets.

Builds the four MLPerf Tiny architectures of the model registry (DS-CNN for kws01, MobileNetV1
0.25x for vww01, ResNet-8 for ic01, the FC autoencoder for ad01) with seeded random weights,
converts each to float32 and full-integer int8 TFLite, and runs them through
``edge-lottery bench``'s targets:

- host: LiteRT with the default XNNPACK delegate and with builtin kernels only (1 thread);
- tflm: the stock TFLite-Micro interpreter (exact arena; int8 only);
- estimate: cortex-m4-80mhz and cortex-m7-480mhz profiles (int8 only).

It also checks the MAC counter against the MAC counts published in the MLPerf Tiny paper
(mlperf-tiny-protocol.md 11.3). Untrained weights do not change latency of dense kernels.

Usage: ``python benchmarks/host_latency.py [--runs N] [--quick]``; writes
docs/results/host_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_lottery import _tf_env  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parent.parent
MODELS = {  # registry name -> (benchmark, input shape, classes, published MACs)
    "ds_cnn": ("kws01", (49, 10, 1), 12, 2.7e6),
    "mobilenet_v1_025": ("vww01", (96, 96, 3), 2, 7.5e6),
    "resnet8": ("ic01", (32, 32, 3), 10, 12.5e6),
    "fc_autoencoder": ("ad01", (640,), 640, 0.26e6),
}


def _convert(model, shape, int8: bool) -> bytes:
    from converters.tflite import convert

    if not int8:
        return convert(model, "float32")
    rng = np.random.default_rng(0)
    return convert(model, "int8", np.concatenate([rng.random((1, *shape), dtype=np.float32) for _ in range(8)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2 models, 30 runs")
    args = parser.parse_args()
    runs = 30 if args.quick else args.runs
    names = list(MODELS)[:2] if args.quick else list(MODELS)

    from devices.environment import host_environment
    from devices.settings import BenchSettings
    from devices.targets import get_target
    from edge_lottery.models import build_model

    work = Path(tempfile.mkdtemp(prefix="host-latency-"))
    rows = []
    for name in names:
        bench, shape, classes, published = MODELS[name]
        keras_model = build_model(name, shape, classes, seed=0)
        for int8 in (False, True):
            path = work / f"{name}_{'int8' if int8 else 'float'}.tflite"
            path.write_bytes(_convert(keras_model, shape, int8))
            targets = ["host"] + (["tflm", "estimate:cortex-m4-80mhz", "estimate:cortex-m7-480mhz"] if int8 else [])
            for spec in targets:
                delegates = ["default", "none"] if spec == "host" else ["default"]
                for delegate in delegates:
                    settings = BenchSettings(runs=runs, warmup=max(5, runs // 10), delegate=delegate, timeout_s=300)
                    record = get_target(spec).run(path, settings)[0]
                    row = {"model": name, "benchmark": bench, "dtype": "int8" if int8 else "float32",
                           "target": spec, "delegate": delegate if spec == "host" else "",
                           "size_bytes": path.stat().st_size, "published_macs": published}
                    for fig in record.figures:
                        if fig.name in ("latency_p50", "latency_p99", "latency_min", "peak_memory",
                                        "arena_bytes", "energy_per_inference", "macs"):
                            row[fig.name] = fig.value
                            row[fig.name + "_kind"] = fig.kind
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    env = host_environment()
    result = {"environment": env, "runs": runs, "threads": 1, "rows": rows}
    out = REPO / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    from edge_lottery.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "host_latency.json", result)
    lines = [
        "# Host latency, TFLite-Micro arena and estimates of the MLPerf Tiny architectures",
        "",
        f"`python benchmarks/host_latency.py --runs {runs}`. Machine: {env['cpu']}, {env['cores']} cores, "
        f"{env['os']}, Python {env['python']}; packages {env['packages']}. 1 thread, seeded random weights and "
        "inputs. Host latencies are wall-clock on a shared machine (p50 is the robust figure). Estimates are "
        "analytical priors from uncalibrated profiles.",
        "",
        "| model | bench | dtype | target | delegate | size | MACs counted / published | p50 | p99 | memory |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p50 = f"{r['latency_p50'] * 1e3:.1f} µs" + (" (est.)" if r["latency_p50_kind"] == "estimated" else "")
        p99 = f"{r['latency_p99'] * 1e3:.1f} µs" if "latency_p99" in r else "-"
        memory = (f"arena {r['arena_bytes']:.0f} B" if "arena_bytes" in r else
                  f"peak RSS +{r['peak_memory'] / 1024:.0f} KiB" if "peak_memory" in r else "-")
        macs = f"{r['macs'] / 1e6:.2f} M / {r['published_macs'] / 1e6:.2f} M" if "macs" in r else "-"
        lines.append(f"| {r['model']} | {r['benchmark']} | {r['dtype']} | {r['target']} | {r['delegate']} | "
                     f"{r['size_bytes'] / 1024:.1f} KiB | {macs} | {p50} | {p99} | {memory} |")
    atomic_write_text(out / "host_latency.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'host_latency.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
