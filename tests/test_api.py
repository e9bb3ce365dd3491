"""The public surface of API.md's Python section: exports, the exception
hierarchy, support queries, ``limit``/``restricted``, the context manager,
pickling, threads, the process name and ``Outcome``; every call in every
context. The functions the calls run are in api_funcs.py."""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from api_funcs import (
    LIMITED_PIDS,
    MB,
    abort_with_report,
    allocate,
    busy,
    busy_then_done,
    double,
    fail,
    make_limited_sleeper,
    own_comm,
    prints,
    prints_megabytes,
    prints_then_fails,
    prints_then_sleeps,
    prints_to_both_then_exits,
    prints_with_a_forked_child,
    sleeper,
)
from conftest import START_UP, contexts_with_bugs

import pynisher
from pynisher import (
    EMPTY,
    CpuTimeoutException,
    MemoryLimitException,
    Outcome,
    Pynisher,
    PynisherException,
    Status,
    TimeoutException,
    WallTimeoutException,
    limit,
    restricted,
)
from pynisher._child import OUTPUT_CAP

# --- exports -----------------------------------------------------------------------


API_NAMES = [
    "Pynisher",
    "limit",
    "restricted",
    "EMPTY",
    "PynisherException",
    "TimeoutException",
    "WallTimeoutException",
    "CpuTimeoutException",
    "MemoryLimitException",
    "contexts",
    "supports",
    "supports_walltime",
    "supports_cputime",
    "supports_memory",
    "supports_limit_decorator",
    "Outcome",
    "Status",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_every_api_name_is_exported(name: str) -> None:
    assert hasattr(pynisher, name)
    assert name in pynisher.__all__


def test_star_import_gives_the_api() -> None:
    namespace: dict[str, Any] = {}
    exec("from pynisher import *", namespace)
    assert set(API_NAMES) <= set(namespace)


def test_empty_is_a_single_exported_marker() -> None:
    from pynisher import EMPTY as again

    assert again is EMPTY
    assert EMPTY is not None
    assert repr(EMPTY) == "EMPTY"


def test_exception_hierarchy() -> None:
    assert issubclass(PynisherException, Exception)
    assert issubclass(TimeoutException, PynisherException)
    assert issubclass(WallTimeoutException, TimeoutException)
    assert issubclass(CpuTimeoutException, TimeoutException)
    assert issubclass(MemoryLimitException, PynisherException)
    assert issubclass(MemoryLimitException, MemoryError)
    assert not issubclass(MemoryLimitException, TimeoutException)
    assert not issubclass(WallTimeoutException, CpuTimeoutException)
    assert not issubclass(CpuTimeoutException, WallTimeoutException)


def test_a_memory_limit_is_caught_as_a_memory_error(context: str) -> None:
    # A caller catching MemoryError catches the limit too.
    with pytest.raises(MemoryError):
        Pynisher(allocate, memory="50MB", context=context)(300)


def test_exceptions_are_reachable_from_the_class() -> None:
    # pynisher 1.0 code writes Pynisher.WallTimeoutException and the like.
    assert Pynisher.WallTimeoutException is WallTimeoutException
    assert Pynisher.CpuTimeoutException is CpuTimeoutException
    assert Pynisher.MemoryLimitException is MemoryLimitException
    assert Pynisher.PynisherException is PynisherException
    assert Pynisher.TimeoutException is TimeoutException


def test_status_values() -> None:
    assert [status.value for status in Status] == [
        "ok",
        "error",
        "wall_time",
        "cpu_time",
        "memory",
        "crashed",
    ]
    assert isinstance(Status.OK, str) and Status("wall_time") is Status.WALL_TIME
    assert Status.MEMORY == "memory"


# --- support queries ------------------------------------------------------------------


def test_contexts_lists_fork_and_only_start_methods() -> None:
    assert isinstance(pynisher.contexts, list)
    assert "fork" in pynisher.contexts
    assert set(pynisher.contexts) <= {"fork", "spawn", "forkserver"}


@pytest.mark.parametrize("kind", ["wall_time", "cpu_time", "memory", "decorator"])
def test_supports_each_documented_kind(kind: str) -> None:
    assert pynisher.supports(kind) is True


def test_supports_functions_agree_with_supports() -> None:
    assert pynisher.supports_walltime() is pynisher.supports("wall_time") is True
    assert pynisher.supports_cputime() is pynisher.supports("cpu_time") is True
    assert pynisher.supports_memory() is pynisher.supports("memory") is True
    assert pynisher.supports_limit_decorator() is pynisher.supports("decorator") is True


def test_supports_the_context_kinds() -> None:
    for method in ("fork", "spawn", "forkserver"):
        assert pynisher.supports(f"context:{method}") is (method in pynisher.contexts)


@pytest.mark.parametrize("kind", ["gpu", "", "wall", "memory_mode:nonsense"])
def test_supports_an_unknown_kind_is_a_value_error(kind: str) -> None:
    with pytest.raises(ValueError, match="kind"):
        pynisher.supports(kind)


# --- limit, restricted, decorators ---------------------------------------------------------


def test_limit_with_a_function_returns_a_pynisher(context: str) -> None:
    limited = limit(double, wall_time=2, memory=(500, "MB"), context=context)
    assert isinstance(limited, Pynisher)
    assert limited.wall_time == 2 and limited.memory == 500 * MB
    assert limited.context == context
    assert limited(4) == 8


def test_limit_decorator_seed_form(context: str) -> None:
    wall = 1
    decorated = limit(wall_time=wall, raises=False, context=context)(sleeper)
    assert decorated(0.01) == 0.01
    start = time.monotonic()
    assert decorated(10) is None
    assert time.monotonic() - start < wall + 1.0 + START_UP[context]
    assert decorated.__name__ == "sleeper"


def test_restricted_decorator(context: str) -> None:
    cpu = 0.2
    decorated = restricted(cpu_time=cpu, context=context)(busy_then_done)
    assert decorated(0.01) == "done"
    with pytest.raises(CpuTimeoutException):
        decorated(30)
    assert decorated.__name__ == "busy_then_done"


@pytest.mark.parametrize("decorator", [limit, restricted])
def test_a_recursive_decorated_function_does_not_fork_again(decorator: Any, context: str) -> None:
    @decorator(wall_time=5, context=context)
    def pids(depth: int) -> list[int]:
        if depth == 0:
            return [os.getpid()]
        return [os.getpid(), *pids(depth - 1)]

    found = pids(3)
    assert len(found) == 4
    # Every level ran in the same, single child, which is not the caller.
    assert len(set(found)) == 1
    assert found[0] != os.getpid()


def test_a_different_decorated_function_inside_a_child_is_limited_on_its_own(
    context: str,
) -> None:
    @limit(wall_time=5, context=context)
    def inner_limited() -> int:
        return os.getpid()

    @limit(wall_time=5, context=context)
    def outer_limited() -> tuple[int, int]:
        return os.getpid(), inner_limited()

    outer, inner = outer_limited()
    assert outer != os.getpid()
    assert inner not in (outer, os.getpid())


def test_a_factory_made_limited_function_inside_another_is_still_limited(context: str) -> None:
    # Both come from one factory, so they share module and __qualname__: the
    # inner one must still be limited inside the outer one's child.
    outer = make_limited_sleeper(10, context)
    inner = make_limited_sleeper(0.5, context)
    with pytest.raises(WallTimeoutException):
        outer(3, inner)


def test_decorated_functions_raise_the_functions_error(context: str) -> None:
    @limit(wall_time=5, context=context)
    def bad() -> None:
        raise KeyError("bad")

    with pytest.raises(KeyError) as info:
        bad()
    assert info.value.args == ("bad",)


def test_context_manager_returns_the_object(context: str) -> None:
    limited = Pynisher(double, wall_time=2, context=context)
    with limited as entered:
        assert entered is limited
        assert entered(5) == 10
    # Still usable after the block.
    assert limited(6) == 12


def test_keyword_arguments_are_passed(context: str) -> None:
    def combine(a: int, *, b: int = 0, **rest: int) -> tuple[int, int, dict[str, int]]:
        return a, b, rest

    assert Pynisher(combine, context=context)(1, b=2, c=3) == (1, 2, {"c": 3})


def test_a_closure_and_a_lambda_run(context: str) -> None:
    offset = 10
    assert Pynisher(lambda x: x + offset, context=context)(5) == 15


def test_the_object_can_be_called_many_times(context: str) -> None:
    limited = Pynisher(double, context=context)
    assert [limited(i) for i in range(5)] == [0, 2, 4, 6, 8]


# --- pickling -------------------------------------------------------------------------


def test_a_pynisher_can_be_pickled_before_and_after_calls(context: str) -> None:
    limited = Pynisher(
        double,
        name="pickled",
        wall_time=2,
        cpu_time=(1.5, "s"),
        memory=(300, "MB"),
        grace_period=0.5,
        wrap_errors={"memory": [ImportError]},
        raises=False,
        terminate_child_processes=False,
        context=context,
    )
    before = pickle.loads(pickle.dumps(limited))
    assert before(4) == 8
    assert limited(5) == 10
    after = pickle.loads(pickle.dumps(limited))
    assert after(6) == 12
    again = pickle.loads(pickle.dumps(after))
    assert again(7) == 14
    for copy in (before, after, again):
        assert copy.func is double
        assert copy.name == "pickled"
        assert copy.wall_time == 2 and copy.cpu_time == 1.5
        assert copy.memory == 300 * MB and copy.grace_period == 0.5
        assert copy.wrap_errors == {"memory": [ImportError]}
        assert copy.raises is False and copy.terminate_child_processes is False


def test_a_pickled_pynisher_still_enforces_its_limits(context: str) -> None:
    limited = pickle.loads(pickle.dumps(Pynisher(sleeper, wall_time=0.2, context=context)))
    with pytest.raises(WallTimeoutException):
        limited(10)


def test_a_decorated_function_can_be_pickled(context: str) -> None:
    # Pickled by reference: a module-level function decorated for this context.
    copy = pickle.loads(pickle.dumps(LIMITED_PIDS[context]))
    pids = copy(1)
    assert len(pids) == 2 and pids[0] != os.getpid()
    assert len(set(pids)) == 1


# --- threads ------------------------------------------------------------------------------


@pytest.mark.slow
def test_calls_from_four_threads_at_once_each_come_back_right(context: str) -> None:
    jobs: list[tuple[Pynisher, tuple[Any, ...], Status]] = [
        (Pynisher(sleeper, context=context), (0.3,), Status.OK),
        (Pynisher(fail, context=context), ("thread",), Status.ERROR),
        (Pynisher(sleeper, wall_time=0.3, context=context), (30,), Status.WALL_TIME),
        (Pynisher(busy, cpu_time=0.3, context=context), (30,), Status.CPU_TIME),
        (Pynisher(allocate, memory="50MB", context=context), (400,), Status.MEMORY),
        (Pynisher(double, context=context), (21,), Status.OK),
    ]

    def run_together(batch: list[tuple[Pynisher, tuple[Any, ...], Status]]) -> list[Outcome]:
        barrier = threading.Barrier(len(batch))

        def run(job: tuple[Pynisher, tuple[Any, ...], Status]) -> Outcome:
            limited, args, _ = job
            barrier.wait(timeout=10)
            return limited.run(*args)

        with ThreadPoolExecutor(len(batch)) as pool:
            return list(pool.map(run, batch))

    for _ in range(2):
        # Four threads start together, then the remaining two.
        outcomes = run_together(jobs[:4]) + run_together(jobs[4:])
        assert [o.status for o in outcomes] == [status for _, _, status in jobs]
        assert outcomes[0].value == 0.3
        assert type(outcomes[1].error) is KeyError and outcomes[1].error.args == ("thread",)
        assert outcomes[5].value == 42


def test_the_gil_is_released_while_waiting(context: str) -> None:
    # Sequentially these take at least 4 x 0.5 s; at once they overlap (and
    # so do the start-ups of spawned children).
    limited = Pynisher(sleeper, wall_time=5, context=context)
    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(limited, [0.5] * 4))
    assert values == [0.5] * 4
    assert time.monotonic() - start < 1.9


