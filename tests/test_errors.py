"""The function's own errors, ``wrap_errors``, and everything that cannot
cross back to the caller: results and exceptions that cannot be pickled or
unpickled, and BaseExceptions that must not end the caller."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Pynisher,
    PynisherException,
    Status,
    WallTimeoutException,
)

MB = 1 << 20


class SubValueError(ValueError):
    pass


def raise_value_error() -> None:
    raise ValueError("plain", 1)


def raise_sub_value_error() -> None:
    raise SubValueError("sub")


def raise_import_error() -> None:
    raise ImportError("no module named nowhere")


def raise_memory_error() -> None:
    raise MemoryError("out of memory in the function")


def allocate(mb: int) -> int:
    return len(bytearray(mb * MB))


def sleep_long() -> None:
    time.sleep(60)


def burn() -> None:
    while True:
        pass


# --- the function's own exception --------------------------------------------------


def test_the_exception_and_its_traceback_travel_back() -> None:
    outcome = Pynisher(raise_value_error).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is ValueError
    assert outcome.error.args == ("plain", 1)
    assert outcome.traceback is not None
    assert "raise_value_error" in outcome.traceback and "ValueError" in outcome.traceback
    # The same traceback is attached as __cause__.
    assert outcome.error.__cause__ is not None
    assert "raise_value_error" in str(outcome.error.__cause__)


def test_result_reraises_exactly_the_error_object() -> None:
    outcome = Pynisher(raise_value_error).run()
    with pytest.raises(ValueError) as info:
        outcome.result()
    assert info.value is outcome.error
    # And again: the same object each time.
    with pytest.raises(ValueError) as again:
        outcome.result()
    assert again.value is outcome.error


def test_result_reraises_exactly_the_limit_error_object() -> None:
    outcome = Pynisher(sleep_long, wall_time=0.2).run()
    with pytest.raises(WallTimeoutException) as info:
        outcome.result()
    assert info.value is outcome.error


def return_an_exception() -> ValueError:
    return ValueError("returned, not raised")


def test_a_returned_exception_is_a_value_not_an_error() -> None:
    outcome = Pynisher(return_an_exception).run()
    assert outcome.status is Status.OK
    assert outcome.error is None
    value = Pynisher(return_an_exception)()
    assert type(value) is ValueError and value.args == ("returned, not raised",)


@pytest.mark.parametrize(
    "func", [raise_value_error, sleep_long, burn, raise_import_error], ids=lambda f: f.__name__
)
def test_raises_false_returns_none_for_every_failure(func: Any) -> None:
    limited = Pynisher(func, raises=False, wall_time=0.3, cpu_time=0.2)
    assert limited() is None


def test_raises_false_for_a_memory_limit() -> None:
    assert Pynisher(allocate, memory="50MB", raises=False)(300) is None


# --- wrap_errors ----------------------------------------------------------------------


def test_wrap_errors_true_wraps_the_functions_error() -> None:
    outcome = Pynisher(raise_value_error, wrap_errors=True).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    cause = outcome.error.__cause__
    assert type(cause) is ValueError and cause.args == ("plain", 1)
    assert "ValueError" in str(outcome.error)


def test_wrap_errors_true_never_hides_a_wall_timeout() -> None:
    outcome = Pynisher(sleep_long, wall_time=0.2, wrap_errors=True).run()
    assert outcome.status is Status.WALL_TIME
    assert type(outcome.error) is WallTimeoutException


def test_wrap_errors_true_never_hides_a_cpu_timeout() -> None:
    outcome = Pynisher(burn, cpu_time=0.2, wrap_errors=True).run()
    assert outcome.status is Status.CPU_TIME
    assert type(outcome.error) is CpuTimeoutException


def test_wrap_errors_true_never_hides_a_memory_limit() -> None:
    outcome = Pynisher(allocate, memory="100MB", wrap_errors=True).run(400)
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException


def test_wrap_errors_true_keeps_a_memory_error_under_a_memory_limit_a_memory_limit() -> None:
    outcome = Pynisher(raise_memory_error, memory="1GB", wrap_errors=True).run()
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException
    with pytest.raises(MemoryLimitException):
        Pynisher(raise_memory_error, memory="1GB", wrap_errors=True)()


def test_wrap_errors_true_wraps_a_memory_error_without_a_memory_limit() -> None:
    # No memory limit: a MemoryError is the function's own error.
    outcome = Pynisher(raise_memory_error, wrap_errors=True).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert type(outcome.error.__cause__) is MemoryError


@pytest.mark.parametrize("spec", [ValueError, "ValueError"], ids=["type", "name"])
def test_wrap_errors_list_matches_the_exact_type(spec: Any) -> None:
    outcome = Pynisher(raise_value_error, wrap_errors=[spec]).run()
    assert type(outcome.error) is PynisherException
    assert type(outcome.error.__cause__) is ValueError
    # A subclass is not matched: it comes back as itself.
    outcome = Pynisher(raise_sub_value_error, wrap_errors=[spec]).run()
    assert type(outcome.error) is SubValueError
    assert outcome.error.args == ("sub",)


def test_wrap_errors_list_leaves_other_types_alone() -> None:
    outcome = Pynisher(raise_import_error, wrap_errors=[ValueError, "KeyError"]).run()
    assert type(outcome.error) is ImportError


def test_wrap_errors_list_never_hides_a_limit() -> None:
    outcome = Pynisher(sleep_long, wall_time=0.2, wrap_errors=["WallTimeoutException"]).run()
    assert type(outcome.error) is WallTimeoutException


@pytest.mark.parametrize("spec", [ImportError, "ImportError"], ids=["type", "name"])
def test_wrap_errors_dict_memory_turns_an_error_into_a_memory_limit(spec: Any) -> None:
    limited = Pynisher(raise_import_error, memory="1GB", wrap_errors={"memory": [spec]})
    outcome = limited.run()
    assert outcome.status is Status.MEMORY
    assert type(outcome.error) is MemoryLimitException
    assert isinstance(outcome.error, MemoryError)
    assert type(outcome.error.__cause__) is ImportError
    with pytest.raises(MemoryLimitException):
        limited()


def test_wrap_errors_dict_memory_needs_a_memory_limit() -> None:
    outcome = Pynisher(raise_import_error, wrap_errors={"memory": [ImportError]}).run()
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
    key: str, limit: dict[str, Any], status: Status, exception: type
) -> None:
    outcome = Pynisher(raise_import_error, wrap_errors={key: [ImportError]}, **limit).run()
    assert outcome.status is status
    assert type(outcome.error) is exception
    assert outcome.error is not None and type(outcome.error.__cause__) is ImportError


def test_wrap_errors_dict_does_not_match_a_subclass() -> None:
    limited = Pynisher(raise_sub_value_error, memory="1GB", wrap_errors={"memory": [ValueError]})
    outcome = limited.run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is SubValueError


# --- results that cannot travel ---------------------------------------------------------


def return_lambda() -> Any:
    return lambda: 1


def return_generator() -> Any:
    return (i for i in range(3))


def return_lock() -> Any:
    return threading.Lock()


class FailsHalfway:
    def __reduce__(self) -> Any:
        raise RuntimeError("pickling failed halfway")


def return_half_picklable() -> Any:
    return [b"x" * MB, {"ok": 1}, FailsHalfway()]


@pytest.mark.parametrize(
    ("func", "what"),
    [
        (return_lambda, "function"),
        (return_generator, "generator"),
        (return_lock, "lock"),
        (return_half_picklable, "list"),
    ],
)
def test_a_result_that_cannot_be_pickled_is_a_clear_error(func: Any, what: str) -> None:
    start = time.monotonic()
    outcome = Pynisher(func, wall_time=10).run()
    assert time.monotonic() - start < 5, "the call hung on an unpicklable result"
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    message = str(outcome.error)
    assert "cannot be pickled" in message and what in message
    with pytest.raises(PynisherException, match="cannot be pickled"):
        Pynisher(func)()


class Unpicklable:
    """Pickles in the child, fails to unpickle in the caller."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("refusing to be rebuilt")


