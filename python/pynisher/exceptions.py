"""pynisher 1.0's module path for the exception classes (``import
pynisher.exceptions``, as amltk does); the same classes as ``pynisher.*``."""

from ._exceptions import (
    CpuTimeoutException,
    MemoryLimitException,
    PynisherException,
    TimeoutException,
    WallTimeoutException,
)

__all__ = [
    "CpuTimeoutException",
    "MemoryLimitException",
    "PynisherException",
    "TimeoutException",
    "WallTimeoutException",
]
