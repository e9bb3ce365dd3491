"""The function's own errors, ``wrap_errors``, and everything that cannot
cross back to the caller: results and exceptions that cannot be pickled or
unpickled, and BaseExceptions that must not end the caller; in every context.
The functions and exception classes are in errors_funcs.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import START_UP
from errors_funcs import (
    SubValueError,
    allocate,
    burn,
    call_sys_exit,
    raise_custom_base,
    raise_holds_a_lock,
    raise_import_error,
    raise_keyboard_interrupt,
    raise_memory_error,
    raise_needs_two_args,
    raise_reduce_raises,
    raise_sub_value_error,
    raise_system_exit,
    raise_value_error,
    return_an_exception,
    return_generator,
    return_half_picklable,
    return_lambda,
    return_lock,
    return_unloadable,
    sleep_long,
)

from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Pynisher,
    PynisherException,
    Status,
    WallTimeoutException,
)

# --- the function's own exception --------------------------------------------------


def test_the_exception_and_its_traceback_travel_back(context: str) -> None:
    outcome = Pynisher(raise_value_error, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is ValueError
    assert outcome.error.args == ("plain", 1)
    assert outcome.traceback is not None
    assert "raise_value_error" in outcome.traceback and "ValueError" in outcome.traceback
    # The same traceback is attached as __cause__.
    assert outcome.error.__cause__ is not None
    assert "raise_value_error" in str(outcome.error.__cause__)


def test_result_reraises_exactly_the_error_object(context: str) -> None:
    outcome = Pynisher(raise_value_error, context=context).run()
    with pytest.raises(ValueError) as info:
        outcome.result()
    assert info.value is outcome.error
    # And again: the same object each time.
    with pytest.raises(ValueError) as again:
        outcome.result()
    assert again.value is outcome.error


def test_result_reraises_exactly_the_limit_error_object(context: str) -> None:
    outcome = Pynisher(sleep_long, wall_time=0.2, context=context).run()
    with pytest.raises(WallTimeoutException) as info:
        outcome.result()
    assert info.value is outcome.error


def test_a_returned_exception_is_a_value_not_an_error(context: str) -> None:
    outcome = Pynisher(return_an_exception, context=context).run()
    assert outcome.status is Status.OK
    assert outcome.error is None
    value = Pynisher(return_an_exception, context=context)()
    assert type(value) is ValueError and value.args == ("returned, not raised",)


@pytest.mark.parametrize(
    "func", [raise_value_error, sleep_long, burn, raise_import_error], ids=lambda f: f.__name__
)
def test_raises_false_returns_none_for_every_failure(func: Any, context: str) -> None:
    limited = Pynisher(func, raises=False, wall_time=0.3, cpu_time=0.2, context=context)
    assert limited() is None


def test_raises_false_for_a_memory_limit(context: str) -> None:
    assert Pynisher(allocate, memory="50MB", raises=False, context=context)(300) is None


# --- wrap_errors ----------------------------------------------------------------------


def test_wrap_errors_true_wraps_the_functions_error(context: str) -> None:
    outcome = Pynisher(raise_value_error, wrap_errors=True, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    cause = outcome.error.__cause__
    assert type(cause) is ValueError and cause.args == ("plain", 1)
    assert "ValueError" in str(outcome.error)


def test_wrap_errors_true_never_hides_a_wall_timeout(context: str) -> None:
    outcome = Pynisher(sleep_long, wall_time=0.2, wrap_errors=True, context=context).run()
    assert outcome.status is Status.WALL_TIME
    assert type(outcome.error) is WallTimeoutException


def test_wrap_errors_true_never_hides_a_cpu_timeout(context: str) -> None:
    outcome = Pynisher(burn, cpu_time=0.2, wrap_errors=True, context=context).run()
    assert outcome.status is Status.CPU_TIME
    assert type(outcome.error) is CpuTimeoutException


def test_wrap_errors_true_never_hides_a_memory_limit(context: str) -> None:
    outcome = Pynisher(allocate, memory="100MB", wrap_errors=True, context=context).run(400)
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException


def test_wrap_errors_true_keeps_a_memory_error_under_a_memory_limit_a_memory_limit(
    context: str,
) -> None:
    outcome = Pynisher(raise_memory_error, memory="1GB", wrap_errors=True, context=context).run()
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException
    with pytest.raises(MemoryLimitException):
        Pynisher(raise_memory_error, memory="1GB", wrap_errors=True, context=context)()


def test_wrap_errors_true_wraps_a_memory_error_without_a_memory_limit(context: str) -> None:
    # No memory limit: a MemoryError is the function's own error.
    outcome = Pynisher(raise_memory_error, wrap_errors=True, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert type(outcome.error.__cause__) is MemoryError


@pytest.mark.parametrize("spec", [ValueError, "ValueError"], ids=["type", "name"])
def test_wrap_errors_list_matches_the_exact_type(spec: Any, context: str) -> None:
    outcome = Pynisher(raise_value_error, wrap_errors=[spec], context=context).run()
    assert type(outcome.error) is PynisherException
    assert type(outcome.error.__cause__) is ValueError
    # A subclass is not matched: it comes back as itself.
    outcome = Pynisher(raise_sub_value_error, wrap_errors=[spec], context=context).run()
    assert type(outcome.error) is SubValueError
    assert outcome.error.args == ("sub",)


def test_wrap_errors_list_leaves_other_types_alone(context: str) -> None:
    outcome = Pynisher(
        raise_import_error, wrap_errors=[ValueError, "KeyError"], context=context
    ).run()
    assert type(outcome.error) is ImportError


def test_wrap_errors_list_never_hides_a_limit(context: str) -> None:
    outcome = Pynisher(
        sleep_long, wall_time=0.2, wrap_errors=["WallTimeoutException"], context=context
    ).run()
    assert type(outcome.error) is WallTimeoutException


@pytest.mark.parametrize("spec", [ImportError, "ImportError"], ids=["type", "name"])
def test_wrap_errors_dict_memory_turns_an_error_into_a_memory_limit(
    spec: Any, context: str
) -> None:
    limited = Pynisher(
        raise_import_error, memory="1GB", wrap_errors={"memory": [spec]}, context=context
    )
    outcome = limited.run()
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException
    assert isinstance(outcome.error, MemoryError)
    assert type(outcome.error.__cause__) is ImportError
    with pytest.raises(MemoryLimitException):
        limited()


def test_wrap_errors_dict_memory_needs_a_memory_limit(context: str) -> None:
    outcome = Pynisher(
        raise_import_error, wrap_errors={"memory": [ImportError]}, context=context
    ).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is ImportError


@pytest.mark.parametrize(
    ("key", "limit", "status", "exception"),
    [
        ("cpu_time", {"cpu_time": 5}, Status.CPU_TIME, CpuTimeoutException),
        ("wall_time", {"wall_time": 5}, Status.WALL_TIME, WallTimeoutException),
        ("pynisher", {}, Status.ERROR, PynisherException),
    ],
)
def test_wrap_errors_dict_other_keys(
    key: str, limit: dict[str, Any], status: Status, exception: type, context: str
) -> None:
    outcome = Pynisher(
        raise_import_error, wrap_errors={key: [ImportError]}, **limit, context=context
    ).run()
    assert outcome.status is status
    assert type(outcome.error) is exception
    assert outcome.error is not None and type(outcome.error.__cause__) is ImportError


def test_wrap_errors_dict_does_not_match_a_subclass(context: str) -> None:
    limited = Pynisher(
        raise_sub_value_error, memory="1GB", wrap_errors={"memory": [ValueError]}, context=context
    )
    outcome = limited.run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is SubValueError


# --- results that cannot travel ---------------------------------------------------------


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_lambda_result_travels_by_cloudpickle(context: str) -> None:
    # API.md: under spawn and forkserver results travel by cloudpickle.
    returned = Pynisher(return_lambda, context=context)()
    assert callable(returned) and returned() == 1


@pytest.mark.parametrize(
    ("func", "what"),
    [
        (return_lambda, "function"),
        (return_generator, "generator"),
        (return_lock, "lock"),
        (return_half_picklable, "list"),
    ],
)
def test_a_result_that_cannot_be_pickled_is_a_clear_error(
    func: Any, what: str, context: str
) -> None:
    if func is return_lambda and context != "fork":
        pytest.skip("results travel by cloudpickle here: see test_a_lambda_result_travels")
    start = time.monotonic()
    outcome = Pynisher(func, wall_time=10, context=context).run()
    assert time.monotonic() - start < 5 + START_UP[context], (
        "the call hung on an unpicklable result"
    )
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    message = str(outcome.error)
    assert "cannot be pickled" in message and what in message
    with pytest.raises(PynisherException, match="cannot be pickled"):
        Pynisher(func, context=context)()


def test_a_result_that_cannot_be_unpickled_is_a_clear_error(context: str) -> None:
    outcome = Pynisher(return_unloadable, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert "unpickled" in str(outcome.error)


# --- exceptions that cannot travel ---------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "shown"),
    [
        (raise_needs_two_args, "NeedsTwoArgs(42)"),
        (raise_holds_a_lock, "HoldsALock('holds a lock')"),
        (raise_reduce_raises, "ReduceRaises('reduce raises')"),
    ],
)
def test_an_exception_that_cannot_travel_becomes_pynisher_exception(
    func: Any, shown: str, context: str
) -> None:
    outcome = Pynisher(func, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    # It carries the repr of the original ...
    assert shown in str(outcome.error)
    # ... and the child's traceback.
    assert outcome.traceback is not None and func.__name__ in outcome.traceback
    assert outcome.error.__cause__ is not None
    assert func.__name__ in str(outcome.error.__cause__)


@pytest.mark.parametrize(
    ("func", "shown"),
    [
        (raise_system_exit, "SystemExit(4)"),
        (call_sys_exit, "SystemExit('bye')"),
        (raise_keyboard_interrupt, "KeyboardInterrupt"),
        (raise_custom_base, "CustomBase('custom')"),
    ],
)
def test_base_exceptions_in_the_child_do_not_end_the_caller(
    func: Any, shown: str, context: str
) -> None:
    # If the BaseException reached the caller, pytest would stop or fail here.
    outcome = Pynisher(func, context=context).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert shown in str(outcome.error)
    assert outcome.traceback is not None and func.__name__ in outcome.traceback
    with pytest.raises(PynisherException):
        Pynisher(func, context=context)()


def test_a_traceback_is_formatted_even_when_importing_traceback_runs_out_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fresh interpreter imports `traceback` only when a call fails; a call
    # at its memory limit may not have the memory for that import. The
    # function's own exception must still be reported with its frames.
    from pynisher import _child

    def fail_here() -> None:
        raise ValueError("the function's own error")

    try:
        fail_here()
    except ValueError as exc:
        caught = exc
    real_import = __import__

    def no_memory_for_traceback(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "traceback":
            raise MemoryError
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_memory_for_traceback)
    text = _child.format_traceback(caught)
    assert text.startswith("Traceback (most recent call last):\n")
    assert f"line {fail_here.__code__.co_firstlineno + 1}, in fail_here" in text
    assert text.endswith("ValueError: the function's own error\n")
