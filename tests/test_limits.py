"""Each limit hit and not hit, in every unit form, with fractional seconds, and
against functions that fight the soft stop (ignore or block SIGTERM, stop
themselves, ignore SIGXCPU).

Timing is asserted only as generous bounds: the machine may be loaded. Every
bound below is the limit, plus the grace period where the hard stop is needed,
plus a margin that a correct implementation never comes near.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np
import pytest

from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Outcome,
    Pynisher,
    Status,
    WallTimeoutException,
)

MB = 1 << 20
# Generous slack for a loaded 2-core machine; a correct stop takes milliseconds.
MARGIN = 1.0


def sleeper(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> float:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return seconds


def allocate(mb: int) -> int:
    block = bytearray(mb * MB)
    return len(block)


def numpy_allocate(mb: int) -> int:
    array = np.ones(mb * MB, dtype=np.uint8)
    return int(array.sum())


def timed_run(limited: Pynisher[..., Any], *args: object) -> tuple[Outcome[Any], float]:
    start = time.monotonic()
    outcome = limited.run(*args)
    return outcome, time.monotonic() - start


# --- wall time ---------------------------------------------------------------


@pytest.mark.parametrize("wall_time", ["0.25s", (0.25, "s"), (250, "ms"), 0.25])
def test_fractional_wall_time_in_every_form(wall_time: object) -> None:
    limited = Pynisher(sleeper, wall_time=wall_time)
    assert limited.wall_time == pytest.approx(0.25)
    outcome, elapsed = timed_run(limited, 10)
    assert outcome.status is Status.WALL_TIME
    assert isinstance(outcome.error, WallTimeoutException)
    # It waited for the limit, and not much longer.
    assert 0.25 <= outcome.wall_time < 0.25 + MARGIN
    assert 0.25 <= elapsed < 0.25 + MARGIN


def test_fractional_wall_time_not_hit() -> None:
    outcome = Pynisher(sleeper, wall_time=0.5).run(0.05)
    assert outcome.status is Status.OK
    assert outcome.value == 0.05


def test_wall_time_counts_sleep_not_only_cpu() -> None:
    # A CPU limit does not stop a sleeping function; only the wall limit does.
    outcome = Pynisher(sleeper, cpu_time=0.2, wall_time=0.4).run(10)
    assert outcome.status is Status.WALL_TIME
    assert outcome.cpu_time < 0.2


def test_wall_time_stops_a_busy_function() -> None:
    outcome, elapsed = timed_run(Pynisher(busy, wall_time=0.3), 30)
    assert outcome.status is Status.WALL_TIME
    assert elapsed < 0.3 + MARGIN


def test_wall_time_minutes_unit() -> None:
    # (0.005, "m") is 0.3 s.
    limited = Pynisher(sleeper, wall_time=(0.005, "m"))
    assert limited.wall_time == pytest.approx(0.3)
    assert limited.run(10).status is Status.WALL_TIME


def test_wall_time_hours_string_is_parsed() -> None:
    assert Pynisher(sleeper, wall_time="1.5h").wall_time == pytest.approx(5400)
    assert Pynisher(sleeper, wall_time=(2, "m")).wall_time == pytest.approx(120)


# --- the soft stop, and functions that resist it ------------------------------


def ignores_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def blocks_every_signal() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    time.sleep(60)


def ignores_sigterm_in_c() -> None:
    # Sleeps inside libc, never returning to the interpreter.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctypes.CDLL(None).sleep(60)


def stops_itself() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(60)


@pytest.mark.parametrize("func", [ignores_sigterm, blocks_every_signal, ignores_sigterm_in_c])
def test_a_function_that_resists_sigterm_is_killed_after_the_grace_period(
    func: Callable[[], None],
) -> None:
    wall, grace = 0.3, 0.5
    outcome, elapsed = timed_run(Pynisher(func, wall_time=wall, grace_period=grace))
    assert outcome.status is Status.WALL_TIME
    assert isinstance(outcome.error, WallTimeoutException)
    assert outcome.signal == signal.SIGKILL
    # The grace period was granted (SIGKILL came only after it) ...
    assert elapsed >= wall + grace - 0.05
    # ... and the call still returned within wall + grace + margin.
    assert elapsed < wall + grace + MARGIN


def test_a_function_that_obeys_sigterm_returns_well_before_the_grace_period_ends() -> None:
    wall, grace = 0.3, 5.0
    outcome, elapsed = timed_run(Pynisher(sleeper, wall_time=wall, grace_period=grace), 60)
    assert outcome.status is Status.WALL_TIME
    assert outcome.signal == signal.SIGTERM
    assert elapsed < wall + MARGIN


def test_a_stopped_function_is_still_stopped_by_the_wall_limit() -> None:
    outcome, elapsed = timed_run(Pynisher(stops_itself, wall_time=0.3, grace_period=0.5))
    assert outcome.status is Status.WALL_TIME
    assert elapsed < 0.3 + 0.5 + MARGIN


def test_zero_grace_period_kills_at_once() -> None:
    outcome, elapsed = timed_run(Pynisher(ignores_sigterm, wall_time=0.3, grace_period=0))
    assert outcome.status is Status.WALL_TIME
    assert outcome.signal == signal.SIGKILL
    assert elapsed < 0.3 + MARGIN


def raises_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise RuntimeError("interrupted by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
    time.sleep(60)


def test_an_error_caused_by_the_wall_time_sigterm_is_still_a_wall_timeout() -> None:
    outcome = Pynisher(raises_on_sigterm, wall_time=0.3).run()
    assert outcome.status is Status.WALL_TIME
    assert isinstance(outcome.error, WallTimeoutException)


# --- CPU time ------------------------------------------------------------------


def test_fractional_cpu_time_not_hit() -> None:
    outcome = Pynisher(busy, cpu_time=0.6).run(0.1)
    assert outcome.status is Status.OK
    assert outcome.value == 0.1


@pytest.mark.parametrize("cpu_time", ["0.2s", (0.2, "s"), (200, "ms")])
def test_fractional_cpu_time_in_every_form(cpu_time: object) -> None:
    limited = Pynisher(busy, cpu_time=cpu_time)
    assert limited.cpu_time == pytest.approx(0.2)
    outcome, elapsed = timed_run(limited, 30)
    assert outcome.status is Status.CPU_TIME
    assert isinstance(outcome.error, CpuTimeoutException)
    assert outcome.cpu_time >= 0.2
    # Stopped near the limit: not at the 1 s RLIMIT_CPU backstop, nor at 30 s.
    assert outcome.cpu_time < 0.2 + 0.5
    assert elapsed < 0.2 + 1 + MARGIN


def ignores_sigxcpu() -> None:
    signal.signal(signal.SIGXCPU, signal.SIG_IGN)
    while True:
        pass


def test_a_function_that_ignores_sigxcpu_is_killed_after_the_grace_period() -> None:
    outcome, elapsed = timed_run(Pynisher(ignores_sigxcpu, cpu_time=0.2, grace_period=0.3))
    assert outcome.status is Status.CPU_TIME
    assert outcome.signal == signal.SIGKILL
    # On a loaded machine 0.2 CPU-seconds may take longer than 0.2 s of wall time.
    assert elapsed < 0.2 + 0.3 + 2 * MARGIN


BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass"


def burns_in_a_grandchild(seconds: float) -> int:
    done = subprocess.run([sys.executable, "-c", BURN.format(seconds=seconds)], check=False)
    return done.returncode


def test_cpu_time_of_the_tree_is_measured() -> None:
    outcome = Pynisher(burns_in_a_grandchild).run(0.4)
    assert outcome.status is Status.OK and outcome.value == 0
    # The function itself only waited; the grandchild burned the CPU.
    assert outcome.cpu_time >= 0.35
    assert outcome.cpu_time == pytest.approx((outcome.cpu_user + outcome.cpu_system), abs=1e-6)


def test_cpu_time_limit_covers_a_grandchild() -> None:
    outcome, elapsed = timed_run(Pynisher(burns_in_a_grandchild, cpu_time=0.4), 60)
    assert outcome.status is Status.CPU_TIME
    assert isinstance(outcome.error, CpuTimeoutException)
    assert elapsed < 0.4 + 1 + 2 * MARGIN


def raises_sigxcpu_itself() -> None:
    os.kill(os.getpid(), signal.SIGXCPU)


def test_a_sigxcpu_death_under_a_cpu_limit_is_a_cpu_timeout_and_says_why() -> None:
    outcome = Pynisher(raises_sigxcpu_itself, cpu_time=5).run()
    assert outcome.status is Status.CPU_TIME
    assert isinstance(outcome.error, CpuTimeoutException)
    assert "SIGXCPU" in str(outcome.error)


def test_a_sigxcpu_death_without_a_cpu_limit_is_a_crash() -> None:
    outcome = Pynisher(raises_sigxcpu_itself).run()
    assert outcome.status is Status.CRASHED
    assert type(outcome.error).__name__ == "PynisherException"
    assert "SIGXCPU" in str(outcome.error)


def kills_itself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_sigkill_death_under_limits_is_a_crash_without_evidence() -> None:
    # Limits are set, but nothing says one was hit: no limit status.
    outcome = Pynisher(kills_itself, cpu_time=5, wall_time=5).run()
    assert outcome.status is Status.CRASHED
    assert outcome.signal == signal.SIGKILL
    assert "SIGKILL" in str(outcome.error)


def exits_zero_without_result() -> None:
    os._exit(0)


def test_exit_zero_without_a_result_is_a_crash() -> None:
    outcome = Pynisher(exits_zero_without_result).run()
    assert outcome.status is Status.CRASHED
    assert outcome.exitcode == 0
    assert "code 0" in str(outcome.error)


# --- memory ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memory", "in_bytes"),
    [
        ((0.1, "GB"), int(0.1 * 1024 * MB)),
        ("0.1GB", int(0.1 * 1024 * MB)),
        ((102400, "KB"), 100 * MB),
        (100 * MB, 100 * MB),
        ("100mb", 100 * MB),
    ],
)
def test_memory_limit_hit_in_every_form(memory: object, in_bytes: int) -> None:
    limited = Pynisher(allocate, memory=memory)
    assert limited.memory == pytest.approx(in_bytes, abs=1)
    outcome = limited.run(400)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)


@pytest.mark.parametrize("memory", [(0.5, "GB"), 500 * MB, "500MB"])
def test_memory_limit_not_hit_in_every_form(memory: object) -> None:
    assert Pynisher(allocate, memory=memory)(100) == 100 * MB


def test_units_are_multiples_of_1024_and_case_insensitive() -> None:
    assert Pynisher(allocate, memory=(3, "kb"), warnings=False).memory == 3 * 1024
    assert Pynisher(allocate, memory="2Mb").memory == 2 * MB
    assert Pynisher(allocate, memory=(1, "GB")).memory == 1024 * MB
    assert Pynisher(allocate, memory="2GiB").memory == 2048 * MB
    assert Pynisher(allocate, memory=4096, warnings=False).memory == 4096


def test_memory_limit_hit_by_numpy() -> None:
    outcome = Pynisher(numpy_allocate, memory="100MB").run(400)
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)
    assert outcome.traceback is not None and "numpy_allocate" in outcome.traceback


def test_memory_limit_not_hit_by_numpy() -> None:
    assert Pynisher(numpy_allocate, memory="300MB")(50) == 50 * MB


def test_memory_error_under_a_memory_limit_is_a_memory_limit_exception() -> None:
    def raise_memory_error() -> None:
        raise MemoryError("explicit")

    outcome = Pynisher(raise_memory_error, memory="1GB").run()
    assert outcome.status is Status.MEMORY
    assert isinstance(outcome.error, MemoryLimitException)


def test_memory_error_without_a_memory_limit_stays_the_functions_error() -> None:
    def raise_memory_error() -> None:
        raise MemoryError("explicit")

    outcome = Pynisher(raise_memory_error).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is MemoryError
    assert outcome.error.args == ("explicit",)


def test_peak_memory_grows_with_what_the_call_touches() -> None:
    small = Pynisher(allocate).run(1)
    large = Pynisher(allocate).run(200)
    assert small.status is Status.OK and large.status is Status.OK
    assert large.peak_memory >= 200 * MB
    assert large.peak_memory - small.peak_memory >= 150 * MB


def test_every_limit_at_once_not_hit() -> None:
    limited = Pynisher(allocate, wall_time=5, cpu_time=5, memory="500MB")
    outcome = limited.run(50)
    assert outcome.status is Status.OK
    assert outcome.value == 50 * MB
