"""Many calls leave the caller as it was: no open fds, threads or zombie
children accumulate, whatever the status of each call."""

from __future__ import annotations

import os
import time
from typing import Any

from conftest import open_fds, os_threads, thread_count, zombie_children

from pynisher import Pynisher, Status


def identity(x: int) -> int:
    return x


def fails(x: int) -> None:
    raise ValueError(x)


def exits(x: int) -> None:
    os._exit(3)


def sleeps(x: int) -> None:
    time.sleep(10)


def counts() -> tuple[int, int, int, int]:
    return open_fds(), os_threads(), thread_count(), zombie_children()


def test_500_calls_leave_no_fds_threads_or_zombies() -> None:
    limited: dict[Status, Pynisher[..., Any]] = {
        Status.OK: Pynisher(identity, wall_time=5, memory="1GB"),
        Status.ERROR: Pynisher(fails),
        Status.CRASHED: Pynisher(exits),
        Status.WALL_TIME: Pynisher(sleeps, wall_time=0.02, grace_period=0),
    }
    # Warm up once per kind, so that lazily created state is not counted.
    for status, each in limited.items():
        assert each.run(0).status is status
    before = counts()
    seen: dict[Status, int] = dict.fromkeys(limited, 0)
    for i in range(500):
        # Mostly successful calls, with every other status mixed in.
        status = Status.OK
        if i % 10 == 1:
            status = Status.ERROR
        elif i % 10 == 2:
            status = Status.CRASHED
        elif i % 50 == 3:
            status = Status.WALL_TIME
        outcome = limited[status].run(i)
        assert outcome.status is status, (i, outcome.detail)
        seen[status] += 1
    after = counts()
    assert seen[Status.WALL_TIME] == 10 and seen[Status.CRASHED] == 50
    assert after == before, "fds, OS threads, Python threads, zombies: before vs after"