def test_a_caller_thread_keeps_running_during_a_call(context: str) -> None:
    ticks = 0
    stop = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        Pynisher(sleeper, context=context)(0.5)
    finally:
        stop.set()
        ticker.join()
    assert ticks >= 10


# --- the process name ---------------------------------------------------------------------


def test_the_name_is_the_process_name(context: str) -> None:
    assert Pynisher(own_comm, name="my-trial", context=context)() == "my-trial"


def test_the_default_name_is_the_functions_name(context: str) -> None:
    assert Pynisher(own_comm, context=context)() == "own_comm"


def test_a_long_name_is_cut_to_what_the_kernel_keeps(context: str) -> None:
    name = "a-very-long-process-name-for-a-trial"
    assert Pynisher(own_comm, name=name, context=context)() == name[:15]


def test_the_function_name_appears_in_error_messages(context: str) -> None:
    outcome = Pynisher(sleeper, wall_time=0.2, context=context).run(10)
    assert outcome.status is Status.WALL_TIME
    assert "sleeper" in str(outcome.error)


def test_the_given_name_appears_in_error_messages(context: str) -> None:
    outcome = Pynisher(sleeper, name="named-call", wall_time=0.2, context=context).run(10)
    assert outcome.status is Status.WALL_TIME
    assert "named-call" in str(outcome.error)


