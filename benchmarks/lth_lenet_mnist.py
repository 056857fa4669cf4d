"""Frankle & Carbin's LeNet-300-100 MNIST experiment on edge-lottery (TFMOT wrappers, tf_keras).

The paper (ICLR 2019, Fig. 3/4): LeNet-300-100, Adam 1.2e-3, batch 60, 50K iterations, weights
rewound to their initialisation (k = 0), 20 % of the hidden weights and 10 % of the output layer
pruned per level, compared with random re-initialisation of the same masks. Reference points
(lth-and-tfmot-notes §8.1): dense ≈ 98.0 ± 0.2 %; tickets learn faster down to ≈ 21 % of the
weights and are back at the dense accuracy at 3.6 %; re-initialised networks fall behind.

``--mode full`` runs the paper's settings (15 levels: 3.5 % of the weights, 31 training runs of 50K
iterations each). ``--mode quick`` keeps the recipe and the 15 levels but trains 4,000 iterations per run, so it
finishes in about ten minutes on two shared cores. Both are resumable (re-run the
same command). Results, machine, versions and settings go to ``<out>/lth_lenet_mnist_<mode>.json``
and the accuracy plot to ``<out>/lth_lenet_mnist_<mode>.png``.

    python benchmarks/lth_lenet_mnist.py --mode quick --data-dir ../shared/data --out docs/results
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)
from edge_lottery.atomic import atomic_write_json

MODES = {
    "quick": {"levels": 15, "iterations": 4000},
    "full": {"levels": 15, "iterations": 50_000},
}
PAPER = {
    "source": "Frankle & Carbin, ICLR 2019 (arXiv 1803.03635), Fig. 3/4; lth-and-tfmot-notes §8.1 [secondary]",
    "dense_test_accuracy": "about 0.980 +- 0.002",
    "ticket_matches_dense_down_to_percent_remaining": 3.6,
    "fastest_learning_at_percent_remaining": 21.1,
    "reinit_at_21_percent": "about 0.5 pp less accurate, 2.51x slower to early-stop than the ticket",
}


def machine() -> dict:
    from devices.environment import host_environment

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {**host_environment(), "load_average_at_start": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (or IDX files)")
    parser.add_argument("--out", default="docs/results", help="where the JSON and PNG go")
    parser.add_argument("--work", default=None, help="search work directory (default /tmp/edge-lottery-bench/...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-jit", action="store_true", help="do not XLA-compile the train step")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from edge_lottery.search import LotteryTicketSearch

    settings = MODES[args.mode]
    work = Path(args.work or f"/tmp/edge-lottery-bench/lth_lenet_mnist_{args.mode}_seed{args.seed}")
    out = Path(args.out)
    start_machine = machine()
    t0 = time.perf_counter()
    lts = LotteryTicketSearch(
        "lenet_300_100", "mnist", work_dir=work, data_dir=args.data_dir, seed=args.seed,
        levels=settings["levels"], iterations=settings["iterations"], rewind="weights", rewind_step=0,
        prune_fraction=0.2, prune_fraction_output=0.1, keep_output=False, scope="layerwise",
        controls=("reinit",), jit_compile=not args.no_jit, steps_per_execution=50, eval_every=100,
    )
    result = lts.run()
    wall = time.perf_counter() - t0
    rows = result.summary["levels"]
    ticket = {r["level"]: r for r in rows if r["branch"] == "ticket"}
    reinit = {r["level"]: r for r in rows if r["branch"] == "reinit"}
    dense = ticket[0]
    compare = [
        {"level": lvl, "percent_remaining": round(100 * ticket[lvl]["density_all"], 2),
         "ticket_test_accuracy": ticket[lvl]["test_accuracy"],
         "reinit_test_accuracy": reinit.get(lvl, {}).get("test_accuracy"),
         "ticket_early_stop_step": ticket[lvl]["early_stop_step"],
         "reinit_early_stop_step": reinit.get(lvl, {}).get("early_stop_step"),
         "ticket_test_accuracy_at_early_stop": ticket[lvl]["test_accuracy_at_early_stop"],
         "reinit_test_accuracy_at_early_stop": reinit.get(lvl, {}).get("test_accuracy_at_early_stop")}
        for lvl in sorted(ticket)
    ]
    epoch_seconds = [r["epoch_seconds_mean"] for r in rows if r.get("epoch_seconds_mean")]
    # Steady-state speed (first run excluded: it includes tracing), and what full mode would take here.
    steady = [r for r in rows if r["level"] > 0]
    steps_per_second = (sum(r["end_step"] - r["start_step"] for r in steady) / sum(r["train_seconds"] for r in steady)
                        if steady else None)
    full = MODES["full"]
    full_estimate = (full["iterations"] * (2 * full["levels"] + 1) / steps_per_second) if steps_per_second else None
    record = {
        "benchmark": "lth_lenet_mnist", "mode": args.mode, "machine": start_machine,
        "versions": result.summary["versions"], "config": result.summary["config"],
        "hyperparameters": result.summary["hyperparameters"], "training": result.summary["training"],
        "dataset": result.summary["dataset"],
        "note": ("percent_remaining counts every prunable weight (output layer included, pruned at 10 %/level) "
                 "as the paper's P_m; test accuracy is at the end of training, *_at_early_stop at the step of "
                 "minimum validation loss (5K held-out training images), as in the paper."),
        "wall_seconds_this_invocation": wall,
        # From the work directory, so a resumed or repeated invocation still reports the search's span.
        "search_span_seconds": max((p.stat().st_mtime for p in work.rglob("COMPLETE")), default=0.0)
        - (work / "search.json").stat().st_mtime,
        "speed_note": ("seconds include validation on 5K images every 100 steps and a test evaluation at every "
                       "new best validation loss; the machine was shared with other jobs (load average above)"),
        "train_seconds_total": sum(r["train_seconds"] for r in rows),
        "mean_seconds_per_eval_interval": (sum(epoch_seconds) / len(epoch_seconds)) if epoch_seconds else None,
        "eval_interval_steps": result.summary["training"]["eval_every"],
        "steady_steps_per_second": steps_per_second,
        "samples_per_second": steps_per_second * result.summary["hyperparameters"]["batch_size"] if steps_per_second else None,
        "full_mode_estimated_seconds_on_this_machine": full_estimate,
        "dense_test_accuracy": dense["test_accuracy"],
        "best_level": result.summary["best_level"],
        "levels": compare, "rows": rows, "paper": PAPER,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"lth_lenet_mnist_{args.mode}.json", record)
    shutil.copyfile(work / "accuracy_vs_density.png", out / f"lth_lenet_mnist_{args.mode}.png")
    from edge_lottery.report import render_table

    print(render_table(rows, best_level=result.summary["best_level"], title=f"LTH LeNet-300-100 MNIST ({args.mode})"))
    print(f"wall {wall:.0f} s; results in {out}/lth_lenet_mnist_{args.mode}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
