"""Each status, from a real child process, in every context. The functions
are in basic_funcs.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from basic_funcs import (
    CustomError,
    allocate,
    busy,
    double,
    exit3,
    raises_custom,
    segfault,
    sleeper,
    touch,
)
from conftest import START_UP

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


def test_returns_the_value(context: str) -> None:
    assert Pynisher(double, context=context)(21) == 42


def test_run_reports_ok_with_usage(context: str) -> None:
    outcome = Pynisher(double, context=context).run(4)
    assert isinstance(outcome, Outcome)
    assert outcome.status is Status.OK
    assert outcome.value == 8
    assert outcome.result() == 8
    assert outcome.error is None
    assert outcome.exitcode == 0 and outcome.signal is None
    assert 0 < outcome.wall_time < 5
    assert outcome.peak_memory > 1 << 20


def test_the_functions_exception_keeps_type_args_and_traceback(context: str) -> None:
    with pytest.raises(CustomError) as info:
        Pynisher(raises_custom, context=context)(1, "x")
    assert info.value.args == (1, "x")
    cause = info.value.__cause__
    assert cause is not None
    assert "raises_custom" in str(cause) and "CustomError" in str(cause)


def test_wall_time_limit(context: str) -> None:
    start = time.monotonic()
    with pytest.raises(WallTimeoutException):
        Pynisher(sleeper, wall_time=0.2, context=context)(10)
    # Bound: the wall limit plus a generous margin for a loaded machine.
    assert time.monotonic() - start < 0.2 + 1.0 + START_UP[context]


def test_wall_time_not_hit(context: str) -> None:
    assert Pynisher(sleeper, wall_time=5, context=context)(0.05) == 0.05


def test_cpu_time_limit_fractional(context: str) -> None:
    outcome = Pynisher(busy, cpu_time=0.2, context=context).run(5)
    assert outcome.status is Status.CPU_TIME
    assert isinstance(outcome.error, CpuTimeoutException)
    assert outcome.cpu_time >= 0.2
    with pytest.raises(CpuTimeoutException):
        outcome.result()


def test_cpu_time_not_hit_and_measured(context: str) -> None:
    outcome = Pynisher(busy, cpu_time=5, context=context).run(0.3)
    assert outcome.status is Status.OK
    # Measured CPU covers the busy loop; the upper band catches double counting.
    assert 0.25 <= outcome.cpu_time <= 0.3 + 0.25


def test_memory_limit(context: str) -> None:
    outcome = Pynisher(allocate, memory=(100, "MB"), context=context).run(400)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert isinstance(outcome.error, MemoryError)
    assert outcome.traceback and "allocate" in outcome.traceback


def test_memory_limit_not_hit(context: str) -> None:
    assert Pynisher(allocate, memory="600MB", context=context)(100) == 100 << 20


def test_memory_limit_is_headroom_not_absolute(context: str) -> None:
    # The caller is larger than the limit; the call itself allocates little.
    ballast = bytearray(300 << 20)
    try:
        assert Pynisher(allocate, memory=(100, "MB"), context=context)(20) == 20 << 20
    finally:
        del ballast


def test_exit_code_is_reported(context: str) -> None:
    outcome = Pynisher(exit3, context=context).run()
    assert outcome.status is Status.CRASHED
    assert outcome.exitcode == 3
    assert "exited with code 3" in str(outcome.error)
    with pytest.raises(PynisherException, match="code 3"):
        Pynisher(exit3, context=context)()


def test_segfault_names_the_signal(context: str, tmp_path: Path) -> None:
    dump = tmp_path / "faulthandler.txt"
    outcome = Pynisher(segfault, context=context).run(str(dump))
    assert outcome.status is Status.CRASHED
    assert outcome.signal == 11
    assert "SIGSEGV" in str(outcome.error)
    # The child really crashed where it was meant to.
    report = dump.read_text()
    assert report.startswith("Fatal Python error: Segmentation fault"), report
    assert "in segfault" in report, report


def test_raises_false_returns_none(context: str) -> None:
    assert Pynisher(sleeper, wall_time=0.1, raises=False, context=context)(5) is None
    assert Pynisher(raises_custom, raises=False, context=context)(1, "x") is None
    assert Pynisher(double, raises=False, context=context)(2) == 4


def test_version_comes_from_cargo() -> None:
    assert pynisher.__version__.count(".") == 2


def test_resident_mode_counts_only_what_the_call_touched(context: str) -> None:
    ballast = bytearray(600 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    try:
        limited = Pynisher(touch, memory="300MB", memory_mode="resident", context=context)
        outcome = limited.run(100, 0.3)
    finally:
        del ballast
    assert outcome.status is Status.OK, outcome.detail
    # The peak is the call's own ~100 MB, not the 600 MB caller.
    assert 90 << 20 <= outcome.peak_memory < 300 << 20


def test_resident_mode_limit(context: str) -> None:
    outcome = Pynisher(touch, memory="200MB", memory_mode="resident", context=context).run(800)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert "resident memory" in str(outcome.error)
    # The sampler sees the tree past the limit; under the cgroup backend the
    # kernel never lets it pass, and memory.peak is the limit itself.
    assert outcome.peak_memory >= 200 << 20
