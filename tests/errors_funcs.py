"""Functions and exception classes that test_errors.py runs and raises in
limited children, in every context.

They live outside the test module so that a spawn or forkserver child imports
only this module (no pytest), which keeps its start-up short. The exception
classes must be importable by name in the child and in the caller.
"""

from __future__ import annotations

import threading
import time
from typing import Any

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


def return_an_exception() -> ValueError:
    return ValueError("returned, not raised")


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


class Unpicklable:
    """Pickles in the child, fails to unpickle in the caller."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise RuntimeError("refusing to be rebuilt")


def return_unloadable() -> Any:
    return Unpicklable()


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
