"""The delegate's thread pool starts its worker on another CPU than the caller.

Linux puts a new thread on its creator's CPU and moves it only 20-60 ms later (seen on this 2-vCPU
VM); until then the two shares of every job take turns on one CPU, ~25x slower than one thread, and
those are the jobs the delegate's thread trials time, so it kept one thread for good.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import converters.delegate as cd

SRC = Path(cd.__file__).resolve().parent / "src"
PROGRAM = Path(__file__).resolve().parent / "delegate_pool_placement.c"


@pytest.fixture(scope="module")
def placement(tmp_path_factory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    exe = tmp_path_factory.mktemp("pool") / "placement"
    proc = subprocess.run([gcc, "-std=gnu11", "-O2", "-Wall", "-Werror", f"-I{SRC}", str(PROGRAM),
                           str(SRC / "pool.c"), "-o", str(exe), "-lpthread"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _rounds(exe: Path, cpus: set[int] | None = None) -> list[list[int]]:
    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, preexec_fn=pin)
    assert proc.returncode == 0, proc.stderr
    return [[int(v) for v in line.split()] for line in proc.stdout.splitlines()]


def test_first_job_runs_its_shares_on_two_cpus_and_the_worker_keeps_every_allowed_cpu(placement):
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip(f"needs 2 CPUs, this process may use {len(allowed)}")
    rounds = _rounds(placement)
    assert len(rounds) == 5
    for _, caller_cpu, worker_cpu, worker_cpus, allowed_cpus in rounds:
        assert caller_cpu != worker_cpu, rounds
        # started away from the caller, then given the process's whole CPU set back
        assert worker_cpus == allowed_cpus == len(allowed), rounds


def test_a_process_limited_to_one_cpu_still_runs_jobs(placement):
    cpu = min(os.sched_getaffinity(0))
    for _, caller_cpu, worker_cpu, worker_cpus, allowed_cpus in _rounds(placement, {cpu}):
        assert caller_cpu == worker_cpu == cpu
        assert worker_cpus == allowed_cpus == 1
