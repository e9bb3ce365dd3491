"""The exception hierarchy, compatible with pynisher 1.0."""

from __future__ import annotations


class PynisherException(Exception):
    """A limited call failed for a reason other than the function's own error."""


class TimeoutException(PynisherException):
    """A time limit (wall or CPU) stopped the call."""


class WallTimeoutException(TimeoutException):
    """The wall-time limit stopped the call."""


class CpuTimeoutException(TimeoutException):
    """The CPU-time limit stopped the call."""


class MemoryLimitException(PynisherException, MemoryError):
    """The memory limit stopped the call.

    It is also a ``MemoryError``: a ``MemoryError`` raised inside the function
    while a memory limit is set becomes this exception.
    """

    # MemoryError.__new__ refuses subclasses built through it by code that
    # calls ``cls.__new__`` directly (tblib, and so Dask); Exception's works.
    __new__ = Exception.__new__  # type: ignore[assignment]


class ForkServerError(PynisherException):
    """The forkserver is gone or did not answer; the call did not start."""


class RemoteTraceback(Exception):
    """The child's formatted traceback, attached as ``__cause__``."""

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return "\n\nTraceback in the limited child process:\n" + self.traceback
