"""Functions that test_tree.py runs in limited children, in every context:
each starts a process that must not outlive the call, and writes its pid to a
file before it returns or hangs, so the test can find it even after a kill.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps its start-up short.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def parent_of(pid: int) -> int:
    """The parent of ``pid``. A limited function's own parent is its call's
    guardian; the guardian's parent is the caller (or the forkserver)."""
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def write_line(path: Path, text: str) -> None:
    """Appends one line to ``path`` and makes it visible at once (for another process)."""
    with open(path, "a") as handle:
        handle.write(text + "\n")


def start_setsid_sleep(pids: Path) -> None:
    """A grandchild in its own session (and so its own process group)."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    write_line(pids, str(proc.pid))


def start_daemon(pids: Path) -> None:
    """The classic double fork: the daemon's parent exits, the daemon calls setsid."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.write(write_end, f"{os.getpid()}\n".encode())
                time.sleep(60)
        finally:
            os._exit(0)
    os.waitpid(first, 0)
    pid = os.read(read_end, 64).decode().strip()
    os.close(read_end)
    os.close(write_end)
    write_line(pids, pid)


def start_forked_sleeper(pids: Path) -> None:
    """A plain os.fork without exec: it holds every fd the child had."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    write_line(pids, str(pid))


def start_stopped_sleeper(pids: Path) -> None:
    """A grandchild in its own session, stopped by SIGSTOP: SIGTERM stays
    pending until it is continued."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    os.kill(proc.pid, signal.SIGSTOP)
    write_line(pids, str(proc.pid))


IGNORE_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring', flush=True)\n"
    "time.sleep(60)"
)


def start_sigterm_ignoring_sleeper(pids: Path) -> None:
    """A grandchild in its own session that ignores SIGTERM (and says so
    before its pid is written)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", IGNORE_SIGTERM], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ignoring\n"
    write_line(pids, str(proc.pid))


Starter = Callable[[Path], None]


def then_return(start: Starter, pids: Path) -> str:
    start(pids)
    return "done"


def then_hang(start: Starter, pids: Path) -> None:
    start(pids)
    time.sleep(60)


def then_raise(start: Starter, pids: Path) -> None:
    start(pids)
    raise ValueError("after starting a process")


def then_exit(start: Starter, pids: Path) -> None:
    """Starts the process and leaves at once without a result: no frame, no
    cleanup of its own, before any scan of the tree can have seen it."""
    start(pids)
    os._exit(3)


def then_segfault(start: Starter, pids: Path) -> None:
    start(pids)
    faulthandler.disable()  # no traceback on the test's stderr
    os.kill(os.getpid(), signal.SIGSEGV)


def bomb(pids: Path, depth: int) -> None:
    """Forks two children, each of which forks two more, ``depth`` levels
    down; every process writes its pid, leaves the session and sleeps."""
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                write_line(pids, str(os.getpid()))
                if depth > 0:
                    bomb(pids, depth - 1)
                os.setsid()
                time.sleep(60)
            finally:
                os._exit(0)


def run_bomb(pids: Path) -> None:
    bomb(pids, 3)  # 2 + 4 + 8 + 16 = 30 processes
    time.sleep(60)
