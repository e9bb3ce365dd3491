"""Functions that the executor, asyncio and 0.6-shim tests run in limited children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def interval(seconds: float) -> tuple[float, float]:
    """Sleeps and returns when it started and ended (wall clock)."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time()


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes << 20))


class Boom(Exception):
    pass


def boom(message: str) -> None:
    raise Boom(message)


def crash() -> None:
    """Dies by a signal without a result (SIGKILL: no core dump, no faulthandler output)."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def append_line(path: Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text + "\n")


def pids_in(path: Path, count: int, timeout: float = 10.0) -> list[int]:
    """Waits until ``path`` holds ``count`` pids and returns them."""
    until = time.monotonic() + timeout
    while True:
        try:
            words = Path(path).read_text().split()
        except FileNotFoundError:
            words = []
        if len(words) >= count:
            return [int(word) for word in words[:count]]
        if time.monotonic() > until:
            raise AssertionError(f"{path} did not get {count} pids within {timeout} s: {words}")
        time.sleep(0.01)


#: How many pids `spawn_tree` writes.
TREE_SIZE = 3


def spawn_tree(path: Path, seconds: float = 60) -> None:
    """Starts a process tree and sleeps: a plain child (``sleep``), and a
    grandchild that left the session by ``setsid`` and a double fork. Writes
    the pids of the grandchild, the child and itself to ``path``."""
    child = subprocess.Popen(["sleep", str(seconds)])
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            append_line(path, str(os.getpid()))
            time.sleep(seconds)
        os._exit(0)
    os.waitpid(middle, 0)
    pids_in(path, 1)
    append_line(path, str(child.pid))
    append_line(path, str(os.getpid()))
    time.sleep(seconds)


def mark_then_sleep(path: Path, seconds: float) -> float:
    """Records that it ran (its pid), then sleeps."""
    append_line(path, str(os.getpid()))
    time.sleep(seconds)
    return seconds
