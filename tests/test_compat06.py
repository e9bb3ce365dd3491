"""The pynisher 0.6 shim: `enforce_limits(...)(func)` and the attributes that
0.6 code reads after a call (result, exit_status, os_errno, wall_clock_time,
exitcode, stdout/stderr)."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import queue
import resource
import signal
import time
from typing import Any

import pytest
from limited_funcs import allocate, boom, busy, crash, sleeper, square

import pynisher
from pynisher import Status


def test_the_06_names_are_exported() -> None:
    for name in (
        "enforce_limits",
        "TimeoutException",
        "CpuTimeoutException",
        "MemorylimitException",
        "SubprocessException",
        "AnythingException",
        "SignalException",
        "PynisherError",
    ):
        assert hasattr(pynisher, name)
        assert name in pynisher.__all__
    assert pynisher.MemorylimitException is pynisher.MemoryLimitException
    for cls in (pynisher.SubprocessException, pynisher.AnythingException):
        assert issubclass(cls, pynisher.PynisherException)


def test_success() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=10, mem_in_mb=500, cpu_time_in_s=10)(square)
    assert wrapped(12) == 144
    assert wrapped.result == 144
    assert wrapped.exit_status == 0
    assert wrapped.exitcode == 0
    assert wrapped.os_errno is None
    assert wrapped.outcome is not None and wrapped.outcome.status is Status.OK
    assert wrapped.wall_clock_time is not None and 0 < wrapped.wall_clock_time < 5
    assert wrapped.resources_function is not None
    assert wrapped.resources_pynisher is not None


def test_keyword_arguments_and_defaults() -> None:
    wrapped = pynisher.enforce_limits()(sleeper)
    assert wrapped(seconds=0.01) == 0.01
    assert wrapped.exit_status == 0


def test_wall_time() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=1)(sleeper)
    started = time.monotonic()
    assert wrapped(10) is None
    took = time.monotonic() - started
    assert wrapped.result is None
    assert wrapped.exit_status is pynisher.TimeoutException
    assert wrapped.exitcode in (-signal.SIGTERM, -signal.SIGKILL)
    assert wrapped.wall_clock_time is not None
    assert 1 <= wrapped.wall_clock_time < 2
    assert took < 2


def test_fractional_wall_time_and_grace_period() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=0.3, grace_period_in_s=0.5)(sleeper)
    assert wrapped(10) is None
    assert wrapped.exit_status is pynisher.TimeoutException
    assert wrapped.wall_clock_time is not None and wrapped.wall_clock_time < 1


def test_cpu_time() -> None:
    wrapped = pynisher.enforce_limits(cpu_time_in_s=1, grace_period_in_s=1)(busy)
    assert wrapped(10) is None
    assert wrapped.exit_status is pynisher.CpuTimeoutException
    assert wrapped.exitcode is not None and wrapped.exitcode < 0


def test_memory() -> None:
    wrapped = pynisher.enforce_limits(mem_in_mb=100)(allocate)
    assert wrapped(1000) is None
    assert wrapped.exit_status is pynisher.MemorylimitException
    assert wrapped.exit_status is pynisher.MemoryLimitException
    assert wrapped.exitcode == 0
    # The limit is headroom for the call: a small allocation fits.
    assert wrapped(10) == 10 << 20
    assert wrapped.exit_status == 0


def raise_memory_error() -> None:
    raise MemoryError()


def test_memory_error_without_a_limit_is_a_memout() -> None:
    wrapped = pynisher.enforce_limits()(raise_memory_error)
    assert wrapped() is None
    assert wrapped.exit_status is pynisher.MemorylimitException


def open_missing_file() -> None:
    with open("/nonexistent/pynisher/file"):
        pass


def test_os_error_is_a_subprocess_exception_with_its_errno() -> None:
    wrapped = pynisher.enforce_limits(mem_in_mb=1000)(open_missing_file)
    assert wrapped() is None
    assert wrapped.exit_status is pynisher.SubprocessException
    assert wrapped.os_errno == errno.ENOENT
    assert wrapped.exitcode == 0


def test_the_functions_own_exception_is_anything_exception() -> None:
    wrapped = pynisher.enforce_limits()(boom)
    assert wrapped("bad") is None
    assert wrapped.exit_status is pynisher.AnythingException
    assert wrapped.exitcode == 1  # as a multiprocessing child with an uncaught exception
    assert wrapped.outcome is not None and wrapped.outcome.traceback is not None


def test_a_crash_is_anything_exception() -> None:
    wrapped = pynisher.enforce_limits()(crash)
    assert wrapped() is None
    assert wrapped.exit_status is pynisher.AnythingException
    assert wrapped.exitcode == -signal.SIGKILL


def sigquit() -> None:
    os.kill(os.getpid(), signal.SIGQUIT)
    time.sleep(5)


def test_sigquit_is_signal_exception() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=10)(sigquit)
    assert wrapped() is None
    assert wrapped.exit_status is pynisher.SignalException


def nproc_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NPROC)


def test_num_processes_sets_rlimit_nproc_in_the_child() -> None:
    wrapped = pynisher.enforce_limits(num_processes=7)(nproc_limit)
    assert wrapped() == (7, 7)
    assert resource.getrlimit(resource.RLIMIT_NPROC) != (7, 7)


def print_and_sleep(seconds: int) -> None:
    for i in range(seconds):
        print(i)
        time.sleep(0.1)


def print_and_fail() -> None:
    print("about to fail")
    raise RuntimeError("failed on purpose")


def test_capture_output() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=5, capture_output=True)(print_and_sleep)
    wrapped(3)
    assert wrapped.stdout == "0\n1\n2\n"
    assert wrapped.stderr == ""
    assert wrapped.exit_status == 0

    wrapped = pynisher.enforce_limits(capture_output=True)(print_and_fail)
    wrapped()
    assert wrapped.stdout is not None and "about to fail" in wrapped.stdout
    assert wrapped.stderr is not None and "RuntimeError: failed on purpose" in wrapped.stderr
    assert wrapped.exit_status is pynisher.AnythingException


def test_output_of_a_timed_out_call_is_captured() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=0.35, capture_output=True)(print_and_sleep)
    wrapped(20)
    assert wrapped.exit_status is pynisher.TimeoutException
    assert wrapped.stdout is not None and wrapped.stdout.startswith("0\n1\n")


def test_without_capture_stdout_and_stderr_are_none() -> None:
    wrapped = pynisher.enforce_limits()(square)
    wrapped(2)
    assert wrapped.stdout is None and wrapped.stderr is None


def test_attributes_are_reset_between_calls() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=0.3)(sleeper)
    assert wrapped(5) is None
    assert wrapped.exit_status is pynisher.TimeoutException
    assert wrapped(0.01) == 0.01
    assert wrapped.exit_status == 0
    assert wrapped.result == 0.01


def test_logger_gets_debug_messages(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-compat06")
    with caplog.at_level(logging.DEBUG, logger="test-compat06"):
        wrapped = pynisher.enforce_limits(wall_time_in_s=0.2, logger=logger)(sleeper)
        wrapped(5)
    text = caplog.text
    assert "wall time" in text
    assert "TimeoutException" in text


def test_huge_memory_limit_means_no_limit() -> None:
    # 0.6 callers passed absurd numbers (1e25 MB) to mean "no limit".
    wrapped = pynisher.enforce_limits(mem_in_mb=10e24)(square)
    assert wrapped(3) == 9


def test_bad_limit_raises_value_error() -> None:
    with pytest.raises(ValueError, match="wall_time"):
        pynisher.enforce_limits(wall_time_in_s=-1)


def test_spawn_context_is_accepted_when_available() -> None:
    if not pynisher.supports("context:spawn"):
        pytest.skip("spawn is not available in this build")
    wrapped = pynisher.enforce_limits(
        wall_time_in_s=10, context=multiprocessing.get_context("spawn")
    )(square)
    assert wrapped(5) == 25
    assert wrapped.exit_status == 0


# --- auto-sklearn style: results travel through a multiprocessing.Queue -----


def ta(queue: Any, config: dict[str, Any], seconds: float = 0.0) -> None:
    """A target algorithm as auto-sklearn wrote them: it reports through the
    queue and returns nothing."""
    if seconds:
        queue.put({"loss": 0.9, "status": "intermediate"})
        time.sleep(seconds)
    if config.get("allocate_mb"):
        bytearray(config["allocate_mb"] << 20)
    queue.put({"loss": config["x"] ** 2, "status": "SUCCESS", "additional_run_info": {}})


def read_queue(q: Any) -> list[dict[str, Any]]:
    items = []
    while True:
        try:
            items.append(q.get(timeout=0.2))
        except queue.Empty:
            return items


def run_like_autosklearn(config: dict[str, Any], **limits: Any) -> tuple[str, Any]:
    q: Any = multiprocessing.get_context("fork").Queue()
    obj = pynisher.enforce_limits(logger=logging.getLogger("pynisher"), **limits)(ta)
    obj(queue=q, config=config, seconds=config.get("seconds", 0.0))
    if obj.exit_status in (pynisher.TimeoutException, pynisher.MemorylimitException):
        status = "TIMEOUT" if obj.exit_status is pynisher.TimeoutException else "MEMOUT"
        return status, read_queue(q)
    if obj.exit_status in (pynisher.AnythingException, pynisher.SubprocessException):
        return "CRASHED", obj.exitcode
    info = read_queue(q)
    return info[-1]["status"], info[-1]["loss"]


def test_auto_sklearn_style_success_reaches_the_queue() -> None:
    # The item is put right before the function returns: the shim flushes the
    # queue's feeder thread before the child exits, as multiprocessing did.
    for _ in range(5):
        assert run_like_autosklearn({"x": 3}, wall_time_in_s=10) == ("SUCCESS", 9)


def test_auto_sklearn_style_timeout_keeps_what_was_reported() -> None:
    status, items = run_like_autosklearn({"x": 3, "seconds": 5}, wall_time_in_s=0.5)
    assert status == "TIMEOUT"
    assert items == [{"loss": 0.9, "status": "intermediate"}]


def test_auto_sklearn_style_memout() -> None:
    status, items = run_like_autosklearn({"x": 3, "allocate_mb": 2000}, mem_in_mb=200)
    assert status == "MEMOUT"
    assert items == []


def test_auto_sklearn_style_crash() -> None:
    assert run_like_autosklearn({}, wall_time_in_s=10) == ("CRASHED", 1)  # KeyError "x"


def nested(level: int) -> int:
    if level == 0:
        return os.getpid()
    inner = pynisher.enforce_limits(wall_time_in_s=10)(nested)
    result = inner(level - 1)
    assert inner.exit_status == 0
    return int(result)


def test_nested_enforce_limits() -> None:
    wrapped = pynisher.enforce_limits(wall_time_in_s=20)(nested)
    innermost = wrapped(2)
    assert wrapped.exit_status == 0
    assert innermost != os.getpid()
