"""Functions that misbehave: odd callables, deep recursion, closed or abused
file descriptors, threads left running, rlimit and signal tampering, and
writes that block forever. Each one gets a clear outcome; nothing hangs; in
every context. The functions are in adversarial_funcs.py."""

from __future__ import annotations

import functools
import os
import signal
import time
from typing import Any

import pytest
from adversarial_funcs import (
    Adder,
    async_double,
    async_forever,
    close_every_fd,
    close_standard_streams,
    count_up,
    fork_and_return,
    ignore_every_soft_stop,
    leave_a_thread_running,
    lift_own_memory_limit,
    open_files,
    raise_own_cpu_limit_and_burn,
    raise_with_a_huge_message,
    recurse,
    write_garbage,
    write_to_a_full_pipe,
)
from conftest import START_UP, contexts_with_bugs

from pynisher import Pynisher, PynisherException, Status

MARGIN = 1.0


@pytest.mark.parametrize(
    ("func", "args", "expected"),
    [
        (Adder(10), (1,), 11),
        (Adder(3).times, (4,), 12),
        (sum, ([1, 2, 3],), 6),
        (functools.partial(pow, 2), (5,), 32),
        (functools.partial(Adder(1).times, 7), (), 7),
        (lambda: "lambda", (), "lambda"),
    ],
    ids=["callable-object", "bound-method", "builtin", "partial", "partial-method", "lambda"],
)
def test_every_kind_of_callable_runs(
    func: Any, args: tuple[Any, ...], expected: Any, context: str
) -> None:
    assert Pynisher(func, context=context)(*args) == expected


def test_a_generator_function_gives_a_clear_error(context: str) -> None:
    # It returns a generator, which cannot cross to the caller.
    with pytest.raises(PynisherException, match="generator"):
        Pynisher(count_up, context=context)()


def test_a_recursion_error_travels_back(context: str) -> None:
    outcome = Pynisher(recurse, context=context).run(0)
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is RecursionError
    assert outcome.traceback is not None and "recurse" in outcome.traceback


def test_an_exception_with_a_20_mb_message_travels_back(context: str) -> None:
    outcome = Pynisher(raise_with_a_huge_message, context=context).run()
    assert type(outcome.error) is ValueError
    assert len(outcome.error.args[0]) == 20 << 20


def test_closing_fds_0_to_2_does_not_stop_the_result(context: str) -> None:
    assert Pynisher(close_standard_streams, context=context)() == "closed"


@pytest.mark.parametrize(
    "context",
    contexts_with_bugs(),
)
def test_closing_the_result_channel_is_a_clear_crash(context: str) -> None:
    start = time.monotonic()
    outcome = Pynisher(close_every_fd, wall_time=10, context=context).run()
    assert time.monotonic() - start < 5 + START_UP[context]
    assert outcome.status is Status.CRASHED
    assert type(outcome.error) is PynisherException
    assert "could not send its result" in str(outcome.error)


def test_garbage_on_the_result_channel_is_a_clear_error(context: str) -> None:
    callers_files = open_files()
    start = time.monotonic()
    outcome = Pynisher(write_garbage, wall_time=10, context=context).run(callers_files)
    assert time.monotonic() - start < 5 + START_UP[context]
    assert outcome.status is Status.CRASHED
    assert type(outcome.error) is PynisherException
    assert "garbage on the result channel" in str(outcome.error)


@pytest.mark.parametrize("daemon", [False, True], ids=["thread", "daemon-thread"])
def test_a_thread_left_running_does_not_delay_the_result(daemon: bool, context: str) -> None:
    start = time.monotonic()
    assert Pynisher(leave_a_thread_running, context=context)(daemon) == "left it running"
    assert time.monotonic() - start < 5 + START_UP[context]


def test_raising_the_own_rlimit_does_not_escape_the_cpu_limit(context: str) -> None:
    start = time.monotonic()
    outcome = Pynisher(
        raise_own_cpu_limit_and_burn, cpu_time=0.3, grace_period=0.2, context=context
    ).run()
    assert outcome.status is Status.CPU_TIME
    assert time.monotonic() - start < 0.3 + 0.2 + 2 * MARGIN + START_UP[context]


def test_the_memory_limit_cannot_be_lifted_by_the_function(context: str) -> None:
    assert Pynisher(lift_own_memory_limit, memory="200MB", context=context)() == "refused"


def test_handlers_for_every_soft_signal_do_not_escape_the_wall_limit(context: str) -> None:
    wall = 0.3
    start = time.monotonic()
    outcome = Pynisher(
        ignore_every_soft_stop, wall_time=wall, grace_period=0.3, context=context
    ).run()
    assert outcome.status is Status.WALL_TIME
    assert outcome.signal == signal.SIGKILL
    assert time.monotonic() - start < wall + 0.3 + MARGIN + START_UP[context]


def test_a_function_blocked_in_a_write_is_stopped(context: str) -> None:
    start = time.monotonic()
    outcome = Pynisher(write_to_a_full_pipe, wall_time=0.3, context=context).run()
    assert outcome.status is Status.WALL_TIME
    assert time.monotonic() - start < 0.3 + MARGIN + START_UP[context]


def test_a_function_that_forks_and_reaps_returns_normally(context: str) -> None:
    seen = Pynisher(fork_and_return, context=context)()
    # The function reaped its own child and saw its exit code.
    assert seen["reaped"] == seen["child"]
    assert seen["code"] == 7
    assert seen["pid"] not in (os.getpid(), seen["child"])


def test_a_coroutine_function_is_awaited_in_the_child(context: str) -> None:
    assert Pynisher(async_double, context=context)(21) == 42
    outcome = Pynisher(async_forever, wall_time=0.2, context=context).run()
    assert outcome.status is Status.WALL_TIME