def test_the_callers_name_is_unchanged() -> None:
    # Fork only: only a forked child starts as a copy of the caller, whose name it changes.
    before = own_comm()
    Pynisher(own_comm, name="renamed", context="fork")()
    assert own_comm() == before


# --- Outcome ------------------------------------------------------------------------------


def test_outcome_fields_for_an_error(context: str) -> None:
    outcome = Pynisher(fail, context=context).run("x")
    assert outcome.status is Status.ERROR and not outcome.ok
    assert outcome.value is None
    assert type(outcome.error) is KeyError
    assert outcome.traceback is not None and "fail" in outcome.traceback
    assert outcome.exitcode == 0 and outcome.signal is None
    assert outcome.wall_time > 0 and outcome.cpu_time >= 0 and outcome.peak_memory > 0


def test_outcome_fields_for_a_wall_timeout(context: str) -> None:
    wall = 0.2
    outcome = Pynisher(sleeper, wall_time=wall, context=context).run(10)
    assert outcome.status is Status.WALL_TIME
    assert outcome.value is None and outcome.traceback is None
    assert type(outcome.error) is WallTimeoutException
    assert outcome.signal == signal.SIGTERM and outcome.exitcode is None
    assert outcome.wall_time >= wall
    # Sleeping costs little CPU.
    assert outcome.cpu_time < 0.2


