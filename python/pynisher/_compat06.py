"""The pynisher 0.6 API on the new engine.

Code written for pynisher 0.6 (auto-sklearn, autoPyTorch and their forks)
wraps a function with ``enforce_limits(...)(func)``, calls the wrapper, and
then reads what happened from the wrapper's attributes instead of catching
exceptions::

    wrapped = pynisher.enforce_limits(wall_time_in_s=10, mem_in_mb=3072)(train)
    wrapped(queue=queue, config=config)
    if wrapped.exit_status in (pynisher.TimeoutException, pynisher.MemorylimitException):
        ...

``exit_status`` is ``0`` after a successful call and otherwise an exception
*class*, compared by identity:

==============================  ==============================================
``TimeoutException``            the wall-time limit stopped the call
``CpuTimeoutException``         the CPU-time limit stopped the call
``MemorylimitException``        the memory limit stopped the call, or the
                                function raised ``MemoryError``
``SubprocessException``         the function raised ``OSError``; its errno is
                                in ``os_errno``
``SignalException``             the child was killed by SIGQUIT
``AnythingException``           the call ended without a result for any other
                                reason: the function raised, the result could
                                not be pickled, or the child crashed
==============================  ==============================================

``TimeoutException`` and ``CpuTimeoutException`` are the classes of the new
API (in 0.6, ``TimeoutException`` meant the wall-time limit; it still does
here) and ``MemorylimitException`` is another name for
``MemoryLimitException``.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional, Union

from ._api import Pynisher, _callable_name
from ._exceptions import (
    CpuTimeoutException,
    MemoryLimitException,
    PynisherException,
    TimeoutException,
)
from ._outcome import Outcome, Status

#: The 0.6 spelling of `MemoryLimitException`.
MemorylimitException = MemoryLimitException


class SubprocessException(PynisherException):
    """pynisher 0.6: the function raised ``OSError`` (its errno is in the
    wrapper's ``os_errno``)."""


class AnythingException(PynisherException):
    """pynisher 0.6: the call ended without a result and no limit explains it
    (the function raised, or the child crashed)."""


class SignalException(PynisherException):
    """pynisher 0.6: the child was stopped by SIGQUIT."""


class PynisherError(PynisherException):
    """pynisher 0.6: an internal error of pynisher itself."""


ExitStatus = Union[int, type[BaseException]]

# Exit code of a Python process that ends with an uncaught exception; 0.6 ran
# the function as a multiprocessing.Process, so that is what it reported then.
_UNCAUGHT_EXIT_CODE = 1
# A memory limit at least this large is no limit at all.
_UNLIMITED_BYTES = 1 << 62


def _no_op() -> None:
    return None


class enforce_limits:
    """``enforce_limits(...)(func)`` returns a wrapper that runs ``func`` in a
    limited child process and records the outcome on itself.

    Calling the wrapper returns the function's result, or ``None`` when the
    call failed; it does not raise for a failure of the call. Afterwards the
    wrapper has ``result``, ``exit_status`` (``0`` or an exception class),
    ``os_errno``, ``wall_clock_time`` (seconds, measured by the caller),
    ``exitcode`` (as ``multiprocessing.Process.exitcode``: negative for a
    signal), ``stdout``/``stderr`` (with ``capture_output=True``),
    ``resources_function``/``resources_pynisher`` (``getrusage`` of the
    children and of the caller) and ``outcome``, the new engine's `Outcome`.

    Arguments as in 0.6: ``mem_in_mb`` (megabytes), ``cpu_time_in_s``,
    ``wall_time_in_s``, ``num_processes`` (``RLIMIT_NPROC`` inside the child),
    ``grace_period_in_s`` (default 0), ``logger`` (debug messages),
    ``capture_output`` and ``context`` (a start method name or a
    ``multiprocessing`` context).

    Differences from 0.6: the memory limit is headroom on top of the child's
    size when it starts, not an absolute address-space size, so a large caller
    no longer makes every call fail; time limits may be fractional; the whole
    process tree is killed at a limit; nothing uses ``multiprocessing.Process``.
    """

    def __init__(
        self,
        mem_in_mb: Optional[float] = None,
        cpu_time_in_s: Optional[float] = None,
        wall_time_in_s: Optional[float] = None,
        num_processes: Optional[int] = None,
        grace_period_in_s: Optional[float] = None,
        logger: Optional[logging.Logger] = None,
        capture_output: bool = False,
        context: Any = None,
    ) -> None:
        self.mem_in_mb = mem_in_mb
        self.cpu_time_in_s = cpu_time_in_s
        self.wall_time_in_s = wall_time_in_s
        self.num_processes = num_processes
        self.grace_period_in_s = 0 if grace_period_in_s is None else grace_period_in_s
        self.logger = logger if logger is not None else logging.getLogger("pynisher")
        self.capture_output = capture_output
        self.context = context
        memory: Any = None
        if mem_in_mb is not None and mem_in_mb * (1 << 20) < _UNLIMITED_BYTES:
            memory = (mem_in_mb, "MB")
        self.options: dict[str, Any] = {
            "memory": memory,
            "cpu_time": cpu_time_in_s,
            "wall_time": wall_time_in_s,
            "grace_period": self.grace_period_in_s,
            "context": context,
            "raises": False,
            "warnings": False,
        }
        # A bad limit raises ValueError now, naming the new option.
        Pynisher(_no_op, **self.options)
        for what, value, unit in (
            ("memory", mem_in_mb, "MB"),
            ("CPU time", cpu_time_in_s, "s"),
            ("wall time", wall_time_in_s, "s"),
            ("processes", num_processes, ""),
        ):
            if value is not None:
                self.logger.debug("pynisher: limiting %s to %s%s", what, value, unit)
        self.logger.debug("pynisher: grace period %s s", self.grace_period_in_s)

    def __call__(self, func: Callable[..., Any]) -> LimitedFunction:
        return LimitedFunction(func, self)


class LimitedFunction:
    """What ``enforce_limits(...)(func)`` returns; see `enforce_limits`."""

    def __init__(self, func: Callable[..., Any], limits: enforce_limits) -> None:
        self.func = func
        self.limits = limits
        self.__name__ = self.__qualname__ = _callable_name(func)
        self.__doc__ = getattr(func, "__doc__", None)
        self._reset_attributes()

    def _reset_attributes(self) -> None:
        self.result: Any = None
        self.exit_status: Optional[ExitStatus] = None
        self.os_errno: Optional[int] = None
        self.exitcode: Optional[int] = None
        self.wall_clock_time: Optional[float] = None
        self.stdout: Optional[str] = None
        self.stderr: Optional[str] = None
        self.resources_function: Optional[resource.struct_rusage] = None
        self.resources_pynisher: Optional[resource.struct_rusage] = None
        self.outcome: Optional[Outcome[Any]] = None

    def __repr__(self) -> str:
        return f"<pynisher 0.6 wrapper of {self.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._reset_attributes()
        limits = self.limits
        logger = limits.logger
        capture = tempfile.mkdtemp(prefix="pynisher-output-") if limits.capture_output else None
        child = _ChildCall(self.func, limits.num_processes, capture)
        limited = Pynisher(child, name=self.__qualname__, **limits.options)
        logger.debug("pynisher: calling %s with %r, %r", self.__qualname__, args, kwargs)
        started = time.time()
        try:
            outcome = limited.run(*args, **kwargs)
        finally:
            self.wall_clock_time = time.time() - started
            self.resources_function = resource.getrusage(resource.RUSAGE_CHILDREN)
            self.resources_pynisher = resource.getrusage(resource.RUSAGE_SELF)
            if capture is not None:
                self.stdout = _read_text(os.path.join(capture, "stdout"))
                self.stderr = _read_text(os.path.join(capture, "stderr"))
                shutil.rmtree(capture, ignore_errors=True)
        self.outcome = outcome
        self.exit_status, self.os_errno, self.exitcode = _classify(outcome)
        if outcome.status is Status.OK:
            self.result = outcome.value
        else:
            logger.debug(
                "pynisher: %s ended with %s: %s",
                self.__qualname__,
                getattr(self.exit_status, "__name__", self.exit_status),
                outcome.detail,
            )
            if outcome.traceback:
                logger.debug("pynisher: traceback in the child:\n%s", outcome.traceback)
        return self.result


def _classify(outcome: Outcome[Any]) -> tuple[ExitStatus, Optional[int], Optional[int]]:
    """``(exit_status, os_errno, exitcode)`` as pynisher 0.6 reported them."""
    exitcode = outcome.exitcode
    if exitcode is None and outcome.signal is not None:
        exitcode = -outcome.signal
    status = outcome.status
    if status is Status.OK:
        return 0, None, exitcode
    if status is Status.WALL_TIME:
        return TimeoutException, None, exitcode
    if status is Status.CPU_TIME:
        return CpuTimeoutException, None, exitcode
    if status is Status.MEMORY:
        return MemorylimitException, None, exitcode
    if status is Status.ERROR:
        error = outcome.error
        if isinstance(error, MemoryError):
            return MemorylimitException, None, exitcode
        if isinstance(error, OSError):
            return SubprocessException, error.errno, exitcode
        return AnythingException, None, _UNCAUGHT_EXIT_CODE
    if outcome.signal == signal.SIGQUIT:
        return SignalException, None, exitcode
    return AnythingException, None, exitcode


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


class _ChildCall:
    """Runs in the limited child around the user's function: what
    ``multiprocessing.Process`` did for 0.6 code, the process limit and the
    captured output."""

    def __init__(
        self, func: Callable[..., Any], num_processes: Optional[int], capture: Optional[str]
    ) -> None:
        self.func = func
        self.num_processes = num_processes
        self.capture = capture
        # Errors and the check that stops a decorated function from limiting
        # itself again see the function's own names.
        self.__name__ = self.__qualname__ = _callable_name(func)
        self.__module__ = getattr(func, "__module__", None) or __name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _multiprocessing_child_start()
        saved = sys.stdout, sys.stderr
        files = []
        if self.capture is not None:
            files = [
                open(os.path.join(self.capture, name), "a", buffering=1)
                for name in ("stdout", "stderr")
            ]
            sys.stdout, sys.stderr = files
        try:
            if self.num_processes is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (self.num_processes, self.num_processes))
            return self.func(*args, **kwargs)
        except (MemoryError, OSError):
            raise
        except BaseException:
            if self.capture is not None:
                traceback.print_exc()
            raise
        finally:
            _multiprocessing_child_end()
            if files:
                sys.stdout, sys.stderr = saved
                for handle in files:
                    handle.close()


