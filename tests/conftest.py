"""Shared helpers for the pytest suite: the ``context`` fixture, process
liveness and resource counts."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from limited_funcs import pids_in

import pynisher

#: Extra seconds a bound on the caller's elapsed time allows for start-up in
#: each context, on a loaded machine: spawn starts a fresh interpreter that
#: imports pynisher and the function's module, a forkserver child imports the
#: function's module; the limits themselves only start after that. (The
#: functions live in small ``*_funcs`` modules, not in the test modules, so
#: that this is about 0.1 s in spawn and 0.01 s in forkserver, not 0.3 s.)
START_UP = {"fork": 0.0, "forkserver": 1.0, "spawn": 1.5}

# Every interpreter the tests start (callers, spawned children, forkservers)
# buffers its stdout as a user's program does: in blocks when it is a pipe or
# a file, so that text not flushed yet sits in the memory a forked child
# inherits. Some machines set PYTHONUNBUFFERED for everything they run (the
# CI machines do), which hid exactly that.
os.environ.pop("PYTHONUNBUFFERED", None)


@pytest.fixture(params=pynisher.contexts, ids=list(pynisher.contexts))
def context(request: pytest.FixtureRequest) -> str:
    """Each start method in turn: a test that takes it runs once per context."""
    method: str = request.param
    return method


def contexts_with_bugs(**bugs: str) -> list[Any]:
    """``pynisher.contexts`` for ``@pytest.mark.parametrize("context", ...)``, in
    place of the fixture, where a context has a known bug: that one is a strict
    xfail with the bug as its reason (``spawn="BUG: ..."``)."""
    unknown = set(bugs) - set(pynisher.contexts)
    assert not unknown, f"not a context: {unknown}"
    return [
        pytest.param(
            method,
            id=method,
            marks=[pytest.mark.xfail(strict=True, reason=bugs[method])] if method in bugs else [],
        )
        for method in pynisher.contexts
    ]


def alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(")") + 2]
    return state not in "ZX"


def wait_dead(pid: int, timeout: float) -> bool:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if not alive(pid):
            return True
        time.sleep(0.01)
    return not alive(pid)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def zombie_children() -> int:
    me = os.getpid()
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            count += 1
    return count


def thread_count() -> int:
    return threading.active_count()


def os_threads() -> int:
    """Threads of this process as the kernel counts them (Python's and native ones)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def shared_memory_bytes() -> int:
    """The machine's shared memory (memfd and tmpfs pages) in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem in /proc/meminfo")


def kill_quietly(pid: int) -> None:
    """SIGKILL ``pid`` if it still exists; for cleaning up after a failed assertion."""
    try:
        os.kill(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def read_pids(path: Path, count: int, timeout: float = 5.0) -> list[int]:
    """Waits until ``path`` holds ``count`` whitespace-separated pids and returns them."""
    return pids_in(path, count, timeout)


def write_line(path: Path, text: str) -> None:
    """Appends one line to ``path`` and makes it visible at once (for another process)."""
    with open(path, "a") as handle:
        handle.write(text + "\n")


def start_caller(script: str) -> subprocess.Popen[str]:
    """Starts ``script`` in a fresh interpreter (the one running the tests), with
    stdout and stderr piped, as a caller of pynisher that a test can signal."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """The next line of ``proc``'s stdout; fails instead of hanging after ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no output from the caller within {timeout} s; stderr:\n{err}")
    line = proc.stdout.readline()
    if not line:
        _, err = proc.communicate()
        raise AssertionError(f"the caller ended early (code {proc.returncode}); stderr:\n{err}")
    return line.strip()
