"""16 caller threads run limited calls at once, with every status mixed in:
each call comes back with its own status, value or error (never another
thread's), and the caller's fds, threads and zombie children are unchanged
afterwards.

The limited functions are defined here, at module level: spawn and forkserver
children import this module by name, so it imports nothing heavy at the top
(the conftest helpers are imported inside the tests).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Pynisher,
    PynisherException,
    Status,
    WallTimeoutException,
    contexts,
)

THREADS = 16

#: A backstop for calls that should end on their own long before it: 16
#: threads share two cores, and a spawned child first starts an interpreter.
BACKSTOP = 30.0

#: Seconds each test may take before its threads count as hung.
HANG = 120.0


def token(x: str) -> str:
    return f"ok:{x}"


def fail(x: str) -> None:
    raise ValueError(f"error:{x}")


def sleep_forever(x: str) -> None:
    time.sleep(60)


def spin(x: str) -> None:
    while True:
        pass


def allocate(x: str) -> int:
    return len(bytearray(1 << 30))


def exit_3(x: str) -> None:
    os._exit(3)


def kill_self(x: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


@dataclass(frozen=True)
class Kind:
    """One kind of call: the function, its limits and what must come back."""

    name: str
    func: Callable[[str], Any]
    limits: dict[str, Any]
    status: Status
    error: type[BaseException] | None


KINDS = [
    Kind("ok", token, {"wall_time": BACKSTOP}, Status.OK, None),
    Kind("error", fail, {"wall_time": BACKSTOP}, Status.ERROR, ValueError),
    Kind(
        "wall_time",
        sleep_forever,
        {"wall_time": 0.3, "grace_period": 0.5},
        Status.WALL_TIME,
        WallTimeoutException,
    ),
    Kind(
        "cpu_time",
        spin,
        {"cpu_time": 0.1, "wall_time": BACKSTOP},
        Status.CPU_TIME,
        CpuTimeoutException,
    ),
    Kind(
        "memory",
        allocate,
        {"memory": "64MB", "wall_time": BACKSTOP},
        Status.MEMORY,
        MemoryLimitException,
    ),
    Kind("exit_3", exit_3, {"wall_time": BACKSTOP}, Status.CRASHED, PynisherException),
    Kind("sigkill", kill_self, {"wall_time": BACKSTOP}, Status.CRASHED, PynisherException),
]


def check(kind: Kind, tag: str, limited: Pynisher[[str], Any]) -> str | None:
    """Runs one call; returns what was wrong with it, or None."""
    outcome = limited.run(tag)
    where = f"{kind.name} call {tag} ({limited.context})"
    if outcome.status is not kind.status:
        expected = kind.status.value
        return f"{where}: status {outcome.status.value}, expected {expected}: {outcome.detail}"
    if kind.error is None:
        if outcome.value != f"ok:{tag}":
            return f"{where}: value {outcome.value!r}"
        return None
    if not isinstance(outcome.error, kind.error):
        return f"{where}: error {outcome.error!r}, expected {kind.error.__name__}"
    if kind.name == "error" and str(outcome.error) != f"error:{tag}":
        return f"{where}: the error of another call came back: {outcome.error!r}"
    if kind.name == "exit_3" and outcome.exitcode != 3:
        return f"{where}: exit code {outcome.exitcode}"
    if kind.name == "sigkill" and outcome.signal != signal.SIGKILL:
        return f"{where}: signal {outcome.signal}"
    return None


def run_threads(context_of: Callable[[int], str], passes: int) -> tuple[list[str], int]:
    """Each of THREADS threads runs every kind ``passes`` times, in an order of
    its own, all threads starting together. Returns the problems and the
    number of calls."""
    barrier = threading.Barrier(THREADS)
    problems: list[str] = []
    calls = [0] * THREADS

    def worker(index: int) -> None:
        try:
            context = context_of(index)
            order = [kind for _ in range(passes) for kind in KINDS]
            random.Random(index).shuffle(order)
            limited = {
                kind.name: Pynisher(kind.func, context=context, **kind.limits) for kind in KINDS
            }
            barrier.wait(timeout=HANG)
            for n, kind in enumerate(order):
                problem = check(kind, f"{index}.{n}", limited[kind.name])
                calls[index] += 1
                if problem is not None:
                    problems.append(problem)
        except BaseException as why:  # reported, not lost in the thread
            problems.append(f"thread {index}: {type(why).__name__}: {why}")

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"caller-{i}", daemon=True)
        for i in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + HANG
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {HANG} s: {hung}; problems: {problems}"
    return problems, sum(calls)


def counts(settle_threads: int | None = None) -> dict[str, int]:
    """The caller's resource counts. With ``settle_threads``, first waits (up
    to a second) for the kernel's thread count to come down to it: a joined
    thread has finished its Python code, but its OS thread may still be
    exiting for a moment."""
    from conftest import open_fds, os_threads, thread_count, zombie_children

    until = time.monotonic() + 1.0
    while settle_threads is not None and os_threads() > settle_threads:
        if time.monotonic() > until:
            break
        time.sleep(0.01)
    return {
        "fds": open_fds(),
        "threads": thread_count(),
        "os_threads": os_threads(),
        "zombies": zombie_children(),
    }


def warm_up(context: str) -> None:
    """One call per context, so that state created once (the forkserver) is
    not counted as a leak."""
    assert Pynisher(token, context=context)("warm") == "ok:warm"


@pytest.mark.slow
def test_16_threads_of_mixed_calls_in_the_fork_context() -> None:
    warm_up("fork")
    before = counts()
    problems, calls = run_threads(lambda index: "fork", passes=2)
    after = counts(settle_threads=before["os_threads"])
    assert calls == THREADS * 2 * len(KINDS)
    assert not problems, "\n".join(problems)
    assert after == before, "fds, threads, zombies: before vs after"


@pytest.mark.slow
def test_16_threads_each_in_a_context_of_its_own() -> None:
    for context in contexts:
        warm_up(context)
    before = counts()
    problems, calls = run_threads(lambda index: contexts[index % len(contexts)], passes=1)
    after = counts(settle_threads=before["os_threads"])
    assert calls == THREADS * len(KINDS)
    assert not problems, "\n".join(problems)
    assert after == before, "fds, threads, zombies: before vs after"
