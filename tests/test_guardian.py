"""The call's guardian shares no memory with the function's process, and
what the caller does around a call (its threads, its SIGCHLD handling, its
own forked children) loses no result; in every context."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import alive, kill_quietly, read_pids, wait_dead
from guardian_funcs import (
    add,
    glibc_and_kernel_cpus,
    memory_sharers_and_guardian,
    nap,
    repeat_the_call_process_steps,
    start_sleeper_then_die_like_the_oom_killer,
)

import pynisher
from pynisher import Pynisher, Status, _core, _forkserver


def test_no_process_shares_the_functions_memory(context: str) -> None:
    sharers, guardian, comm = Pynisher(memory_sharers_and_guardian, context=context)()
    assert sharers == [], f"processes {sharers} share the function's memory"
    assert comm == "pynisher-guard"
    assert not alive(guardian) or wait_dead(guardian, 2.0)


def test_the_guardian_survives_what_kills_every_sharer_of_the_memory(
    context: str, tmp_path: Path
) -> None:
    # The kernel's OOM killer kills every process that shares the victim's
    # memory. The guardian shares none, so it lives on and kills the tree.
    pids = tmp_path / "pids"
    result = Pynisher(
        start_sleeper_then_die_like_the_oom_killer, context=context, wall_time=20
    ).run(pids)
    (sleeper,) = read_pids(pids, 1)
    try:
        assert result.status is Status.CRASHED, result
        assert "SIGKILL" in result.detail, result
        assert wait_dead(sleeper, 2.0), "the sleep outlived the call"
    finally:
        kill_quietly(sleeper)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_glibc_knows_the_cpu_it_runs_on(context: str) -> None:
    # glibc's sched_getcpu reads the rseq area the kernel updates; the
    # function's process must have its own registration.
    seen = Pynisher(glibc_and_kernel_cpus, context=context)()
    wrong = [(cpu, glibc, kernel) for cpu, glibc, kernel in seen if glibc != kernel]
    assert not wrong, f"(pinned, sched_getcpu, getcpu): {wrong}"
    assert all(kernel == cpu for cpu, _, kernel in seen), seen


def test_child_split_is_refused_outside_a_call_process() -> None:
    with pytest.raises(pynisher.PynisherException, match="not a call's own process"):
        _core.child_split(os.getppid(), True, 0)


def test_the_steps_of_a_call_process_are_refused_out_of_order() -> None:
    # Nothing has split off in the caller: every later step is refused, and
    # child_exit does not end the caller.
    with pytest.raises(pynisher.PynisherException, match="child_apply_limits: out of order"):
        _core.child_apply_limits(_core.Limits(cpu_time=1000))
    with pytest.raises(pynisher.PynisherException, match="ready: out of order"):
        _core.ChildChannel(-1, -1).ready(0.0, 0.0)
    with pytest.raises(pynisher.PynisherException, match="child_exit: out of order"):
        _core.child_exit(True)


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_call_process_takes_each_step_once(context: str) -> None:
    said = Pynisher(repeat_the_call_process_steps, context=context)()
    assert said == [
        "child_split: out of order: the guardian has already split off in this process",
        "child_apply_limits: out of order: the limits already apply",
        "ready: out of order: start-up is already over",
    ]


@pytest.fixture
def sigchld_ignored() -> Iterator[None]:
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_caller_that_ignores_sigchld_gets_its_results(
    context: str, sigchld_ignored: None
) -> None:
    for i in range(5):
        result = Pynisher(add, context=context).run(i, 1)
        assert result.status is Status.OK, result
        assert result.value == i + 1
        assert result.wall_time > 0 and result.peak_memory > 0, result


def test_a_caller_that_reaps_with_a_handler_gets_its_results(context: str) -> None:
    def reap_all(signum: int, frame: object) -> None:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass

    previous = signal.signal(signal.SIGCHLD, reap_all)
    try:
        for _ in range(40):
            result = Pynisher(nap, context=context).run(0.0)
            assert result.status is Status.OK, result
            assert result.value == "rested"
            assert result.cpu_time >= 0 and result.peak_memory > 0, result
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_a_caller_with_a_reaping_thread_gets_its_results(context: str) -> None:
    stop = threading.Event()

    def reap_forever() -> None:
        while not stop.is_set():
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.0005)

    reaper = threading.Thread(target=reap_forever, daemon=True)
    reaper.start()
    try:
        for i in range(20):
            result = Pynisher(add, context=context).run(i, 2)
            assert result.status is Status.OK, result
            assert result.value == i + 2
            assert result.peak_memory > 0, result
    finally:
        stop.set()
        reaper.join()


def test_a_limit_still_applies_when_sigchld_is_ignored(context: str, sigchld_ignored: None) -> None:
    result = Pynisher(nap, context=context, wall_time=0.5).run(30)
    assert result.status is Status.WALL_TIME, result


FORKED_CHILD_EXITS = """
import os, sys
sys.path.insert(0, {tests!r})
from guardian_funcs import add
from pynisher import Pynisher
from pynisher import _forkserver

assert Pynisher(add, context="forkserver")(1, 2) == 3
(server,) = _forkserver._servers.values()
pid = os.fork()
if pid == 0:
    # A normal exit: the interpreter shuts down and drops every object the
    # child inherited, the forkserver's handle included.
    sys.exit(0)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
alive = server.is_alive()
value = Pynisher(add, context="forkserver")(2, 3)
(after,) = _forkserver._servers.values()
print(alive, value, after.pid == server.pid)
"""


def test_a_forked_child_that_exits_normally_leaves_the_forkserver_alone() -> None:
    script = FORKED_CHILD_EXITS.format(tests=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "5", "True"], done.stdout


def test_the_forkserver_outlives_the_thread_that_started_it() -> None:
    # A new server, started from a thread that ends while another thread's
    # call is in flight: the parent-death signal belongs to the thread.
    with _forkserver._lock:
        _forkserver._servers.clear()
    started = threading.Event()
    finish = threading.Event()

    def first_call() -> None:
        assert Pynisher(add, context="forkserver")(1, 1) == 2
        started.set()
        finish.wait()

    starter = threading.Thread(target=first_call)
    starter.start()
    assert started.wait(30)
    results: list[pynisher.Result] = []
    caller = threading.Thread(
        target=lambda: results.append(Pynisher(nap, context="forkserver").run(1.0))
    )
    caller.start()
    time.sleep(0.3)
    finish.set()
    starter.join()
    caller.join()
    (result,) = results
    assert result.status is Status.OK, result
    assert result.value == "rested"


def test_signals_in_the_caller_do_not_fail_forkserver_calls() -> None:
    # A profiler's timer: a signal (with a Python handler) every millisecond
    # interrupts every system call the caller makes.
    ticks = [0]

    def tick(signum: int, frame: object) -> None:
        ticks[0] += 1

    previous = signal.signal(signal.SIGALRM, tick)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        for i in range(20):
            result = Pynisher(add, context="forkserver").run(i, 3)
            assert result.status is Status.OK, result
            assert result.value == i + 3
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ticks[0] > 0
