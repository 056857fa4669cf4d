"""Profile of the sparse delegate's int8 time: where the cycles of a claimed op go.

Not a test. Writes docs/results/delegate_profile.{json,md} with machine, versions and settings:

* per-op TSC cycles of the LeNet-300-100 int8 16x4 ticket (batch 1) and of mobilenet_v1_025 int8
  (90 % 16x4 on its 1x1 convolutions, batch 1), from a developer build of the delegate
  (``-DEDGE_PROFILE``, built into a temporary directory; the installed library is not touched);
* the batch-1 stream's entries (stored blocks plus zero padding) per layer of the ticket, for
  panels grouped in order (the previous layout) and grouped by block count (the current one);
* the thread-pool trials of every claimed convolution of mobilenet_v1_025 int8 at batch 8 with
  2 threads forced (``num_threads=2``), as the delegate's verbose log reports them;
* the whole invoke of that model at batch 8 on the interpreter's 2 threads, XNNPACK alone against
  the delegate with its default (one thread when it shares the graph with XNNPACK) and with
  ``num_threads=2``, interleaved in one process after the first re-check of the thread choice;
* the per-partition trials of the LeNet tickets (int8 16x4 and float32 16x1) run as one pool job on
  2 threads, at batch 1 and 8 (the interpreter's 2 threads; the delegate runs the whole graph);
* the same partitions in steady state with each path forced: per-op cycles on one thread against
  each share's part in the pool job;
* the hot-loop cost of one stored block and of the broadcast alternatives
  (benchmarks/delegate_block_loop.c, AVX-512 VNNI machines only), and the pool's hand-off cost and
  the round trip of one cache line between its two threads (benchmarks/delegate_pool_handoff.c,
  x86-64).

    nice python benchmarks/delegate_profile.py    # ~4 min on 2 cores (trains the LeNet tickets)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import converters.delegate as cd
import edge_lottery  # noqa: F401  (Keras 2 before TensorFlow)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import sparse_delegate as sd  # noqa: E402  (the same tickets and models as the speed benchmark)

_CHILD = r"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, load_delegate
lib, model, batch, threads, n, options = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
opts = dict(kv.split("=") for kv in options.split(",") if kv)
it = Interpreter(model_path=model, experimental_delegates=[load_delegate(lib, opts)], num_threads=threads)
d = it.get_input_details()[0]
if d["shape"][0] != batch:
    it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
it.allocate_tensors()
d = it.get_input_details()[0]
rng = np.random.default_rng(0)
x = rng.integers(-128, 128, d["shape"]) if d["dtype"] == np.int8 else rng.uniform(0, 1, d["shape"])
it.set_tensor(d["index"], x.astype(d["dtype"]))
for _ in range(n):
    it.invoke()
del it
"""
_MIXED_CHILD = r"""
import sys, time, numpy as np
from ai_edge_litert.interpreter import Interpreter, load_delegate
lib, model, batch, warm, rounds, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
configs = {"xnnpack": None, "delegate default": {}, "delegate num_threads=2": {"num_threads": "2", "verbose": "1"}}
its = {}
for name, opts in configs.items():
    dl = [] if opts is None else [load_delegate(lib, opts)]
    it = Interpreter(model_path=model, experimental_delegates=dl, num_threads=2)
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], [batch, *d["shape"][1:]])
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).integers(-128, 128, d["shape"]).astype(d["dtype"]))
    for _ in range(warm):  # past the thread trials and the first re-check (after 1024 runs)
        it.invoke()
    its[name] = it
times = {name: [] for name in its}
for _ in range(rounds):
    for name, it in its.items():
        t0 = time.perf_counter()
        for _ in range(n):
            it.invoke()
        times[name].append((time.perf_counter() - t0) / n * 1e6)
for name, v in times.items():
    print(f"MIXED {name}|{float(np.median(v)):.1f}|{min(v):.1f}|{max(v):.1f}", flush=True)
"""
_OP = re.compile(r"node (\d+) M=(\d+) K=(\d+) N=(\d+): (\d+) cycles")
_TRIAL = re.compile(r"node (\d+): (\d+) threads ([\d.]+)us, 1 thread ([\d.]+)us \(best of \d+\) -> (.+)$")
_INVOKE = re.compile(r"profile: \d+ invokes, (\d+) cycles each")
_HALF = re.compile(r"pool job node (\d+): share 0 (\d+) cycles, share 1 (\d+) cycles")
_CHAIN = re.compile(r"(\d+) ops as one job \((\w+)\): (\d+) threads ([\d.]+)us, 1 thread ([\d.]+)us \(best of \d+\) -> (.+)$")