def _multiprocessing_child_start() -> None:
    """Makes ``multiprocessing`` objects inherited by a forked child usable,
    as ``multiprocessing.Process`` does at the start of its children: queues
    and locks reset their per-process state, and the parent's finalizers and
    children are forgotten."""
    import multiprocessing.process
    import multiprocessing.util

    try:
        multiprocessing.process._children = set()  # type: ignore[attr-defined]
        multiprocessing.util._finalizer_registry.clear()  # type: ignore[attr-defined]
        multiprocessing.util._run_after_forkers()  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - a Python without these internals
        pass


def _multiprocessing_child_end() -> None:
    """Flushes ``multiprocessing`` queues the function wrote to and joins the
    processes it started, as ``multiprocessing.Process`` does at the end of
    its children. Without this, an item put on a ``multiprocessing.Queue``
    just before the function returns is lost: the child ends with ``_exit``
    before the queue's feeder thread has written it.

    As under 0.6, the flush waits until the items are in the queue's pipe. The
    caller reads the queue only after the call, so items that do not fit into
    the pipe's buffer (64 KB on Linux) hold the child until a time limit ends
    it; 0.6 waited forever in that case."""
    import multiprocessing.util

    exit_function = getattr(multiprocessing.util, "_exit_function", None)
    if exit_function is not None:
        exit_function()


__all__ = [
    "AnythingException",
    "CpuTimeoutException",
    "LimitedFunction",
    "MemorylimitException",
    "PynisherError",
    "SignalException",
    "SubprocessException",
    "TimeoutException",
    "enforce_limits",
]
