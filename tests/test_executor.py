"""`PynisherExecutor`: concurrent limited calls, each status, and cancelling
pending and running calls (a running call's whole tree must die)."""

from __future__ import annotations

import concurrent.futures
import time
import warnings
from pathlib import Path

import pytest
from conftest import alive, wait_dead
from limited_funcs import (
    TREE_SIZE,
    Boom,
    allocate,
    boom,
    busy,
    crash,
    interval,
    mark_then_sleep,
    pids_in,
    sleeper,
    spawn_tree,
    square,
)

import pynisher
from pynisher import (
    CpuTimeoutException,
    LimitedFuture,
    MemoryLimitException,
    Pynisher,
    PynisherException,
    PynisherExecutor,
    Status,
    WallTimeoutException,
    limit,
)


def assert_all_dead(pids: list[int]) -> None:
    still = [pid for pid in pids if alive(pid)]
    assert not still, f"still alive after cancel: {still}"


def test_submit_returns_a_future_with_the_value() -> None:
    with PynisherExecutor(max_workers=2) as executor:
        future = executor.submit(square, 7)
        assert isinstance(future, LimitedFuture)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=10) == 49
        outcome = future.outcome()
        assert outcome.status is Status.OK
        assert outcome.value == 49


def test_map_keeps_order() -> None:
    with PynisherExecutor(max_workers=3) as executor:
        assert list(executor.map(square, range(12))) == [x * x for x in range(12)]


def test_max_workers_bounds_concurrency() -> None:
    with PynisherExecutor(max_workers=2) as executor:
        assert executor.max_workers == 2
        spans = list(executor.map(interval, [0.4] * 4))
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2
    total = max(end for _, end in spans) - min(start for start, _ in spans)
    assert 0.75 < total < 2.0


def test_each_status() -> None:
    with PynisherExecutor(max_workers=4, wall_time=1, memory="100MB") as ex:
        futures = {
            Status.OK: ex.submit(square, 3),
            Status.ERROR: ex.submit(boom, "bad"),
            Status.WALL_TIME: ex.submit(sleeper, 10),
            # Its own limits: on a loaded machine a spin may not reach 0.5 s
            # of CPU time within the executor's 1 s of wall time.
            Status.CPU_TIME: ex.submit(Pynisher(busy, cpu_time=0.5, wall_time=30), 10),
            Status.MEMORY: ex.submit(allocate, 1000),
            Status.CRASHED: ex.submit(crash),
        }
        expected_errors = {
            Status.ERROR: Boom,
            Status.WALL_TIME: WallTimeoutException,
            Status.CPU_TIME: CpuTimeoutException,
            Status.MEMORY: MemoryLimitException,
            Status.CRASHED: PynisherException,
        }
        for status, future in futures.items():
            assert future.outcome(timeout=20).status is status
            if status is Status.OK:
                assert future.result() == 9
            else:
                error = future.exception()
                assert type(error) is expected_errors[status], (status, error)
                with pytest.raises(expected_errors[status]):
                    future.result()
    assert "SIGKILL" in str(futures[Status.CRASHED].exception())


def test_raises_false_gives_none() -> None:
    with PynisherExecutor(max_workers=1, wall_time=0.3, raises=False) as executor:
        future = executor.submit(sleeper, 5)
        assert future.result(timeout=10) is None
        assert future.outcome().status is Status.WALL_TIME


def test_pynisher_objects_and_decorated_functions_keep_their_limits() -> None:
    decorated = limit(wall_time=0.3)(sleeper)
    with PynisherExecutor(max_workers=2, wall_time=30) as executor:
        own = executor.submit(Pynisher(sleeper, wall_time=0.3), 5)
        deco = executor.submit(decorated, 5)
        plain = executor.submit(sleeper, 0.5)
        assert isinstance(own.exception(timeout=10), WallTimeoutException)
        assert isinstance(deco.exception(timeout=10), WallTimeoutException)
        assert plain.result(timeout=10) == 0.5


def test_bad_option_raises_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="memory"):
        PynisherExecutor(memory=-1)
    with pytest.raises(TypeError):
        PynisherExecutor(no_such_option=1)


CONTEXTS = [c for c in ("fork", "spawn", "forkserver") if pynisher.supports(f"context:{c}")]


