"""Run a function call in a child process under limits on wall time, CPU time
and memory, and learn exactly why it stopped and what it used."""

# Every public name is loaded on first use. A spawned child and the forkserver
# import only the submodules a call needs (pynisher._spawn, pynisher._child);
# importing a submodule runs this file first, and the whole API (typing,
# dataclasses, enum, asyncio, ...) would cost each spawned call tens of ms.
# (`typing.TYPE_CHECKING` would import typing; type checkers treat any
# TYPE_CHECKING as true.)
TYPE_CHECKING = False

_LAZY = {
    "EMPTY": "_api",
    "Pynisher": "_api",
    "contexts": "_api",
    "limit": "_api",
    "restricted": "_api",
    "supports": "_api",
    "supports_cputime": "_api",
    "supports_limit_decorator": "_api",
    "supports_memory": "_api",
    "supports_walltime": "_api",
    "__version__": "_core",
    "CpuTimeoutException": "_exceptions",
    "MemoryLimitException": "_exceptions",
    "PynisherException": "_exceptions",
    "TimeoutException": "_exceptions",
    "WallTimeoutException": "_exceptions",
    "Outcome": "_outcome",
    "Status": "_outcome",
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
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
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
    from ._compat06 import (
        AnythingException,
        MemorylimitException,
        PynisherError,
        SignalException,
        SubprocessException,
        enforce_limits,
    )
    from ._core import __version__
    from ._exceptions import (
        CpuTimeoutException,
        MemoryLimitException,
        PynisherException,
        TimeoutException,
        WallTimeoutException,
    )
    from ._executor import LimitedFuture, PynisherExecutor, arun, arun_outcome
    from ._outcome import Outcome, Status

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