def build_profile_library(tmp: Path) -> Path:
    env = dict(os.environ, CFLAGS="-DEDGE_PROFILE")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-b", str(tmp / "lib"), "-t", str(tmp / "obj")],
                   cwd=REPO, env=env, check=True, capture_output=True)
    return next((tmp / "lib" / "converters" / "delegate").glob("_edge_sparse_delegate*.so"))


def run_child(lib: Path, model: Path, batch: int, threads: int, n: int, options: str,
              env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(lib), str(model), str(batch), str(threads), str(n),
                          options], capture_output=True, text=True, check=True, env=dict(os.environ, **(env or {})))
    return out.stderr


def per_op_cycles(stderr: str) -> list[dict]:
    return [{"node": int(m[1]), "M": int(m[2]), "K": int(m[3]), "N": int(m[4]), "cycles": int(m[5])}
            for m in _OP.finditer(stderr)]


def stream_entries(model: Path) -> list[dict]:
    """Batch-1 stream entries per 16x4 int8 layer: in-order groups of 4 panels padded to their
    longest panel (the previous layout) against groups of panels sorted by block count."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    rows = []
    for d in it.get_tensor_details():
        if len(d["shape"]) != 2 or d["dtype"] != np.int8 or d["shape"][0] < 16:
            continue
        try:
            w = it.get_tensor(d["index"])
        except ValueError:
            continue
        n, k = w.shape
        counts = np.array([sum(bool(np.any(w[p:p + 16, g:g + 4])) for g in range(0, k, 4)) for p in range(0, n, 16)])
        in_order = int(sum(4 * counts[i:i + 4].max() for i in range(0, len(counts), 4)))
        ranked = np.sort(counts)[::-1]
        by_count = int(sum(len(ranked[i:i + 4]) * ranked[i] for i in range(0, len(ranked), 4)))
        rows.append({"layer": d["name"], "shape": [int(n), int(k)], "stored_blocks": int(counts.sum()),
                     "entries_in_order": in_order, "entries_by_count": by_count})
    return rows


def block_loop(tmp: Path) -> dict[str, float] | None:
    if "avx512_vnni" not in Path("/proc/cpuinfo").read_text() or not shutil.which("gcc"):
        return None
    exe = tmp / "block_loop"
    subprocess.run(["gcc", "-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-o", str(exe),
                    str(REPO / "benchmarks" / "delegate_block_loop.c")], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: float(v) for name, v in (line.split() for line in out.splitlines())}


def pool_handoff(tmp: Path) -> dict[str, float] | None:
    if platform.machine() not in ("x86_64", "AMD64") or not shutil.which("gcc"):
        return None
    exe, src = tmp / "pool_handoff", REPO / "converters" / "delegate" / "src"
    subprocess.run(["gcc", "-O2", "-I", str(src), "-o", str(exe), str(REPO / "benchmarks" / "delegate_pool_handoff.c"),
                    str(src / "pool.c"), "-lpthread"], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: float(v) for name, v in (line.split() for line in out.splitlines())}


def mixed_graph_threads(model: Path, batch: int = 8) -> dict:
    """Whole-invoke times of a graph the delegate shares with XNNPACK (2 threads): which thread
    setting of the delegate pays once the re-check has timed invoke to invoke, not the op alone."""
    proc = subprocess.run([sys.executable, "-c", _MIXED_CHILD, str(cd.library_path()), str(model), str(batch),
                           "2500", "7", "200"], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"mixed-graph child failed: {proc.stderr[-2000:]}")
    rows = [line.split(" ", 1)[1].split("|") for line in proc.stdout.splitlines() if line.startswith("MIXED ")]
    kept: dict[int, str] = {}  # each node's choice at its last re-check
    for m in re.finditer(r"node (\d+): re-checked after .* -> (.+)$", proc.stderr, re.M):
        kept[int(m[1])] = m[2]
    return {"batch": batch, "warm_invokes": 2500, "rounds": 7, "invokes_per_round": 200,
            "times_us": [{"config": c, "median": float(a), "min": float(b), "max": float(x)} for c, a, b, x in rows],
            "forced_ops_on_pool_after_recheck": sum(v == "threads" for v in kept.values()),
            "forced_ops_rechecked": len(kept)}


def chain_trials(lenet: dict[str, Path]) -> list[dict]:
    rows = []
    for name, model in lenet.items():
        for batch in (1, 8):
            for run in range(1, 4):  # separate processes: the second vCPU's availability varies between them
                log = run_child(cd.library_path(), model, batch, 2, 40, "min_sparsity=0,verbose=1")
                for m in (_CHAIN.search(line) for line in log.splitlines()):
                    if m:
                        rows.append({"ticket": name, "batch": batch, "run": run, "ops": int(m[1]), "split": m[2],
                                     "threads": int(m[3]), "pool_us": float(m[4]), "one_thread_us": float(m[5]),
                                     "choice": m[6]})
    return rows


def pool_halves(lib: Path, lenet: dict[str, Path]) -> list[dict]:
    """Steady state of the LeNet chain on 2 threads, each path forced (EDGE_PROFILE_THREADS, profile
    builds only): per-op cycles on one thread against each share's part of the op in the pool job."""
    rows = []
    for name, model in lenet.items():
        for batch in (1, 8):
            one = run_child(lib, model, batch, 2, 20000, "min_sparsity=0", {"EDGE_PROFILE_THREADS": "one"})
            pool = run_child(lib, model, batch, 2, 20000, "min_sparsity=0", {"EDGE_PROFILE_THREADS": "pool"})
            whole = {int(m[1]): int(m[5]) for m in _OP.finditer(one)}
            rows += [{"ticket": name, "batch": batch, "node": int(m[1]), "one_thread": whole[int(m[1])],
                      "share0": int(m[2]), "share1": int(m[3])} for m in _HALF.finditer(pool)]
            rows.append({"ticket": name, "batch": batch, "node": "invoke", "one_thread": int(_INVOKE.search(one)[1]),
                         "pool_job": int(_INVOKE.search(pool)[1])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "delegate_profile")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if not (args.data_dir / "mnist.npz").is_file():
        sys.exit(f"delegate_profile: expected MNIST at {args.data_dir / 'mnist.npz'}, not found (--data-dir)")
    info = sd.machine()
    result: dict = {"machine": info, "settings": {"epochs": args.epochs, "lenet_invokes": 20000,
                                                  "mobilenet_invokes": 300, "tsc": "rdtsc, cycles of the TSC"}}
    with tempfile.TemporaryDirectory(prefix="delegate_profile_") as tmpdir:
        tmp = Path(tmpdir)
        lib = build_profile_library(tmp)
        xtr = sd.load_mnist(args.data_dir)[0]
        ticket, method = sd.search_ticket(args.data_dir, "block16x4", 0.9, args.epochs)
        lenet = tmp / "lenet_i8.tflite"
        lenet.write_bytes(sd.convert(ticket, "int8", xtr[:64, ..., None]))
        mobile = tmp / "mobilenet_i8.tflite"
        mobile.write_bytes(sd.mobilenet("int8", 0.9))
        result["lenet_ticket"] = method
        result["lenet_ops"] = per_op_cycles(run_child(lib, lenet, 1, 1, 20000, "min_sparsity=0"))
        result["lenet_stream"] = stream_entries(lenet)
        result["mobilenet_ops"] = per_op_cycles(run_child(lib, mobile, 1, 1, 300, "min_sparsity=0.5"))
        trials = run_child(cd.library_path(), mobile, 8, 2, 40, "min_sparsity=0.5,num_threads=2,verbose=1")
        result["mobilenet_thread_trials"] = [
            {"node": int(m[1]), "threads": int(m[2]), "pool_us": float(m[3]), "one_thread_us": float(m[4]),
             "choice": m[5]} for m in (_TRIAL.search(line) for line in trials.splitlines()) if m]
        result["mobilenet_mixed_threads"] = mixed_graph_threads(mobile)
        f32_ticket, f32_method = sd.search_ticket(args.data_dir, "block16x1", 0.9, args.epochs)
        lenet_f32 = tmp / "lenet_f32.tflite"
        lenet_f32.write_bytes(sd.convert(f32_ticket, "float32", xtr[:64, ..., None]))
        result["lenet_f32_ticket"] = f32_method
        result["lenet_chain_trials"] = chain_trials({"int8 16x4": lenet, "float32 16x1": lenet_f32})
        result["lenet_pool_halves"] = pool_halves(lib, {"int8 16x4": lenet, "float32 16x1": lenet_f32})
        result["block_loop_tsc_cycles_per_block"] = block_loop(tmp)
        result["pool_handoff_tsc_cycles"] = pool_handoff(tmp)
    write(args.out, result)


def trial_rows(trials: list[dict], keys: tuple[str, ...]) -> list[str]:
    """Markdown rows of thread trials: the given leading columns, then pool, 1 thread, ratio, choice."""
    return ["| " + " | ".join(str(t[k]) for k in keys) + f" | {t['pool_us']:.2f} | {t['one_thread_us']:.2f} | "
            f"{t['pool_us'] / t['one_thread_us']:.2f}x | {t['choice']} |" for t in trials]


def write(out: Path, r: dict) -> None:
    from edge_lottery.atomic import atomic_write_json, atomic_write_text

    m = r["machine"]
    md = ["# Sparse delegate: where the int8 time goes", "",
          f"Generated by `benchmarks/delegate_profile.py` on {m['date_utc']}.", "",
          "Machine and versions: " + ", ".join(f"{k}={v}" for k, v in m.items()), "",
          "Settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()), "",
          "Cycles are TSC cycles (the TSC runs at the nominal clock; the cores may boost), means per invoke",
          "after the first 100 (in profiles up to 3bcee0c the warm-up, with a few slow pool wake-ups, was in them)",
          "from a `-DEDGE_PROFILE` build of the delegate while LiteRT runs the model from Python.", "",
          "## LeNet-300-100 int8 16x4 ticket, batch 1, 1 thread", "", f"Ticket: {r['lenet_ticket']}.", "",
          "| node | M | K | N | cycles |", "|---|---|---|---|---|"]
    md += [f"| {o['node']} | {o['M']} | {o['K']} | {o['N']} | {o['cycles']} |" for o in r["lenet_ops"]]
    md += [f"| all | | | | {sum(o['cycles'] for o in r['lenet_ops'])} |", "",
           "Batch-1 stream entries (stored blocks plus zero padding to the longest panel of each group of 4):", "",
           "| layer | shape [N, K] | stored blocks | panels grouped in order | grouped by block count |",
           "|---|---|---|---|---|"]
    md += [f"| {s['layer'][:48]} | {s['shape']} | {s['stored_blocks']} | {s['entries_in_order']} | "
           f"{s['entries_by_count']} |" for s in r["lenet_stream"]]
    ops = r["mobilenet_ops"]
    outputs = sum(o["M"] * o["N"] for o in ops)
    total = sum(o["cycles"] for o in ops)
    md += ["", "## mobilenet_v1_025 int8, 1x1 convolutions 90 % 16x4, batch 1, 1 thread", "",
           "| node | M (pixels) | K | N | cycles | cycles per output |", "|---|---|---|---|---|---|"]
    md += [f"| {o['node']} | {o['M']} | {o['K']} | {o['N']} | {o['cycles']} | {o['cycles'] / (o['M'] * o['N']):.2f} |"
           for o in ops]
    md += [f"| all | | | | {total} ({total / 2.6e3:.1f} us at 2.6 GHz) | {total / outputs:.2f} |", "",
           "## Thread-pool trials: mobilenet_v1_025 int8, batch 8, 2 threads forced (`num_threads=2`)", "",
           "Best of 8 timed invokes each, while XNNPACK runs the rest of the graph with 2 threads.", "",
           "| node | pool (us) | 1 thread (us) | pool / 1 thread | kept |", "|---|---|---|---|---|"]
    md += trial_rows(r["mobilenet_thread_trials"], ("node",))
    mx = r["mobilenet_mixed_threads"]
    base = next(t["median"] for t in mx["times_us"] if t["config"] == "xnnpack")
    md += ["", f"Whole invokes of the same model at batch {mx['batch']} with the interpreter on 2 threads, after "
           f"{mx['warm_invokes']} untimed invokes each (past the first re-check, which times the choice invoke to",
           f"invoke); median of {mx['rounds']} interleaved rounds of {mx['invokes_per_round']} invokes. With "
           f"`num_threads=2`, {mx['forced_ops_on_pool_after_recheck']} of the {mx['forced_ops_rechecked']} re-checked "
           "ops kept the pool.", "",
           "| configuration | us per invoke (median) | min-max | XNNPACK / this |", "|---|---|---|---|"]
    md += [f"| {t['config']} | {t['median']:.1f} | {t['min']:.1f}-{t['max']:.1f} | {base / t['median']:.2f}x |"
           for t in mx["times_us"]]
    md += ["", "## One pool job per invoke: LeNet-300-100 tickets on 2 threads (whole graph claimed)", "",
           "The partition's first 16 invokes alternate one pool job for all its ops (split: `panels`, each",
           "thread's output panels of every op with barriers between ops; `pair`, at batch 1 (int8 since 4c7a1fb), each",
           "thread's output panels of the first op and the second op over the same inputs, its partial sums",
           "added by the caller after the job, which then runs the third op; `rows`, each thread's rows through",
           "the whole chain) and",
           "one thread; best of 8 each, as the verbose log reports them. Float32 ticket: "
           f"{r['lenet_f32_ticket']}.", "",
           "Three processes per configuration. The trials come right after the pool is created; the worker",
           "starts on another CPU than the caller (until 7c8522c Linux could leave it on the caller's vCPU",
           "for milliseconds, and those trials timed the two shares taking turns: rows of ~160 us).", "",
           "| ticket | batch | process | ops | split | pool (us) | 1 thread (us) | pool / 1 thread | kept |",
           "|---|---|---|---|---|---|---|---|---|"]
    md += trial_rows(r["lenet_chain_trials"], ("ticket", "batch", "run", "ops", "split"))
    md += ["", "## Pool halves in steady state: LeNet-300-100 tickets on 2 threads", "",
           "Each path forced for 20000 invokes in its own process (`EDGE_PROFILE_THREADS=one|pool`, profile",
           "builds only). Per op: TSC cycles on one thread, and each share's part of it in the pool job",
           "(barrier waits excluded; at batch 1 the chain runs a pair (int8 since 4c7a1fb, which split panels before), and rows",
           "at batch 8; in a pair, share 0 of the second op includes adding the partial sums, and the third op",
           "runs on the caller after the job); an even split on two free cores would take 50 %. The invoke rows give",
           "the delegate's whole invoke (hand-off, barriers and waits included).", "",
           "| ticket | batch | node | 1 thread | share 0 | share 1 | slower share / 1 thread |",
           "|---|---|---|---|---|---|---|"]
    for h in r["lenet_pool_halves"]:
        if h["node"] == "invoke":
            md.append(f"| {h['ticket']} | {h['batch']} | whole invoke | {h['one_thread']} | pool job: "
                      f"{h['pool_job']} | | {h['pool_job'] / h['one_thread']:.0%} |")
        else:
            md.append(f"| {h['ticket']} | {h['batch']} | {h['node']} | {h['one_thread']} | {h['share0']} | "
                      f"{h['share1']} | {max(h['share0'], h['share1']) / h['one_thread']:.0%} |")
    ph = r["pool_handoff_tsc_cycles"]
    md += ["", "## Pool hand-off (benchmarks/delegate_pool_handoff.c, pool.c as built)", ""]
    if ph is None:
        md.append("Not run: needs x86-64 and gcc.")
    else:
        md += ["TSC cycles per `edge_pool_run` on 2 threads: back to back (the worker polling; best of 5 x 100000)",
               "and spaced by ~5000 cycles of work on the caller (`_spaced`; median of 2000); `line_round_trip`:",
               "one cache line to the other thread and an answer back (best of 5 x 10000), the floor under every",
               "hand-off and barrier, and what each op's inputs cost when the other thread wrote them:", "",
               "| job | cycles |", "|---|---|"]
        md += [f"| {k} | {v:.0f} |" for k, v in ph.items()]
    bl = r["block_loop_tsc_cycles_per_block"]
    md += ["", "## Hot-loop cost of one stored int8 16x4 block (benchmarks/delegate_block_loop.c)", ""]
    if bl is None:
        md.append("Not run: needs AVX-512 VNNI and gcc.")
    else:
        md += ["TSC cycles per block, best of 20000 runs over 400 random blocks:", "",
               "| variant | cycles per block |", "|---|---|"]
        md += [f"| {k} | {v:.2f} |" for k, v in bl.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), r)
    atomic_write_text(out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