@pytest.mark.parametrize("context", CONTEXTS)
def test_cancel_running_call_kills_its_tree(context: str, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    with PynisherExecutor(max_workers=1, wall_time=30, context=context) as executor:
        future = executor.submit(spawn_tree, pids_file)
        pids = pids_in(pids_file, TREE_SIZE)
        assert future.running()
        assert all(alive(pid) for pid in pids)
        started = time.monotonic()
        assert future.cancel() is True
        took = time.monotonic() - started
        # cancel() returns once every process of the tree is dead.
        assert_all_dead(pids)
        assert took < 5
        assert future.cancelled()
        assert future.done()
        with pytest.raises(concurrent.futures.CancelledError):
            future.result()
        with pytest.raises(concurrent.futures.CancelledError):
            future.outcome()
        assert future.cancel() is True  # again: still cancelled


def test_cancel_notifies_wait_as_completed_and_callbacks(tmp_path: Path) -> None:
    seen: list[bool] = []
    with PynisherExecutor(max_workers=2, wall_time=30) as executor:
        future = executor.submit(mark_then_sleep, tmp_path / "ran", 30)
        future.add_done_callback(lambda f: seen.append(f.cancelled()))
        other = executor.submit(square, 2)
        [pid] = pids_in(tmp_path / "ran", 1)
        waiter = concurrent.futures.ThreadPoolExecutor(1)
        waiting = waiter.submit(
            concurrent.futures.wait, [future], 10, concurrent.futures.ALL_COMPLETED
        )
        time.sleep(0.1)
        assert future.cancel()
        done, not_done = waiting.result(timeout=10)
        waiter.shutdown()
        assert future in done and not not_done
        assert list(concurrent.futures.as_completed([future, other], timeout=10))
        assert seen == [True]
        assert wait_dead(pid, 1)


def test_cancel_pending_call_never_runs(tmp_path: Path) -> None:
    with PynisherExecutor(max_workers=1, wall_time=30) as executor:
        first = executor.submit(mark_then_sleep, tmp_path / "first", 0.5)
        second = executor.submit(mark_then_sleep, tmp_path / "second", 0.1)
        pids_in(tmp_path / "first", 1)
        assert not second.running()
        assert second.cancel() is True
        assert first.result(timeout=10) == 0.5
    assert not (tmp_path / "second").exists()
    assert second.cancelled()


def test_cancel_finished_call_is_false() -> None:
    with PynisherExecutor(max_workers=1) as executor:
        future = executor.submit(square, 5)
        assert future.result(timeout=10) == 25
        assert future.cancel() is False
        assert not future.cancelled()


@pytest.mark.slow
@pytest.mark.parametrize("context", CONTEXTS)
def test_cancel_right_after_submit_leaves_nothing_behind(context: str, tmp_path: Path) -> None:
    """Cancels at every moment of a call's start: whatever it reached, the
    future ends cancelled and no process of the call survives."""
    with PynisherExecutor(max_workers=2, wall_time=30, context=context) as executor:
        for round_ in range(20):
            marks = tmp_path / f"ran-{round_}"
            future = executor.submit(mark_then_sleep, marks, 30)
            time.sleep(round_ * (0.0005 if context == "fork" else 0.005))
            cancelled = future.cancel()
            assert cancelled and future.cancelled()
            # The function may have been killed before, while or after it
            # wrote its pid.
            words = marks.read_text().split() if marks.exists() else []
            for pid in words:
                assert not alive(int(pid))


def test_leaving_with_block_on_error_cancels_running_calls(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="stop"):
        with PynisherExecutor(max_workers=1, wall_time=30) as executor:
            future = executor.submit(spawn_tree, pids_file)
            pids = pids_in(pids_file, TREE_SIZE)
            raise RuntimeError("stop")
    assert time.monotonic() - started < 10
    assert future.cancelled()
    assert_all_dead(pids)


def test_shutdown_cancel_futures_kills_running_calls(tmp_path: Path) -> None:
    executor = PynisherExecutor(max_workers=1, wall_time=30)
    running = executor.submit(mark_then_sleep, tmp_path / "a", 30)
    pending = executor.submit(mark_then_sleep, tmp_path / "b", 30)
    [pid] = pids_in(tmp_path / "a", 1)
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.cancelled() and pending.cancelled()
    assert not alive(pid)
    assert not (tmp_path / "b").exists()
    with pytest.raises(RuntimeError):
        executor.submit(square, 1)


def test_map_timeout_cancels_the_running_calls(tmp_path: Path) -> None:
    with PynisherExecutor(max_workers=2, wall_time=30) as executor:
        results = executor.map(
            mark_then_sleep, [tmp_path / "a", tmp_path / "b"], [30, 30], timeout=1
        )
        pids_a = pids_in(tmp_path / "a", 1)
        pids_b = pids_in(tmp_path / "b", 1)
        with pytest.raises(concurrent.futures.TimeoutError):
            list(results)
        assert_all_dead(pids_a + pids_b)


def test_calls_from_many_threads_are_independent() -> None:
    with PynisherExecutor(max_workers=4, wall_time=0.5) as executor:
        futures = [executor.submit(sleeper, 5 if i % 2 else 0.01) for i in range(8)]
        for i, future in enumerate(futures):
            if i % 2:
                assert isinstance(future.exception(timeout=10), WallTimeoutException)
            else:
                assert future.result(timeout=10) == 0.01


def test_exported() -> None:
    assert pynisher.PynisherExecutor is PynisherExecutor
    assert "PynisherExecutor" in pynisher.__all__
    assert "LimitedFuture" in pynisher.__all__


def test_option_warnings_are_given_once_at_construction() -> None:
    with pytest.warns(UserWarning, match="unit") as record:
        executor = PynisherExecutor(max_workers=1, memory=1000)
    assert len(record) == 1
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with executor:
            assert executor.submit(square, 2).result(timeout=10) == 4
