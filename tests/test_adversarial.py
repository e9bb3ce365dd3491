"""Functions that misbehave: odd callables, deep recursion, closed or abused
file descriptors, threads left running, rlimit and signal tampering, and
writes that block forever. Each one gets a clear outcome; nothing hangs."""

from __future__ import annotations

import fcntl
import functools
import os
import resource
import signal
import threading
import time
from typing import Any

import pytest

from pynisher import Pynisher, PynisherException, Status

MARGIN = 1.0


class Adder:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, x: int) -> int:
        return x + self.offset

    def times(self, x: int) -> int:
        return x * self.offset


def count_up() -> Any:
    yield 1


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
def test_every_kind_of_callable_runs(func: Any, args: tuple[Any, ...], expected: Any) -> None:
    assert Pynisher(func)(*args) == expected


def test_a_generator_function_gives_a_clear_error() -> None:
    # It returns a generator, which cannot cross to the caller.
    with pytest.raises(PynisherException, match="generator"):
        Pynisher(count_up)()


def recurse(depth: int) -> int:
    return recurse(depth + 1)


def test_a_recursion_error_travels_back() -> None:
    outcome = Pynisher(recurse).run(0)
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is RecursionError
    assert outcome.traceback is not None and "recurse" in outcome.traceback


def raise_with_a_huge_message() -> None:
    raise ValueError("x" * (20 << 20))


def test_an_exception_with_a_20_mb_message_travels_back() -> None:
    outcome = Pynisher(raise_with_a_huge_message).run()
    assert type(outcome.error) is ValueError
    assert len(outcome.error.args[0]) == 20 << 20


def close_standard_streams() -> str:
    for fd in (0, 1, 2):
        os.close(fd)
    return "closed"


def test_closing_fds_0_to_2_does_not_stop_the_result() -> None:
    assert Pynisher(close_standard_streams)() == "closed"


def close_every_fd() -> str:
    os.closerange(3, 1 << 16)
    return "unreachable result"


def test_closing_the_result_channel_is_a_clear_crash() -> None:
    start = time.monotonic()
    outcome = Pynisher(close_every_fd, wall_time=10).run()
    assert time.monotonic() - start < 5
    assert outcome.status is Status.CRASHED
    assert type(outcome.error) is PynisherException
    assert "could not send its result" in str(outcome.error)


def write_garbage(callers_fds: set[int]) -> None:
    """Writes junk to every writable descriptor the call opened for itself
    (the result channel), then exits without a result."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in callers_fds:
            continue
        try:
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                os.write(fd, b"\xff" * 64 + b"garbage" * 1000)
        except OSError:
            pass
    os._exit(0)


def test_garbage_on_the_result_channel_is_a_clear_error() -> None:
    callers_fds = {int(name) for name in os.listdir("/proc/self/fd")}
    start = time.monotonic()
    outcome = Pynisher(write_garbage, wall_time=10).run(callers_fds)
    assert time.monotonic() - start < 5
    assert outcome.status is Status.CRASHED
    assert type(outcome.error) is PynisherException
    assert "garbage on the result channel" in str(outcome.error)


def leave_a_thread_running(daemon: bool) -> str:
    threading.Thread(target=time.sleep, args=(60,), daemon=daemon).start()
    return "left it running"


@pytest.mark.parametrize("daemon", [False, True], ids=["thread", "daemon-thread"])
def test_a_thread_left_running_does_not_delay_the_result(daemon: bool) -> None:
    start = time.monotonic()
    assert Pynisher(leave_a_thread_running)(daemon) == "left it running"
    assert time.monotonic() - start < 5


def raise_own_cpu_limit_and_burn() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    while True:
        pass


def test_raising_the_own_rlimit_does_not_escape_the_cpu_limit() -> None:
    start = time.monotonic()
    outcome = Pynisher(raise_own_cpu_limit_and_burn, cpu_time=0.3, grace_period=0.2).run()
    assert outcome.status is Status.CPU_TIME
    assert time.monotonic() - start < 0.3 + 0.2 + 2 * MARGIN


def lift_own_memory_limit() -> str:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except ValueError:
        return "refused"
    return "lifted"


def test_the_memory_limit_cannot_be_lifted_by_the_function() -> None:
    assert Pynisher(lift_own_memory_limit, memory="200MB")() == "refused"


def ignore_every_soft_stop() -> None:
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        pass


def test_handlers_for_every_soft_signal_do_not_escape_the_wall_limit() -> None:
    start = time.monotonic()
    outcome = Pynisher(ignore_every_soft_stop, wall_time=0.3, grace_period=0.3).run()
    assert outcome.status is Status.WALL_TIME
    assert outcome.signal == signal.SIGKILL
    assert time.monotonic() - start < 0.3 + 0.3 + MARGIN


def write_to_a_full_pipe() -> None:
    _, write_end = os.pipe()
    while True:
        os.write(write_end, b"x" * 65536)


def test_a_function_blocked_in_a_write_is_stopped() -> None:
    start = time.monotonic()
    outcome = Pynisher(write_to_a_full_pipe, wall_time=0.3).run()
    assert outcome.status is Status.WALL_TIME
    assert time.monotonic() - start < 0.3 + MARGIN


def fork_and_return() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return os.getpid()


def test_a_function_that_forks_and_reaps_returns_normally() -> None:
    pid = Pynisher(fork_and_return)()
    assert pid != os.getpid()


async def async_double(x: int) -> int:
    import asyncio

    await asyncio.sleep(0.01)
    return 2 * x


async def async_forever() -> None:
    import asyncio

    await asyncio.sleep(60)


def test_a_coroutine_function_is_awaited_in_the_child() -> None:
    assert Pynisher(async_double)(21) == 42
    outcome = Pynisher(async_forever, wall_time=0.2).run()
    assert outcome.status is Status.WALL_TIME
