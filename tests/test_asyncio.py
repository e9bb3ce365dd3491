"""`arun` and `arun_outcome`: limited calls awaited from asyncio; cancelling
the awaiting task kills the call's whole tree."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import alive
from limited_funcs import (
    TREE_SIZE,
    Boom,
    boom,
    mark_then_sleep,
    pids_in,
    sleeper,
    spawn_tree,
    square,
)

from pynisher import (
    Outcome,
    Pynisher,
    Status,
    WallTimeoutException,
    arun,
    arun_outcome,
    limit,
)


def test_arun_returns_the_value() -> None:
    assert asyncio.run(arun(Pynisher(square), 6)) == 36


def test_arun_raises_what_the_call_raises() -> None:
    async def main() -> None:
        with pytest.raises(WallTimeoutException):
            await arun(Pynisher(sleeper, wall_time=0.2), 5)
        with pytest.raises(Boom, match="bad"):
            await arun(Pynisher(boom), "bad")

    asyncio.run(main())


def test_arun_with_raises_false_gives_none() -> None:
    assert asyncio.run(arun(Pynisher(sleeper, wall_time=0.2, raises=False), 5)) is None


def test_arun_accepts_decorated_functions() -> None:
    decorated = limit(wall_time=5)(square)
    assert asyncio.run(arun(decorated, 4)) == 16


def test_arun_outcome() -> None:
    outcome = asyncio.run(arun_outcome(Pynisher(sleeper, wall_time=0.2), 5))
    assert isinstance(outcome, Outcome)
    assert outcome.status is Status.WALL_TIME
    assert isinstance(outcome.error, WallTimeoutException)


def test_plain_function_is_refused() -> None:
    with pytest.raises(TypeError, match="Pynisher"):
        asyncio.run(arun(square, 2))


def test_calls_run_concurrently_and_the_loop_stays_responsive() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> list[float]:
        tick = asyncio.create_task(ticker())
        limited = Pynisher(sleeper, wall_time=5)
        results = await asyncio.gather(*(arun(limited, 0.5) for _ in range(3)))
        tick.cancel()
        return results

    started = time.monotonic()
    assert asyncio.run(main()) == [0.5, 0.5, 0.5]
    assert time.monotonic() - started < 1.4
    assert ticks > 20


def test_cancelling_the_task_kills_the_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"

    async def main() -> tuple[list[int], float]:
        task = asyncio.create_task(arun(Pynisher(spawn_tree, wall_time=30), pids_file))
        pids = await asyncio.to_thread(pids_in, pids_file, TREE_SIZE)
        assert all(alive(pid) for pid in pids)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pids, time.monotonic() - started

    pids, took = asyncio.run(main())
    assert [pid for pid in pids if alive(pid)] == []
    assert took < 5


def test_wait_for_timeout_kills_the_tree(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                arun_outcome(Pynisher(spawn_tree, wall_time=30), pids_file), timeout=1.5
            )

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 6
    pids = pids_in(pids_file, TREE_SIZE)
    assert [pid for pid in pids if alive(pid)] == []


def test_cancel_before_the_call_starts(tmp_path: Path) -> None:
    """Cancelled while still queued for a thread: the function never runs."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        limited = Pynisher(sleeper, wall_time=5)
        first = asyncio.create_task(arun(limited, 0.5))
        marks = tmp_path / "ran"
        second = asyncio.create_task(arun(Pynisher(mark_then_sleep), marks, 0.1))
        await asyncio.sleep(0.1)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert await first == 0.5
        await asyncio.sleep(0.3)
        assert not marks.exists()

    asyncio.run(main())
