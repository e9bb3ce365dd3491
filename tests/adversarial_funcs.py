"""Functions that test_adversarial.py runs in limited children, in every
context: each misbehaves in its own way.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps its start-up short.
"""

from __future__ import annotations

import fcntl
import os
import resource
import signal
import threading
import time
from typing import Any


class Adder:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, x: int) -> int:
        return x + self.offset

    def times(self, x: int) -> int:
        return x * self.offset


def count_up() -> Any:
    yield 1


def recurse(depth: int) -> int:
    return recurse(depth + 1)


def raise_with_a_huge_message() -> None:
    raise ValueError("x" * (20 << 20))


def close_standard_streams() -> str:
    for fd in (0, 1, 2):
        os.close(fd)
    return "closed"


def close_every_fd() -> str:
    os.closerange(3, 1 << 16)
    return "unreachable result"


def fd_target(fd: int) -> str:
    """What ``fd`` refers to, such as ``pipe:[1234]``: the same in every
    process that shares the open file, whatever its number there."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def open_files() -> set[str]:
    """What this process's descriptors refer to (see `fd_target`)."""
    return {fd_target(int(name)) for name in os.listdir("/proc/self/fd")}


def write_garbage(callers_files: set[str]) -> None:
    """Writes junk to every writable descriptor the call opened for itself
    (the result channel), and to none that the caller has open too (a
    forked or spawned child inherits some of them); then exits without a
    result."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd_target(fd) in callers_files:
            continue
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                os.write(fd, b"\xff" * 64 + b"garbage" * 1000)
        except OSError:
            pass
    os._exit(0)


def leave_a_thread_running(daemon: bool) -> str:
    threading.Thread(target=time.sleep, args=(60,), daemon=daemon).start()
    return "left it running"


def raise_own_cpu_limit_and_burn() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    while True:
        pass


def lift_own_memory_limit() -> str:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except ValueError:
        return "refused"
    return "lifted"


def ignore_every_soft_stop() -> None:
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass


def write_to_a_full_pipe() -> None:
    _, write_end = os.pipe()
    while True:
        os.write(write_end, b"x" * 65536)


def fork_and_return() -> dict[str, int]:
    """Forks a child that exits with code 7, reaps it itself, and reports
    what it saw: nothing else (the call's guardian above all) may reap it."""
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    reaped, status = os.waitpid(pid, 0)
    return {"pid": os.getpid(), "child": pid, "reaped": reaped, "code": os.WEXITSTATUS(status)}


async def async_double(x: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return 2 * x


async def async_forever() -> None:
    import asyncio

    await asyncio.sleep(60)
