"""Run a function call in a child process under limits on wall time, CPU time
and memory, and learn exactly why it stopped and what it used."""

from ._api import (
    EMPTY,
    Pynisher,
    contexts,
    limit,
    restricted,
    supports,
    supports_cputime,
    supports_limit_decorator,
    supports_memory,
    supports_walltime,
)
from ._core import __version__
from ._exceptions import (
    CpuTimeoutException,
    MemoryLimitException,
    PynisherException,
    TimeoutException,
    WallTimeoutException,
)
from ._outcome import Outcome, Status

__all__ = [
    "EMPTY",
    "CpuTimeoutException",
    "MemoryLimitException",
    "Outcome",
    "Pynisher",
    "PynisherException",
    "Status",
    "TimeoutException",
    "WallTimeoutException",
    "__version__",
    "contexts",
    "limit",
    "restricted",
    "supports",
    "supports_cputime",
    "supports_limit_decorator",
    "supports_memory",
    "supports_walltime",
]
