"""Resume after ``kill -9`` and tf.distribute, each in real subprocesses.

A search killed mid-level and started again must finish with exactly the summary of an
uninterrupted search with the same seed (timings aside): every level is computed only from files
on disk and training is deterministic (op determinism, fixed data order, fresh optimizer state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edge_lottery.search import TIMING_FIELDS

RUNNER = textwrap.dedent(
    """
    import sys
    import edge_lottery
    from edge_lottery.search import LotteryTicketSearch

    LotteryTicketSearch("lenet_300_100", "digits", work_dir=sys.argv[1], levels=2, epochs=2, rewind_step=7,
                        controls=("random_prune",), jit_compile=False, steps_per_execution=10).run()
    """
)


def _run(work: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(work)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _comparable(summary: dict) -> dict:
    rows = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in summary["levels"]]
    return {**summary, "levels": rows, "versions": None}


def _kill_when(proc: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_search_resumes_to_the_same_summary(tmp_path):
    # The uninterrupted run and the one to be killed start together (two cores, two processes).
    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    p_fresh = _run(fresh)
    # First SIGKILL while level 1 is being written (its masks exist, its marker may not yet),
    _kill_when(_run(killed), killed / "level_1" / "masks.npz")
    # then, after a restart, as soon as level 2 of the ticket branch starts training.
    _kill_when(_run(killed), killed / "tensorboard" / "ticket" / "level_2")
    assert (killed / "level_1" / "COMPLETE").exists()
    assert not (killed / "level_2" / "COMPLETE").exists()
    level1 = (killed / "level_1" / "weights.npz").read_bytes()

    p_resume = _run(killed)
    for p in (p_fresh, p_resume):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    assert (killed / "level_1" / "weights.npz").read_bytes() == level1  # finished levels untouched
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((fresh / "summary.json").read_text())
    assert a["finished"] and b["finished"]
    assert _comparable(a) == _comparable(b)
    for level in (1, 2):
        for sub in (f"level_{level}", f"controls/random_prune/level_{level}"):
            for name in ("masks.npz", "weights.npz"):
                assert (killed / sub / name).read_bytes() == (fresh / sub / name).read_bytes(), (sub, name)
    assert (killed / "rewind_point.npz").read_bytes() == (fresh / "rewind_point.npz").read_bytes()


DROPOUT_RUNNER = textwrap.dedent(
    """
    import sys
    import edge_lottery
    from edge_lottery.search import LotteryTicketSearch

    LotteryTicketSearch("ds_cnn", "digits", work_dir=sys.argv[1], levels=2, epochs=1, controls=("reinit",),
                        jit_compile=False, steps_per_execution=10).run()
    """
)


@pytest.mark.slow
def test_resume_is_exact_for_a_model_with_dropout(tmp_path):
    """Dropout keeps random state in the traced train step: each run must start from a fresh one."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(work: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", DROPOUT_RUNNER, str(work)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    fresh, killed = tmp_path / "fresh", tmp_path / "killed"
    p_fresh = run(fresh)
    _kill_when(run(killed), killed / "tensorboard" / "ticket" / "level_2")
    p_resume = run(killed)
    for p in (p_fresh, p_resume):
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    for sub in ("level_1", "level_2", "controls/reinit/level_1", "controls/reinit/level_2"):
        assert (killed / sub / "weights.npz").read_bytes() == (fresh / sub / "weights.npz").read_bytes(), sub


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import edge_lottery
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from edge_lottery.search import LotteryTicketSearch

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():  # no strategy= argument: the search picks up the enclosing one
        lts = LotteryTicketSearch("lenet_300_100", "digits", work_dir=sys.argv[1], levels=1, epochs=2,
                                  steps_per_execution=5)
    assert lts.strategy is strategy
    result = lts.run()
    ticket = result.ticket(1)
    model = ticket.model()
    zeros_ok = all(
        bool(np.all(model.get_layer(k.split("/")[0]).kernel.numpy()[m == 0] == 0)) for k, m in ticket.masks.items())
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "density": result.levels[1].density,
                      "dense_acc": result.levels[0].test_accuracy, "zeros_ok": zeros_ok}))
    """
)


def test_mirrored_strategy_two_logical_cpus_keeps_masks(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "mirrored")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["zeros_ok"] is True
    assert out["density"] == pytest.approx(0.802, abs=0.01)
    assert out["dense_acc"] > 0.5
    with np.load(tmp_path / "mirrored" / "level_1" / "masks.npz") as masks, \
            np.load(tmp_path / "mirrored" / "level_1" / "weights.npz") as weights:
        for key in masks.files:
            assert (weights[key][masks[key] == 0] == 0).all()
            assert 0 < masks[key].mean() < 1