def test_outcome_fields_for_a_cpu_timeout(context: str) -> None:
    outcome = Pynisher(busy, cpu_time=0.2, context=context).run(30)
    assert outcome.status is Status.CPU_TIME
    assert outcome.signal == signal.SIGXCPU
    assert outcome.cpu_time >= 0.2 and outcome.wall_time >= 0.2 * 0.9


def test_outcome_fields_for_a_memory_limit(context: str) -> None:
    outcome = Pynisher(allocate, memory="100MB", context=context).run(400)
    assert outcome.status is Status.MEMORY
    assert outcome.value is None
    assert outcome.exitcode == 0 and outcome.signal is None
    assert outcome.traceback is not None and "MemoryError" in outcome.traceback


def check_abort_report(dump: Path) -> None:
    """The child's faulthandler report says it aborted, in the function."""
    report = dump.read_text()
    assert report.startswith("Fatal Python error: Aborted"), report
    assert "in abort_with_report" in report, report


def test_outcome_fields_for_a_crash(context: str, tmp_path: Path) -> None:
    dump = tmp_path / "faulthandler.txt"
    outcome = Pynisher(abort_with_report, context=context).run(str(dump))
    assert outcome.status is Status.CRASHED
    assert outcome.signal == signal.SIGABRT
    assert "SIGABRT" in str(outcome.error)
    with pytest.raises(PynisherException, match="SIGABRT"):
        outcome.result()
    check_abort_report(dump)


