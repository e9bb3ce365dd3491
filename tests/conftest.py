"""Shared helpers for the pytest suite: process liveness and resource counts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


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
