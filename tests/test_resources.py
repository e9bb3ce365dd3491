"""Many calls leave the caller as it was: no open fds, threads or zombie
children accumulate, whatever the status of each call; in every context."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import open_fds, os_threads, thread_count, zombie_children
from resources_funcs import exits, fails, identity, sleeps

from pynisher import Pynisher, Status

# A spawned child is a fresh interpreter (about 0.1 s each): fewer calls there.
CALLS = {"fork": 500, "forkserver": 500, "spawn": 100}


def counts() -> tuple[int, int, int, int]:
    return open_fds(), os_threads(), thread_count(), zombie_children()


@pytest.mark.slow
def test_many_calls_leave_no_fds_threads_or_zombies(context: str) -> None:
    limited: dict[Status, Pynisher[..., Any]] = {
        Status.OK: Pynisher(identity, wall_time=5, memory="1GB", context=context),
        Status.ERROR: Pynisher(fails, context=context),
        Status.CRASHED: Pynisher(exits, context=context),
        Status.WALL_TIME: Pynisher(sleeps, wall_time=0.02, grace_period=0, context=context),
    }
    # Warm up once per kind, so that lazily created state (such as the
    # forkserver) is not counted.
    for status, each in limited.items():
        assert each.run(0).status is status
    before = counts()
    calls = CALLS[context]
    seen: dict[Status, int] = dict.fromkeys(limited, 0)
    for i in range(calls):
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
    assert seen[Status.WALL_TIME] == calls // 50 and seen[Status.CRASHED] == calls // 10
    assert after == before, "fds, OS threads, Python threads, zombies: before vs after"