def test_run_never_raises_and_call_raises_the_same_kind(context: str, tmp_path: Path) -> None:
    dump = tmp_path / "faulthandler.txt"
    cases: list[tuple[Pynisher[..., Any], tuple[Any, ...], type[BaseException]]] = [
        (Pynisher(fail, context=context), ("k",), KeyError),
        (Pynisher(sleeper, wall_time=0.1, context=context), (10,), WallTimeoutException),
        (Pynisher(abort_with_report, context=context), (str(dump),), PynisherException),
    ]
    for limited, args, kind in cases:
        outcome = limited.run(*args)
        assert isinstance(outcome.error, kind)
        with pytest.raises(kind):
            limited(*args)
    check_abort_report(dump)


def test_outcome_is_immutable(context: str) -> None:
    outcome = Pynisher(double, context=context).run(1)
    with pytest.raises(AttributeError):
        outcome.status = Status.ERROR  # type: ignore[misc]


# --- output to redirected streams ------------------------------------------------------------


@pytest.mark.parametrize("context", contexts_with_bugs())
def test_redirect_stdout_in_the_caller_receives_the_childs_print(context: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert Pynisher(prints, context=context)("to stdout") == "returned"
    assert out.getvalue() == "to stdout"
    assert err.getvalue() == " and stderr"


@pytest.mark.parametrize("context", contexts_with_bugs())
def test_redirect_stdout_receives_the_print_of_a_failing_call(context: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = Pynisher(prints_then_fails, context=context).run("before the error")
    assert outcome.status is Status.ERROR
    assert out.getvalue() == "before the error"


def test_redirect_stdout_receives_the_print_of_a_call_stopped_by_a_limit(context: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = Pynisher(prints_then_sleeps, wall_time=0.3, context=context).run(
            "printed before the limit"
        )
    assert outcome.status is Status.WALL_TIME
    assert out.getvalue() == "printed before the limit\n"


def test_redirected_output_is_capped_and_says_so(context: str) -> None:
    # 200 MB printed under a 100 MB limit: the caller keeps the first 64 MiB
    # and a notice, not all of it (nor, past 2 GiB, a silently cut part).
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        outcome = Pynisher(prints_megabytes, memory=(100, "MB"), context=context).run(200)
    assert outcome.status is Status.OK, outcome.detail
    text = out.getvalue()
    assert OUTPUT_CAP - 4 * MB < len(text.encode()) <= OUTPUT_CAP + 1024
    kept, notice = text.rsplit("\n[pynisher: ", 1)
    assert "cap of 64 MiB" in notice and notice.endswith("was dropped]\n")
    assert set(kept.replace("\u00e9\n", "")) == {"x"}, "cut inside a character"


def test_redirected_output_of_a_forked_child_is_kept_too(context: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert Pynisher(prints_with_a_forked_child, context=context)(2000) == "returned"
    lines = out.getvalue().splitlines()
    expected = [f"{who} {i}" for who in ("parent", "child") for i in range(2000)]
    assert sorted(lines) == sorted(expected)


def test_redirected_output_of_a_crash_keeps_its_lines_in_order(context: str) -> None:
    # Every complete line reaches the caller's redirected streams, in the
    # order printed, even though the child exits without a result; the
    # unfinished last line, never flushed, is lost as with a real terminal.
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        outcome = Pynisher(prints_to_both_then_exits, context=context).run(200)
    assert outcome.status is Status.CRASHED and outcome.exitcode == 5, outcome.detail
    expected = "".join(f"out {i}\nerr {i}\n" for i in range(200))
    assert both.getvalue() == expected
