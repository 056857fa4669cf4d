"""The delegate's thread pool keeps its worker off the caller's CPU, and takes jobs from two callers.

Linux puts a new thread on its creator's CPU, and can wake the caller onto its worker's CPU; it moves
one of them away only milliseconds later. Until then the two shares of every job take turns on one
CPU, many times slower than one thread, and those are the jobs the delegate's thread trials time,
so it kept one thread for good.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import converters.delegate as cd

SRC = Path(cd.__file__).resolve().parent / "src"
HERE = Path(__file__).resolve().parent


def _build(tmp_path_factory, program: str, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    exe = tmp_path_factory.mktemp("pool") / program
    proc = subprocess.run([gcc, "-std=gnu11", "-O2", "-Wall", "-Werror", *flags, f"-I{SRC}",
                           str(HERE / f"{program}.c"), str(SRC / "pool.c"), "-o", str(exe), "-lpthread"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


@pytest.fixture(scope="module")
def placement(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "delegate_pool_placement")


def _lines(exe: Path, cpus: set[int] | None = None) -> list[list[str]]:
    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, preexec_fn=pin)
    assert proc.returncode == 0, proc.stderr
    return [line.split() for line in proc.stdout.splitlines()]


def _rounds(exe: Path, cpus: set[int] | None = None) -> list[list[int]]:
    return [[int(v) for v in line] for line in _lines(exe, cpus) if line[0] != "moved"]


def _moved(exe: Path) -> list[list[int]]:
    return [[int(v) for v in line[1:]] for line in _lines(exe) if line[0] == "moved"]


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


def test_a_worker_found_on_the_callers_cpu_is_moved_off_it_after_one_job(placement):
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip(f"needs 2 CPUs, this process may use {len(allowed)}")
    moved = _moved(placement)
    assert len(moved) == 15  # 5 rounds x 3 jobs, the caller pinned onto its worker's CPU each round
    for i in range(0, 15, 3):
        # in the first job of a round caller and worker usually share a CPU
        _, second, third = moved[i:i + 3]
        for job in (second, third):
            assert job[1] != job[2], moved  # the worker was moved off the caller's CPU
        assert third[3] == third[4] == len(allowed), moved  # and took the whole CPU set back


def test_two_callers_at_once_each_get_their_job_run_whole(tmp_path_factory):
    """Interpreters sharing one delegate share its pool. A job that finds the pool running
    another caller's job runs alone on its own thread; none may lose or repeat a share."""
    exe = _build(tmp_path_factory, "delegate_pool_callers")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"pool (\d+) alone (\d+) wrong (\d+)\n", proc.stdout)
    assert m, proc.stdout
    pooled, alone, wrong = (int(v) for v in m.groups())
    assert wrong == 0 and pooled + alone == 2 * 200000, proc.stdout
    assert pooled > 0 and alone > 0, proc.stdout  # both paths taken: the callers did collide


@pytest.mark.parametrize("spin", ["as built", "none"])
def test_jobs_posted_as_workers_fall_asleep_all_run_whole(tmp_path_factory, spin):
    """The caller posts a job with a plain store (no fence, so it does not wait for the workers'
    CPUs) and may miss a worker announcing its sleep right then; it must wake that worker while it
    waits. Jobs after random gaps, past the workers' spin and in between, on 2 and 3 threads; and
    with the spin compiled out, so that every worker announces its sleep as the next job is posted:
    a missed wake-up would hang (the timeout), a lost or repeated share shows as wrong."""
    flags = () if spin == "as built" else ("-DSPIN_PAUSE_ROUNDS=0", "-DSPIN_ROUNDS=0")
    exe = _build(tmp_path_factory, "delegate_pool_wakeups", *flags)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r"threads (\d) jobs (\d+) wrong (\d+)", proc.stdout)
    assert [(int(n), int(jobs), int(wrong)) for n, jobs, wrong in rows] == [(2, 1500, 0), (3, 1500, 0)], proc.stdout
