#!/usr/bin/env python3
"""A stand-in for LiteRT's ``benchmark_model`` run on the adb stand-in's "device".

It runs the pushed model on the real LiteRT interpreter (ai_edge_litert) with the given threads
and runs, and prints its timings in the recorded ``benchmark_model`` formats
(docs/mlperf-tiny-protocol.md §7.4): FAKE_BM_FORMAT=modern (``INFO:`` on stdout, scientific
notation allowed), legacy (bare lines on stderr, ``Average inference timings in us``), or crash
(starts, then dies of SIGSEGV like a binary for the wrong delegate).
"""

import os
import signal
import statistics
import sys
import time


def stats_line(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return "count=0"
    avg = sum(xs) / n
    std = statistics.pstdev(xs)
    q = lambda p: xs[min(n - 1, int(p * n))]  # noqa: E731
    return (f"count={n} first={int(xs[0])} curr={int(xs[-1])} min={int(xs[0])} max={int(xs[-1])} "
            f"avg={avg:g} std={int(std)} p5={int(q(0.05))} median={int(q(0.5))} p95={int(q(0.95))}")


def main():
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    fmt = os.environ.get("FAKE_BM_FORMAT", "modern")
    out = sys.stdout if fmt == "modern" else sys.stderr
    pre = "INFO: " if fmt == "modern" else ""

    def say(msg):
        out.write(pre + msg + "\n")
        out.flush()

    say("STARTING!")
    threads = int(args.get("num_threads", "-1"))
    runs = int(args.get("num_runs", "50"))
    warm = int(args.get("warmup_runs", "1"))
    graph = args["graph"]
    say(f"Num threads: [{threads}]")
    say(f"Graph: [{graph}]")
    if fmt == "crash":
        say("Loaded model " + graph)
        os.kill(os.getpid(), signal.SIGSEGV)
    if args.get("use_gpu") == "true":
        sys.stderr.write("ERROR: Failed to apply GPU delegate.\n")
        say("Failed to apply GPU delegate.")
        return 1
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    t0 = time.perf_counter()
    it = Interpreter(model_path=graph, num_threads=max(1, threads))
    it.allocate_tensors()
    init_us = (time.perf_counter() - t0) * 1e6
    say(f"Loaded model {graph}")
    if args.get("use_xnnpack", "true") != "false":
        say("Created TensorFlow Lite XNNPACK delegate for CPU.")
    say(f"The input model file size (MB): {os.path.getsize(graph) / 1e6:g}")
    say(f"Initialized session in {init_us / 1e3:.3f}ms.")
    d = it.get_input_details()[0]
    x = np.zeros(d["shape"], dtype=d["dtype"])

    def timed(n):
        ts = []
        for _ in range(n):
            it.set_tensor(d["index"], x)
            s = time.perf_counter()
            it.invoke()
            ts.append((time.perf_counter() - s) * 1e6)
        return ts

    say(f"Running benchmark for at least {warm} iterations and at least 0.5 seconds but terminate if "
        f"exceeding 150 seconds.")
    w = timed(max(1, warm))
    say(stats_line(w))
    say(f"Running benchmark for at least {runs} iterations and at least 1 seconds but terminate if "
        f"exceeding 150 seconds.")
    r = timed(runs)
    say(stats_line(r))
    avg_w, avg_r = sum(w) / len(w), sum(r) / len(r)
    if fmt == "legacy":
        say(f"Average inference timings in us: Warmup: {avg_w:g}, Init: {int(init_us)}, Inference: {avg_r:g}")
    else:
        say(f"Inference timings in us: Init: {int(init_us)}, First inference: {int(w[0])}, "
            f"Warmup (avg): {avg_w:g}, Inference (avg): {avg_r:g}")
        say("Memory footprint delta from the start of the tool (MB): init=5 overall=11.2695")
    return 0


if __name__ == "__main__":
    sys.exit(main())
