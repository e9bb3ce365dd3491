"""Each status, from a real child process."""

from __future__ import annotations

import os
import time

import pytest

import pynisher
from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Outcome,
    Pynisher,
    PynisherException,
    Status,
    WallTimeoutException,
)


def double(x: int) -> int:
    return 2 * x


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def allocate(mb: int) -> int:
    block = bytearray(mb << 20)
    return len(block)


class CustomError(Exception):
    pass


def raises_custom(a: int, b: str) -> None:
    raise CustomError(a, b)


def test_returns_the_value() -> None:
    assert Pynisher(double)(21) == 42


def test_run_reports_ok_with_usage() -> None:
    outcome = Pynisher(double).run(4)
    assert isinstance(outcome, Outcome)
    assert outcome.status is Status.OK
    assert outcome.value == 8
    assert outcome.result() == 8
    assert outcome.error is None
    assert outcome.exitcode == 0 and outcome.signal is None
    assert 0 < outcome.wall_time < 5
    assert outcome.peak_memory > 1 << 20


def test_the_functions_exception_keeps_type_args_and_traceback() -> None:
    with pytest.raises(CustomError) as info:
        Pynisher(raises_custom)(1, "x")
    assert info.value.args == (1, "x")
    cause = info.value.__cause__
    assert cause is not None
    assert "raises_custom" in str(cause) and "CustomError" in str(cause)


def test_wall_time_limit() -> None:
    start = time.monotonic()
    with pytest.raises(WallTimeoutException):
        Pynisher(sleeper, wall_time=0.2)(10)
    # Bound: the wall limit plus a generous margin for a loaded machine.
    assert time.monotonic() - start < 0.2 + 1.0


def test_wall_time_not_hit() -> None:
    assert Pynisher(sleeper, wall_time=5)(0.05) == 0.05


def test_cpu_time_limit_fractional() -> None:
    outcome = Pynisher(busy, cpu_time=0.2).run(5)
    assert outcome.status is Status.CPU_TIME
    assert isinstance(outcome.error, CpuTimeoutException)
    assert outcome.cpu_time >= 0.2
    with pytest.raises(CpuTimeoutException):
        outcome.result()


def test_cpu_time_not_hit_and_measured() -> None:
    outcome = Pynisher(busy, cpu_time=5).run(0.3)
    assert outcome.status is Status.OK
    # Measured CPU covers the busy loop; the upper band catches double counting.
    assert 0.25 <= outcome.cpu_time <= 0.3 + 0.25


def test_memory_limit() -> None:
    outcome = Pynisher(allocate, memory=(100, "MB")).run(400)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert isinstance(outcome.error, MemoryError)
    assert outcome.traceback and "allocate" in outcome.traceback


def test_memory_limit_not_hit() -> None:
    assert Pynisher(allocate, memory="600MB")(100) == 100 << 20


def test_memory_limit_is_headroom_not_absolute() -> None:
    # The caller is larger than the limit; the call itself allocates little.
    ballast = bytearray(300 << 20)
    try:
        assert Pynisher(allocate, memory=(100, "MB"))(20) == 20 << 20
    finally:
        del ballast


def _exit3() -> None:
    os._exit(3)


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def test_exit_code_is_reported() -> None:
    outcome = Pynisher(_exit3).run()
    assert outcome.status is Status.CRASHED
    assert outcome.exitcode == 3
    assert "exited with code 3" in str(outcome.error)
    with pytest.raises(PynisherException, match="code 3"):
        Pynisher(_exit3)()


def test_segfault_names_the_signal() -> None:
    outcome = Pynisher(_segfault).run()
    assert outcome.status is Status.CRASHED
    assert outcome.signal == 11
    assert "SIGSEGV" in str(outcome.error)


def test_raises_false_returns_none() -> None:
    assert Pynisher(sleeper, wall_time=0.1, raises=False)(5) is None
    assert Pynisher(raises_custom, raises=False)(1, "x") is None
    assert Pynisher(double, raises=False)(2) == 4


def test_version_comes_from_cargo() -> None:
    assert pynisher.__version__.count(".") == 2


def touch(mb: int, hold: float = 0.0) -> int:
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)  # the peak is sampled: hold it long enough to be seen
    return len(block)


def test_resident_mode_counts_only_what_the_call_touched() -> None:
    ballast = bytearray(600 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    try:
        outcome = Pynisher(touch, memory="300MB", memory_mode="resident").run(100, 0.3)
    finally:
        del ballast
    assert outcome.status is Status.OK, outcome.detail
    # The peak is the call's own ~100 MB, not the 600 MB caller.
    assert 90 << 20 <= outcome.peak_memory < 300 << 20


def test_resident_mode_limit() -> None:
    outcome = Pynisher(touch, memory="200MB", memory_mode="resident").run(800)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert "resident memory" in str(outcome.error)
    assert outcome.peak_memory > 200 << 20
