"""Functions for test_caller_edges.py, importable by spawned and forkserver
children."""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn


def returns_one() -> int:
    return 1


def sleeps() -> None:
    time.sleep(60)


def burns(seconds: float) -> str:
    """Uses ``seconds`` of CPU time, then returns."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass
    return "done"


def interrupt() -> NoReturn:
    raise KeyboardInterrupt


class ExitsWhenUnpickled:
    """A value whose unpickling calls ``sys.exit``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, (3,))


class InterruptsWhenUnpickled:
    """A value whose unpickling raises KeyboardInterrupt."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (interrupt, ())


class ErrorThatExitsWhenUnpickled(Exception):
    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, (4,))


class ErrorThatInterruptsWhenUnpickled(Exception):
    def __reduce__(self) -> tuple[Any, ...]:
        return (interrupt, ())


def returns_exiting() -> ExitsWhenUnpickled:
    return ExitsWhenUnpickled()


def returns_interrupting() -> InterruptsWhenUnpickled:
    return InterruptsWhenUnpickled()


def raises_exiting() -> NoReturn:
    raise ErrorThatExitsWhenUnpickled()


def raises_interrupting() -> NoReturn:
    raise ErrorThatInterruptsWhenUnpickled()


def raises_value_error() -> NoReturn:
    raise ValueError("expected")


def allocates(size: int) -> int:
    return len(bytearray(size))