def return_unloadable() -> Any:
    return Unpicklable()


def test_a_result_that_cannot_be_unpickled_is_a_clear_error() -> None:
    outcome = Pynisher(return_unloadable).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert "unpickled" in str(outcome.error)


# --- exceptions that cannot travel ---------------------------------------------------------


class NeedsTwoArgs(Exception):
    """Pickles fine, but unpickling calls __init__ with one argument only."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(code)
        self.why = why


class HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


class ReduceRaises(Exception):
    def __reduce__(self) -> Any:
        raise RuntimeError("no reduce")


def raise_needs_two_args() -> None:
    raise NeedsTwoArgs(42, "extra")


def raise_holds_a_lock() -> None:
    raise HoldsALock()


def raise_reduce_raises() -> None:
    raise ReduceRaises("reduce raises")


@pytest.mark.parametrize(
    ("func", "shown"),
    [
        (raise_needs_two_args, "NeedsTwoArgs(42)"),
        (raise_holds_a_lock, "HoldsALock('holds a lock')"),
        (raise_reduce_raises, "ReduceRaises('reduce raises')"),
    ],
)
def test_an_exception_that_cannot_travel_becomes_pynisher_exception(func: Any, shown: str) -> None:
    outcome = Pynisher(func).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    # It carries the repr of the original ...
    assert shown in str(outcome.error)
    # ... and the child's traceback.
    assert outcome.traceback is not None and func.__name__ in outcome.traceback
    assert outcome.error.__cause__ is not None
    assert func.__name__ in str(outcome.error.__cause__)


class CustomBase(BaseException):
    pass


def raise_system_exit() -> None:
    raise SystemExit(4)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def raise_custom_base() -> None:
    raise CustomBase("custom")


def call_sys_exit() -> None:
    import sys

    sys.exit("bye")


@pytest.mark.parametrize(
    ("func", "shown"),
    [
        (raise_system_exit, "SystemExit(4)"),
        (call_sys_exit, "SystemExit('bye')"),
        (raise_keyboard_interrupt, "KeyboardInterrupt"),
        (raise_custom_base, "CustomBase('custom')"),
    ],
)
def test_base_exceptions_in_the_child_do_not_end_the_caller(func: Any, shown: str) -> None:
    # If the BaseException reached the caller, pytest would stop or fail here.
    outcome = Pynisher(func).run()
    assert outcome.status is Status.ERROR
    assert type(outcome.error) is PynisherException
    assert shown in str(outcome.error)
    assert outcome.traceback is not None and func.__name__ in outcome.traceback
    with pytest.raises(PynisherException):
        Pynisher(func)()
