"""Run a function call in a child process under limits on wall time, CPU time
and memory, and learn exactly why it stopped and what it used."""

from typing import TYPE_CHECKING

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

# Loaded on first use: they pull in asyncio and concurrent.futures, which a
# spawned child, the forkserver and most callers never need.
_LAZY = {
    "LimitedFuture": "_executor",
    "PynisherExecutor": "_executor",
    "arun": "_executor",
    "arun_outcome": "_executor",
    "AnythingException": "_compat06",
    "MemorylimitException": "_compat06",
    "PynisherError": "_compat06",
    "SignalException": "_compat06",
    "SubprocessException": "_compat06",
    "enforce_limits": "_compat06",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pynisher' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from ._compat06 import (
        AnythingException,
        MemorylimitException,
        PynisherError,
        SignalException,
        SubprocessException,
        enforce_limits,
    )
    from ._executor import LimitedFuture, PynisherExecutor, arun, arun_outcome

__all__ = [
    "EMPTY",
    "AnythingException",
    "CpuTimeoutException",
    "LimitedFuture",
    "MemoryLimitException",
    "MemorylimitException",
    "Outcome",
    "Pynisher",
    "PynisherError",
    "PynisherException",
    "PynisherExecutor",
    "SignalException",
    "Status",
    "SubprocessException",
    "TimeoutException",
    "WallTimeoutException",
    "__version__",
    "arun",
    "arun_outcome",
    "contexts",
    "enforce_limits",
    "limit",
    "restricted",
    "supports",
    "supports_cputime",
    "supports_limit_decorator",
    "supports_memory",
    "supports_walltime",
]
