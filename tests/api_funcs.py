"""Functions that test_api.py runs in limited children, in every context.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps its start-up short.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from typing import Callable, Optional

from pynisher import limit

MB = 1 << 20


def double(x: int) -> int:
    return 2 * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def busy_then_done(seconds: float) -> str:
    busy(seconds)
    return "done"


def allocate(mb: int) -> int:
    return len(bytearray(mb * MB))


def fail(message: str) -> None:
    raise KeyError(message)


def own_comm() -> str:
    with open("/proc/self/comm") as handle:
        return handle.read().rstrip("\n")


def prints(text: str) -> str:
    print(text, end="")
    print(" and stderr", end="", file=sys.stderr)
    return "returned"


def prints_then_fails(text: str) -> None:
    print(text, end="")
    raise KeyError(text)


def prints_then_sleeps(text: str) -> None:
    print(text, flush=True)
    time.sleep(60)


def prints_to_both_then_exits(lines: int) -> None:
    """Alternates complete lines on stdout and stderr, then leaves without a
    result or any flush of its own."""
    for i in range(lines):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)
    print("not a complete line", end="")
    os._exit(5)


def prints_megabytes(mb: int) -> str:
    """Prints ``mb`` MB in lines of 1 MB (the last character of each line
    is not ASCII), then returns."""
    line = "x" * (MB - 3) + "\u00e9\n"  # 1 MB in UTF-8
    for _ in range(mb):
        sys.stdout.write(line)
    return "returned"


def prints_with_a_forked_child(lines: int) -> str:
    """Prints ``lines`` lines, and a forked child prints as many at the same
    time through the same captured stream."""
    pid = os.fork()
    who = "child" if pid == 0 else "parent"
    for i in range(lines):
        print(f"{who} {i}")
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return "returned"


# Decorated at module level, one per context, so that each pickles by
# reference (by module and name) and calls itself by its name.


@limit(wall_time=5, context="fork")
def fork_limited_pids(depth: int) -> list[int]:
    if depth == 0:
        return [os.getpid()]
    return [os.getpid(), *fork_limited_pids(depth - 1)]


@limit(wall_time=5, context="spawn")
def spawn_limited_pids(depth: int) -> list[int]:
    if depth == 0:
        return [os.getpid()]
    return [os.getpid(), *spawn_limited_pids(depth - 1)]


@limit(wall_time=5, context="forkserver")
def forkserver_limited_pids(depth: int) -> list[int]:
    if depth == 0:
        return [os.getpid()]
    return [os.getpid(), *forkserver_limited_pids(depth - 1)]


LIMITED_PIDS = {
    "fork": fork_limited_pids,
    "spawn": spawn_limited_pids,
    "forkserver": forkserver_limited_pids,
}


def abort_with_report(dump: str) -> None:
    """Aborts (SIGABRT). faulthandler's report of the crash goes to the file
    ``dump``, for the test to check, not to the terminal of the test run."""
    faulthandler.enable(file=open(dump, "w"))  # kept open: written at the crash
    os.abort()


def make_limited_sleeper(wall_time: float, context: str) -> Callable[..., float]:
    """A factory of limited functions: each it makes has the same module and
    ``__qualname__`` (``make_limited_sleeper.<locals>.sleep_or_call``)."""

    @limit(wall_time=wall_time, context=context)
    def sleep_or_call(seconds: float, inner: Optional[Callable[[float], float]] = None) -> float:
        if inner is not None:
            return inner(seconds)
        time.sleep(seconds)
        return seconds

    return sleep_or_call
